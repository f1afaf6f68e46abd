//! Alarms in running pipelines: the simulator's injected dropout raises and clears a deadman at
//! the exact instants its readings imply; a deadman fires while no input arrives at all; the
//! alarm state is a live view.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::output::{json_lines, wait_for_lines};
use common::start_engine;
use serde_json::Value;

fn millis(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn text_of(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

#[test]
fn a_dropout_raises_and_clears_the_deadman_at_the_instants_its_readings_imply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '2', sensors_per_zone = '2',
               interval = '10 seconds', speed = 'max', duration = '1d', seed = '4',
               faults = 'dropout', faults_path = 'faults.jsonl');
         CREATE ALARM quiet ON readings PER sensor_id WHEN STALE FOR INTERVAL '1 minute'
           SEVERITY 'high' MESSAGE '{sensor_id} silent since {ts}';
         CREATE SINK raw FROM readings WITH (connector = 'file', path = 'readings.jsonl');
         CREATE SINK quiet_out FROM quiet WITH (connector = 'file', path = 'quiet.jsonl');",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args(["run", "pipeline.sql", "--http", "off", "--workers", "2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let faults = json_lines(&dir.path().join("faults.jsonl"));
    assert_eq!(faults.len(), 1, "{faults:?}");
    let target = faults[0]["target"].as_str().unwrap();
    let start = millis(faults[0]["start"].as_str().unwrap());
    let end = millis(faults[0]["end"].as_str().unwrap());

    // What the readings imply: silent from the last reading before the dropout; the first one
    // after it clears the alarm.
    let mut readings: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let raw = json_lines(&dir.path().join("readings.jsonl"));
    for row in &raw {
        readings
            .entry(row["sensor_id"].as_str().unwrap())
            .or_default()
            .push(millis(row["ts"].as_str().unwrap()));
    }
    let times = readings.get_mut(target).unwrap();
    times.sort_unstable();
    let last_before = *times.iter().rev().find(|t| **t < start).unwrap();
    let first_after = *times.iter().find(|t| **t >= end).unwrap();

    let events = json_lines(&dir.path().join("quiet.jsonl"));
    let summary: Vec<(String, String, String, String)> = events
        .iter()
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
            (
                field("sensor_id"),
                field("state"),
                field("ts"),
                field("message"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                target.to_string(),
                "active".to_string(),
                text_of(last_before + 60_000),
                format!("{target} silent since {}", text_of(last_before)),
            ),
            (
                target.to_string(),
                "cleared".to_string(),
                text_of(first_after),
                format!("{target} silent since {}", text_of(first_after)),
            ),
        ],
        "dropout of {target} from {} to {}",
        text_of(start),
        text_of(end)
    );
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn get(address: &str, path: &str) -> Value {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{address}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

#[test]
fn a_deadman_fires_while_nothing_arrives_and_the_state_view_shows_it() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("live.jsonl");
    // Two sensors report every second for five seconds up to now; then nothing at all.
    let now = now_millis();
    let mut lines = String::new();
    for offset in (0..5).rev() {
        for sensor in ["s1", "s2"] {
            let ts = now - offset * 1_000;
            lines.push_str(&format!(
                "{{\"sensor_id\":\"{sensor}\",\"ts\":{ts},\"temp_c\":21.0}}\n"
            ));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE live (sensor_id TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = '{}', mode = 'tail', idle_timeout = '1 second');
         CREATE ALARM quiet ON live PER sensor_id WHEN STALE SEVERITY 'high';
         CREATE SINK quiet_out FROM quiet WITH (connector = 'file', path = 'quiet.jsonl');",
        input.display()
    ));
    // 3 × the 1 s interval after the last reading: each sensor's alarm, from the clock alone.
    let events = wait_for_lines(&engine.dir.path().join("quiet.jsonl"), 2);
    let last = text_of(now);
    for event in &events {
        assert_eq!(event["state"], "active", "{events:?}");
        let raised = millis(event["ts"].as_str().unwrap());
        assert_eq!(raised - now, 3_000, "raised at {raised}, last reading {last}");
    }
    // The state view is a live view: GET it like any other.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = get(&engine.address, "/v1/views/quiet_state");
        let rows = state["rows"].as_array().cloned().unwrap_or_default();
        if rows.len() == 2 && rows.iter().all(|row| row["state"] == "active") {
            assert_eq!(rows[0]["severity"], "high", "{state}");
            assert_eq!(rows[0]["message"], "quiet: sensor_id s1", "{state}");
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
