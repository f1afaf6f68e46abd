//! The Modbus source against a Modbus TCP server no one here wrote (pymodbus): every data type
//! and byte order, scale and units, exception replies, and a device that is down at start,
//! killed mid-run and restarted.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::modbus::{Server, TAGS, start_silent_device, write_one_tag_map};
use common::output::json_lines;
use common::start_engine;
use common::tansu::free_port;
use serde_json::Value;

fn pipeline(port: u16, tags: &Path) -> String {
    format!(
        "CREATE SOURCE plc (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, raw TEXT, unit TEXT,
           quality TEXT, error TEXT, WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', unit_id = '1',
               tags = '{}', device = 'room1-hvac', timeout = '300ms');
         CREATE SINK rows FROM plc WITH (connector = 'file', path = 'rows.jsonl');",
        tags.display()
    )
}

/// The latest row of each tag once every tag has one satisfying `done`, else panics.
fn wait_for_tags(
    rows_file: &Path,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut latest = BTreeMap::new();
        for row in json_lines(rows_file) {
            latest.insert(row["tag"].as_str().unwrap().to_string(), row);
        }
        if done(&latest) {
            return latest;
        }
        assert!(Instant::now() < deadline, "{latest:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_type_and_byte_order_reads_right_and_exceptions_are_bad_rows() {
    reads_every_type("");
}

#[test]
fn device_quirks_read_the_same_values() {
    reads_every_type(", request_per_tag = 'true', close_after_poll = 'true', pause = '2ms'");
    reads_every_type(", gap_fill = '10'");
}

/// Polls the pymodbus map with the given extra options and checks every value.
fn reads_every_type(options: &str) {
    let port = free_port();
    let _server = Server::start(port);
    let maps = tempfile::tempdir().unwrap();
    let tags = maps.path().join("room1.toml");
    std::fs::write(&tags, TAGS).unwrap();
    let engine = start_engine(
        &pipeline(port, &tags).replace("timeout = '300ms'", &format!("timeout = '300ms'{options}")),
    );
    let rows_file = engine.dir.path().join("rows.jsonl");
    let latest = wait_for_tags(&rows_file, |latest| latest.len() == 16);
    let value = |tag: &str| latest[tag]["value"].as_f64();
    assert_eq!(value("i16"), Some(-1234.0));
    assert_eq!(value("u16"), Some(54321.0));
    assert_eq!(value("i32"), Some(-123456.0));
    assert_eq!(value("u32_dcba"), Some(3_000_000_000.0));
    assert_eq!(value("f32_badc"), Some(23.5));
    assert_eq!(value("f32_cdab"), Some(-7.25));
    assert_eq!(value("i64"), Some(-9_000_000_000.0));
    assert_eq!(latest["u64_cdab"]["raw"], "12345678901234");
    assert_eq!(value("f64_dcba"), Some(1013.25));
    assert_eq!(latest["label"]["raw"], "GROWROOM");
    assert_eq!(latest["label"]["value"], Value::Null);
    assert_eq!(value("supply_temp"), Some(21.5));
    assert_eq!(latest["supply_temp"]["raw"], "215");
    assert_eq!(latest["supply_temp"]["unit"], "°C");
    assert_eq!(value("co2_ppm"), Some(777.0));
    assert_eq!(value("fan_on"), Some(1.0));
    assert_eq!(value("valve_open"), Some(0.0));
    assert_eq!(value("door_closed"), Some(1.0));
    assert_eq!(latest["i16"]["device"], "room1-hvac");
    assert_eq!(latest["i16"]["quality"], "good");
    let missing = &latest["missing"];
    assert_eq!(missing["quality"], "bad");
    assert_eq!(missing["value"], Value::Null);
    let error = missing["error"].as_str().unwrap();
    assert!(
        error.contains("holding 500..501") && error.contains("exception"),
        "{error}"
    );
    // Polled every 100 ms: the good tags keep coming.
    let before = json_lines(&rows_file).len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(json_lines(&rows_file).len() >= before + 30);
}

#[test]
fn a_device_down_at_start_then_killed_and_restarted_is_reported_bad_stale_then_good_again() {
    let port = free_port();
    let maps = tempfile::tempdir().unwrap();
    let tags = write_one_tag_map(maps.path(), "supply_temp");
    let mut engine = start_engine(
        &(pipeline(port, &tags).replace(
            "timeout = '300ms'",
            "timeout = '300ms', poll_interval = '100ms'",
        ) + "CREATE SINK health FROM plc_health WITH (connector = 'file', path = 'health.jsonl');"),
    );
    let health_file = engine.dir.path().join("health.jsonl");
    let rows_file = engine.dir.path().join("rows.jsonl");
    let quality = |rows_file: &Path| -> Vec<String> {
        json_lines(rows_file)
            .iter()
            .map(|row| row["quality"].as_str().unwrap().to_string())
            .collect()
    };
    // Nothing listens yet: bad rows that say why.
    let latest = wait_for_tags(&rows_file, |latest| latest.contains_key("supply_temp"));
    assert_eq!(latest["supply_temp"]["quality"], "bad");
    assert!(
        latest["supply_temp"]["error"]
            .as_str()
            .unwrap()
            .contains("connecting to 127.0.0.1"),
        "{latest:?}"
    );
    // The server comes up: good rows follow.
    let server = Server::start(port);
    wait_for_tags(&rows_file, |latest| {
        latest["supply_temp"]["quality"] == "good"
    });
    // Killed mid-run: stale, with the last good value and the reason; restarted: good again.
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !quality(&rows_file).iter().any(|q| q == "stale") {
        assert!(Instant::now() < deadline, "no stale row after the kill");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = json_lines(&rows_file)
        .into_iter()
        .find(|row| row["quality"] == "stale")
        .unwrap();
    assert_eq!(stale["value"].as_f64(), Some(21.5), "{stale}");
    assert!(
        stale["error"].as_str().unwrap().contains("127.0.0.1"),
        "{stale}"
    );
    let _server = Server::start(port);
    let restarted = json_lines(&rows_file).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = json_lines(&rows_file);
        if rows[restarted..].iter().any(|row| row["quality"] == "good") {
            assert_eq!(rows.last().unwrap()["value"].as_f64(), Some(21.5));
            break;
        }
        assert!(Instant::now() < deadline, "no good row after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = engine.interrupt();
    assert!(!log.contains("panicked"), "{log}");
    // The device's health, a row per poll: down, up, down (failures counting), up again.
    let health = json_lines(&health_file);
    let states: Vec<bool> = health
        .iter()
        .map(|row| row["connected"].as_bool().unwrap())
        .collect();
    let mut changes = states.clone();
    changes.dedup();
    assert_eq!(changes, [false, true, false, true], "{health:?}");
    let first = &health[0];
    assert_eq!(first["device"], "room1-hvac");
    assert_eq!(first["last_success"], Value::Null);
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("connecting to 127.0.0.1")
    );
    let down_again = states.iter().rposition(|up| !up).unwrap();
    let row = &health[down_again];
    assert!(row["failures"].as_i64().unwrap() >= 1, "{row}");
    assert!(row["last_success"].is_string(), "{row}");
    assert!(row["errors_total"].as_i64().unwrap() > row["failures"].as_i64().unwrap());
    assert_eq!(health.last().unwrap()["failures"], 0);
}

#[test]
fn the_simulated_plc_answers_a_third_party_client_and_follows_its_writes() {
    let port = free_port();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut plc = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(repo)
        .args(["sim", "plc", "--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(plc.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(
        banner.contains("simulated PLC (unit 1, 10 tags"),
        "{banner}"
    );
    // pymodbus reads the setpoint (22.0 °C in tenths), writes 18.0 °C and opens the CO2 valve;
    // the supply temperature then falls toward the new setpoint.
    let script = format!(
        r#"
import time
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient("127.0.0.1", port={port}); assert c.connect()
before = c.read_holding_registers(0, count=2, device_id=1).registers
assert before[1] == 220, before
assert not c.write_register(1, 180, device_id=1).isError()
assert not c.write_coil(1, True, device_id=1).isError()
assert c.write_register(500, 1, device_id=1).isError(), "beyond the map"
time.sleep(3)
after = c.read_holding_registers(0, count=2, device_id=1).registers
assert after[1] == 180 and after[0] < before[0], (before, after)
print("ok", before[0], after[0])
"#
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let _ = plc.kill();
    let _ = plc.wait();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_pipeline_polls_an_in_process_simulated_plc() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tags = repo.join("examples/plc/room1.toml");
    let engine = start_engine(&format!(
        "CREATE SOURCE plc (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, raw TEXT, unit TEXT,
           quality TEXT, WATERMARK FOR ts AS ts)
         WITH (connector = 'modbus', simulate = 'true', tags = '{}', poll_interval = '100ms');
         CREATE SINK rows FROM plc WITH (connector = 'file', path = 'rows.jsonl');",
        tags.display()
    ));
    let latest = wait_for_tags(&engine.dir.path().join("rows.jsonl"), |latest| {
        latest.len() == 10
    });
    assert_eq!(latest["supply_setpoint"]["value"].as_f64(), Some(22.0));
    assert_eq!(latest["supply_setpoint"]["unit"], "°C");
    assert_eq!(latest["hvac_model"]["raw"], "VLX-HVAC");
    assert_eq!(latest["light_pct"]["value"].as_f64(), Some(100.0));
    assert!(
        latest.values().all(|row| row["quality"] == "good"),
        "{latest:#?}"
    );
    assert_eq!(latest["co2_ppm"]["device"], "plc");
}

#[test]
fn a_device_that_never_answers_does_not_delay_a_healthy_one() {
    let healthy_port = free_port();
    let _healthy = Server::start(healthy_port);
    let silent_port = start_silent_device();
    let maps = tempfile::tempdir().unwrap();
    let tags = write_one_tag_map(maps.path(), "supply_temp");
    let source = |name: &str, port: u16| {
        format!(
            "CREATE SOURCE {name} (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, quality TEXT,
               error TEXT, WATERMARK FOR ts AS ts)
             WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', tags = '{}',
                   poll_interval = '100ms', timeout = '2s', retries = '0');
             CREATE SINK {name}_rows FROM {name} WITH (connector = 'file', path = '{name}.jsonl');",
            tags.display()
        )
    };
    let engine = start_engine(&(source("healthy", healthy_port) + &source("silent", silent_port)));
    std::thread::sleep(Duration::from_secs(5));
    let healthy = json_lines(&engine.dir.path().join("healthy.jsonl"));
    let silent = json_lines(&engine.dir.path().join("silent.jsonl"));
    // Every 100 ms for ~5 s, whatever the silent device does (its reads wait 2 s each).
    assert!(healthy.len() >= 35, "{} healthy rows", healthy.len());
    assert!(healthy.iter().all(|row| row["quality"] == "good"));
    assert!(silent.len() <= 3, "{} silent rows", silent.len());
    assert!(
        silent.iter().all(|row| row["quality"] == "bad"
            && row["error"]
                .as_str()
                .unwrap()
                .contains("no answer within 2s")),
        "{silent:?}"
    );
}

#[test]
fn one_based_addresses_read_the_same_registers() {
    let port = free_port();
    let _server = Server::start(port);
    let maps = tempfile::tempdir().unwrap();
    let tags = maps.path().join("manual.toml");
    // Register 31 and coil 1 as a PLC manual counting from 1 names them.
    std::fs::write(
        &tags,
        "[[tag]]\nname = \"supply_temp\"\nregister = \"holding\"\naddress = 31\nscale = 0.1\n\n\
         [[tag]]\nname = \"fan_on\"\nregister = \"coil\"\naddress = 1\n",
    )
    .unwrap();
    let engine = start_engine(
        &pipeline(port, &tags)
            .replace("timeout = '300ms'", "timeout = '300ms', address_base = '1'"),
    );
    let latest = wait_for_tags(&engine.dir.path().join("rows.jsonl"), |latest| {
        latest.len() == 2
    });
    assert_eq!(latest["supply_temp"]["value"].as_f64(), Some(21.5));
    assert_eq!(latest["fan_on"]["value"].as_f64(), Some(1.0));
}
