//! End-to-end: rows on which a view's expression fails go to `<view>_errors`, are counted in
//! `/metrics` and in the final report, and are logged as a summary every few seconds, never a
//! line a row.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::start_engine_with;

/// The simulated facility, and a view that divides by zero on every reading whose temperature
/// rounds to an even number of degrees.
const PIPELINE: &str = "CREATE SOURCE readings (
      sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
    WITH (connector = 'simulator', rooms = '2', zones_per_room = '2', sensors_per_zone = '3',
          interval = '10 seconds', speed = '60x', seed = '5');
    CREATE VIEW ratios AS
      SELECT sensor_id, 100 / (CAST(round(temp_c) AS BIGINT) % 2) AS ratio FROM readings;
    CREATE SINK ratios_out FROM ratios WITH (connector = 'file', path = 'out/ratios.jsonl');
    CREATE SINK ratio_errors FROM ratios_errors WITH (connector = 'file', path = 'out/ratio_errors.jsonl');";

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn failed_rows_land_in_the_views_errors_and_are_counted_and_logged_in_summary() {
    let mut engine = start_engine_with(PIPELINE, &["--for", "8s"]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let counted = loop {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{}/metrics", engine.address))
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&output.stdout).to_string();
        if let Some(count) = metric(
            &metrics,
            "vibelux_view_expression_errors_total{view=\"ratios\"} ",
        )
        .filter(|&count| count > 0)
        {
            break count;
        }
        assert!(Instant::now() < deadline, "no errors counted in\n{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(counted > 0);
    let log = engine.finish();
    let seconds = started.elapsed().as_secs();
    let read =
        |name: &str| std::fs::read_to_string(engine.dir.path().join(name)).unwrap_or_default();
    let errors = read("out/ratio_errors.jsonl");
    let rows = read("out/ratios.jsonl");
    let failed = errors.lines().count();
    assert!(failed > 50 && rows.lines().count() > 50, "{log}");
    let first = errors.lines().next().unwrap();
    assert!(
        first.contains("Divide by zero") && first.contains("\\\"sensor_id\\\""),
        "{first}"
    );
    assert!(
        log.contains(&format!(
            "ratios: {failed} rows failed to evaluate (kept in ratios_errors)"
        )),
        "{log}"
    );
    let summaries = log
        .matches("failed to evaluate (kept in ratios_errors); latest")
        .count();
    assert!(
        summaries >= 1 && summaries as u64 <= seconds / 5 + 1,
        "{summaries} summaries in {seconds} s for {failed} failed rows:\n{log}"
    );
}
