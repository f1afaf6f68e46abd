//! The Modbus sink against a Modbus TCP server no one here wrote (pymodbus) and the simulated
//! PLC: writes by the tag map, verified by a read; safety limits, interlocks and shadow mode;
//! and a device that never answers a write, which must not hold back the rest of the pipeline.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::modbus::{Server, TAGS, start_silent_device, write_one_tag_map};
use common::output::{json_lines, wait_for_lines};
use common::start_engine;
use common::tansu::free_port;

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

/// A write to a PLC that does not answer waits for its timeout; it waits on the sink's own
/// thread, so the worker that feeds it goes on writing every other sink meanwhile.
#[test]
fn a_plc_that_never_answers_a_write_does_not_hold_back_the_other_sinks() {
    let silent_port = start_silent_device();
    let dir = tempfile::tempdir().unwrap();
    let tags = write_one_tag_map(dir.path(), "supply_setpoint");
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
