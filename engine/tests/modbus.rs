//! The Modbus source against a Modbus TCP server no one here wrote (pymodbus): every data type
//! and byte order, scale and units, exception replies, and a device that is down at start,
//! killed mid-run and restarted.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::output::{json_lines, wait_for_lines};
use common::start_engine;
use common::tansu::free_port;
use serde_json::Value;

const TAGS: &str = r#"
[groups]
fast = "100ms"

[[tag]]
name = "i16"
register = "holding"
address = 0
type = "int16"
group = "fast"

[[tag]]
name = "u16"
register = "holding"
address = 1
type = "uint16"
group = "fast"

[[tag]]
name = "i32"
register = "holding"
address = 2
type = "int32"
group = "fast"

[[tag]]
name = "u32_dcba"
register = "holding"
address = 4
type = "uint32"
byte_order = "DCBA"
group = "fast"

[[tag]]
name = "f32_badc"
register = "holding"
address = 6
type = "float32"
byte_order = "BADC"
group = "fast"

[[tag]]
name = "f32_cdab"
register = "holding"
address = 8
type = "float32"
byte_order = "CDAB"
group = "fast"

[[tag]]
name = "i64"
register = "holding"
address = 10
type = "int64"
group = "fast"

[[tag]]
name = "u64_cdab"
register = "holding"
address = 14
type = "uint64"
byte_order = "CDAB"
group = "fast"

[[tag]]
name = "f64_dcba"
register = "holding"
address = 18
type = "float64"
byte_order = "DCBA"
group = "fast"

[[tag]]
name = "label"
register = "holding"
address = 22
type = "string(4)"
group = "fast"

[[tag]]
name = "supply_temp"
register = "holding"
address = 30
scale = 0.1
unit = "°C"
group = "fast"

[[tag]]
name = "co2_ppm"
register = "input"
address = 0
group = "fast"

[[tag]]
name = "fan_on"
register = "coil"
address = 0
group = "fast"

[[tag]]
name = "valve_open"
register = "coil"
address = 1
group = "fast"

[[tag]]
name = "door_closed"
register = "discrete"
address = 0
group = "fast"

[[tag]]
name = "missing"
register = "holding"
address = 500
group = "fast"
"#;

/// The pymodbus server (`tests/peers/modbus_server.py`); killed when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/test.sh installs pymodbus)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let tags = maps.path().join("room1.toml");
    std::fs::write(
        &tags,
        "[[tag]]\nname = \"supply_temp\"\nregister = \"holding\"\naddress = 30\nscale = 0.1\n",
    )
    .unwrap();
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
fn the_sink_writes_tags_by_the_map_verifies_them_and_refuses_read_only_ones() {
    let port = free_port();
    let _server = Server::start(port);
    let maps = tempfile::tempdir().unwrap();
    let tags = maps.path().join("room1.toml");
    std::fs::write(&tags, TAGS).unwrap();
    let commands = maps.path().join("commands.jsonl");
    let mut engine = start_writer(&commands, port, &tags, "");
    send_commands(
        &commands,
        &[
            ("supply_temp", 19.5),
            ("f32_cdab", 3.25),
            ("valve_open", 1.0),
            ("co2_ppm", 900.0),
            ("door_closed", 0.0),
            ("i16", 40000.0),
            ("no_such_tag", 1.0),
        ],
    );
    engine.wait_for_log("modbus write refused", 4);
    // pymodbus, not the engine, reads what was written.
    let (read, output) = pymodbus_reads(
        port,
        "print(c.read_holding_registers(30, count=1, device_id=1).registers[0])
print(c.read_holding_registers(8, count=2, device_id=1).registers)
print(c.read_coils(1, count=1, device_id=1).bits[0])
print(c.read_holding_registers(0, count=1, device_id=1).registers[0])",
    );
    // 19.5 °C at scale 0.1 is 195; 3.25f32 is 0x40500000, registers swapped (CDAB); the coil
    // is on; the int16 that 40000 does not fit keeps its -1234 (64302 as a register).
    assert_eq!(read, ["195", "[0, 16464]", "True", "64302"], "{output:?}");
    let log = engine.interrupt();
    for reason in [
        "tag `co2_ppm`: an input register is read-only (refused)",
        "tag `door_closed`: a discrete input is read-only (refused)",
        "tag `i16`: 40000 does not fit a int16 (refused)",
        "tag `no_such_tag`: no such tag in the tag map (refused)",
    ] {
        assert!(log.contains(reason), "{reason} in {log}");
    }
}

/// A device that accepts connections and then says nothing at all; returns its port.
fn start_silent_device() -> u16 {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    port
}

