//! The dashboard in a real browser: headless Chromium (driven by Selenium through Debian's
//! chromedriver) opens `/` of a running pipeline and sees a value change live.

mod common;

use std::process::Command;

use common::{PIPELINE, create_token, start_engine, start_engine_with};

/// Opens the page, waits for the table, and prints the `n` of zone r01-z01 as it first appears
/// and once it has changed; also the browser's console errors.
const BROWSER: &str = r#"
import sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]:
    options.add_argument(argument)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(sys.argv[1])
    def count():
        # Read in the page, in one go: the table is re-rendered as changes arrive.
        return driver.execute_script(
            "const cell = document.querySelector('tr[data-key=\\'[\"r01-z01\"]\\'] td[data-column=\"n\"]');"
            "return cell ? cell.textContent : null;")
    deadline = time.time() + 30
    first = None
    while time.time() < deadline and not first:
        first = count()
        time.sleep(0.1)
    print("first", first)
    later = first
    while time.time() < deadline and later == first:
        later = count()
        time.sleep(0.1)
    print("later", later)
    print("status", driver.find_element(By.ID, "status").text)
    print("view", driver.find_element(By.ID, "view").get_attribute("value"))
    print("address", driver.current_url)
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    print("errors", errors)
finally:
    driver.quit()
"#;

/// What the browser script printed, by name.
struct Shown(String);

impl Shown {
    fn value(&self, name: &str) -> String {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {}", self.0))
            .to_string()
    }
}

fn open_in_chromium(url: &str) -> Shown {
    let output = Command::new("python3")
        .args(["-c", BROWSER, url])
        .output()
        .expect("python3 runs");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    Shown(shown)
}

#[test]
fn the_dashboard_shows_a_value_changing_in_chromium() {
    let engine = start_engine(PIPELINE);
    let shown = open_in_chromium(&format!("http://{}/", engine.address));
    drop(engine);
    let value = |name: &str| shown.value(name);
    let first: u64 = value("first").parse().expect("a count appeared");
    let later: u64 = value("later").parse().expect("a count appeared");
    assert!(later > first, "the count grew live: {first} → {later}");
    assert!(value("status").contains("rows"), "{}", shown.0);
    assert_eq!(value("view"), "zone_stats");
    assert_eq!(value("errors"), "[]", "no errors in the browser console");
}

#[test]
fn the_dashboard_of_an_engine_with_tokens_takes_one_from_its_address() {
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("tokens.toml");
    let token = create_token(&file, "wall-screen", "viewer");
    let engine = start_engine_with(PIPELINE, &["--auth", file.to_str().unwrap()]);
    let shown = open_in_chromium(&format!("http://{}/#token={token}", engine.address));
    drop(engine);
    let first: u64 = shown.value("first").parse().expect("a count appeared");
    let later: u64 = shown.value("later").parse().expect("a count appeared");
    assert!(later > first, "the count grew live: {first} → {later}");
    assert!(
        !shown.value("address").contains(&token),
        "the token stays out of the address bar: {}",
        shown.value("address")
    );
    assert_eq!(
        shown.value("errors"),
        "[]",
        "no errors in the browser console"
    );
}