#[test]
fn a_device_that_never_answers_does_not_delay_a_healthy_one() {
    let healthy_port = free_port();
    let _healthy = Server::start(healthy_port);
    let silent_port = start_silent_device();
    let maps = tempfile::tempdir().unwrap();
    let tags = maps.path().join("one.toml");
    std::fs::write(
        &tags,
        "[[tag]]\nname = \"supply_temp\"\nregister = \"holding\"\naddress = 30\nscale = 0.1\n",
    )
    .unwrap();
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

/// A write to a PLC that does not answer waits for its timeout; it waits on the sink's own
/// thread, so the worker that feeds it goes on writing every other sink meanwhile.
#[test]
fn a_plc_that_never_answers_a_write_does_not_hold_back_the_other_sinks() {
    let silent_port = start_silent_device();
    let dir = tempfile::tempdir().unwrap();
    let tags = dir.path().join("one.toml");
    std::fs::write(
        &tags,
        "[[tag]]\nname = \"supply_setpoint\"\nregister = \"holding\"\naddress = 30\nscale = 0.1\n",
    )
    .unwrap();
    let commands = dir.path().join("commands.jsonl");
    std::fs::write(&commands, "").unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE commands (tag TEXT, value DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{}', mode = 'tail');
         CREATE SINK plc FROM commands
           WITH (connector = 'modbus', host = '127.0.0.1', port = '{silent_port}', tags = '{}',
                 timeout = '3s', audit = 'audit.jsonl');
         CREATE SINK copy FROM commands WITH (connector = 'file', path = 'copy.jsonl');",
        commands.display(),
        tags.display()
    ));
    engine.wait_for_log("Ctrl-C stops", 1);
    let copy = engine.dir.path().join("copy.jsonl");
    let audit = engine.dir.path().join("audit.jsonl");
    send_commands(&commands, &[("supply_setpoint", 21.0)]);
    wait_for_lines(&copy, 1);
    // The first write is waiting for the device now; more commands arrive meanwhile.
    send_commands(&commands, &[("supply_setpoint", 22.0); 20]);
    wait_for_lines(&copy, 21);
    assert_eq!(
        json_lines(&audit).len(),
        0,
        "the commands were copied only after the first write failed: the worker waited for it"
    );
    // Each write is tried and fails with the device's timeout, on the record.
    let failed = wait_for_lines(&audit, 1);
    assert_eq!(failed[0]["outcome"], "failed", "{failed:?}");
    assert_eq!(failed[0]["value"], "21", "{failed:?}");
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

const GUARDED: &str = r#"
[[tag]]
name = "exhaust_fan"
register = "coil"
address = 0

[[tag]]
name = "co2_valve"
register = "coil"
address = 1
interlock = ["exhaust_fan"]

[[tag]]
name = "setpoint"
register = "holding"
address = 30
scale = 0.1
min = 15
max = 30
max_writes_per_minute = 2
"#;

#[test]
fn safety_limits_and_interlocks_block_writes_with_the_reason_and_shadow_mode_only_records() {
    let port = free_port();
    let _server = Server::start(port);
    let maps = tempfile::tempdir().unwrap();
    let tags = maps.path().join("guarded.toml");
    std::fs::write(&tags, GUARDED).unwrap();
    let commands = maps.path().join("commands.jsonl");
    let rehearsal = maps.path().join("rehearsal.jsonl");
    let audit = maps.path().join("audit.jsonl");
    std::fs::write(&commands, "").unwrap();
    std::fs::write(&rehearsal, "").unwrap();
    std::fs::write(&audit, "").unwrap();
    let mut engine = start_engine(&format!(
        "CREATE SOURCE commands (tag TEXT, value DOUBLE, reason TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{commands}', mode = 'tail');
         CREATE SOURCE rehearsal (tag TEXT, value DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{rehearsal}', mode = 'tail');
         CREATE SINK plc FROM commands
           WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', tags = '{tags}',
                 timeout = '500ms', audit = '{audit}');
         -- The audit log read back as a relation: a view of what was blocked.
         CREATE SOURCE plc_audit (at TIMESTAMP, tag TEXT, value TEXT, outcome TEXT, reason TEXT,
             WATERMARK FOR at AS at)
           WITH (connector = 'file', path = '{audit}', mode = 'tail');
         CREATE VIEW blocked AS SELECT tag, reason FROM plc_audit WHERE outcome = 'blocked';
         CREATE SINK blocked_out FROM blocked WITH (connector = 'file', path = 'blocked.jsonl');
         CREATE SINK plc_shadow FROM rehearsal
           WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', tags = '{tags}',
                 timeout = '500ms', shadow = 'true', audit = 'shadow.jsonl');",
        commands = commands.display(),
        rehearsal = rehearsal.display(),
        tags = tags.display(),
        audit = audit.display()
    ));
    engine.wait_for_log("Ctrl-C stops", 1);
    let line = |tag: &str, value: f64, second: u32| {
        format!(
            r#"{{"tag": "{tag}", "value": {value}, "reason": "co2_low", "ts": "2026-06-01T00:00:{second:02}Z"}}"#
        )
    };
    std::fs::write(
        &commands,
        [
            // The exhaust fan (coil 0) runs: CO₂ dosing is interlocked.
            line("co2_valve", 1.0, 1),
            // Out of range, then two writes, then one too many for the minute.
            line("setpoint", 35.0, 2),
            line("setpoint", 20.0, 3),
            line("setpoint", 21.0, 4),
            line("setpoint", 22.0, 5),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while json_lines(&audit).len() < 5 {
        assert!(Instant::now() < deadline, "{:?}", json_lines(&audit));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        &rehearsal,
        r#"{"tag": "setpoint", "value": 28.0, "ts": "2026-06-01T00:00:09Z"}"#.to_string() + "\n",
    )
    .unwrap();
    let shadow = engine.dir.path().join("shadow.jsonl");
    while json_lines(&shadow).is_empty() {
        assert!(Instant::now() < deadline, "no shadow record");
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcomes: Vec<(String, String, String)> = json_lines(&audit)
        .iter()
        .map(|entry| {
            (
                entry["tag"].as_str().unwrap().to_string(),
                entry["outcome"].as_str().unwrap().to_string(),
                entry["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("co2_valve", "blocked", "interlock: `exhaust_fan` is on"),
        ("setpoint", "blocked", "35 is above the tag's maximum 30"),
        ("setpoint", "written", ""),
        ("setpoint", "written", ""),
        (
            "setpoint",
            "blocked",
            "rate limit: 2 writes per minute already made",
        ),
    ];
    assert_eq!(
        outcomes,
        expected.map(|(t, o, r)| (t.to_string(), o.to_string(), r.to_string())),
    );
    // The audit keeps why the write was asked for: the whole row.
    assert_eq!(json_lines(&audit)[0]["row"]["reason"], "co2_low");
    let rehearsed = json_lines(&shadow);
    assert_eq!(rehearsed[0]["outcome"], "shadow", "{rehearsed:?}");
    let blocked = engine.dir.path().join("blocked.jsonl");
    while json_lines(&blocked).len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", json_lines(&blocked));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        json_lines(&blocked)[0]["reason"],
        "interlock: `exhaust_fan` is on"
    );
    // pymodbus reads what the PLC holds: the valve stayed shut, the setpoint is the last
    // allowed write (21.0 at scale 0.1), not the blocked or rehearsed ones.
    let (read, output) = pymodbus_reads(
        port,
        "print(c.read_coils(1, count=1, device_id=1).bits[0])
print(c.read_holding_registers(30, count=1, device_id=1).registers[0])",
    );
    assert_eq!(read, ["False", "210"], "{output:?}");
    let log = engine.interrupt();
    assert!(
        log.contains("tag `co2_valve`: interlock: `exhaust_fan` is on (blocked)"),
        "{log}"
    );
}

#[test]
fn the_simulated_plc_refuses_co2_dosing_while_its_exhaust_fan_runs() {
    let port = free_port();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tags = repo.join("examples/plc/room1.toml");
    let mut plc = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["sim", "plc", "--port", &port.to_string(), "--tags"])
        .arg(&tags)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(plc.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let commands = tempfile::tempdir().unwrap();
    let file = commands.path().join("commands.jsonl");
    let mut engine = start_writer(&file, port, &tags, ", audit = 'audit.jsonl'");
    send_commands(
        &file,
        &[
            ("exhaust_fan_on", 1.0),
            ("co2_valve_open", 1.0),
            ("exhaust_fan_on", 0.0),
            ("co2_valve_open", 1.0),
        ],
    );
    let audit = engine.dir.path().join("audit.jsonl");
    let outcomes: Vec<String> = wait_for_lines(&audit, 4)
        .iter()
        .map(|entry| {
            format!(
                "{} {}",
                entry["tag"].as_str().unwrap(),
                entry["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "exhaust_fan_on written",
            "co2_valve_open blocked",
            "exhaust_fan_on written",
            "co2_valve_open written",
        ]
    );
    engine.interrupt();
    let _ = plc.kill();
    let _ = plc.wait();
}

/// An engine writing the rows of a tailed `commands` file (created first, so it exists when the
/// engine opens it) to the Modbus device at `port`, with
/// the sink's `extra` options; ready when it returns.
fn start_writer(commands: &Path, port: u16, tags: &Path, extra: &str) -> common::Engine {
    std::fs::write(commands, "").unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE commands (tag TEXT, value DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{}', mode = 'tail');
         CREATE SINK plc FROM commands
           WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', tags = '{}',
                 timeout = '500ms'{extra});",
        commands.display(),
        tags.display()
    ));
    engine.wait_for_log("Ctrl-C stops", 1);
    engine
}

/// Appends one command per (tag, value), a second apart in event time.
fn send_commands(commands: &Path, writes: &[(&str, f64)]) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(commands)
        .unwrap();
    for (second, (tag, value)) in writes.iter().enumerate() {
        writeln!(
            file,
            r#"{{"tag": "{tag}", "value": {value}, "ts": "2026-06-01T00:00:{:02}Z"}}"#,
            second + 1
        )
        .unwrap();
    }
}

/// Runs `reads` (Python lines using `c`, a pymodbus client connected to `port`); returns what
/// they printed, line by line, and the whole output for messages.
fn pymodbus_reads(port: u16, reads: &str) -> (Vec<String>, std::process::Output) {
    let script = format!(
        "from pymodbus.client import ModbusTcpClient\n\
         c = ModbusTcpClient(\"127.0.0.1\", port={port}); assert c.connect()\n{reads}\n"
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let read = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (read, output)
}
