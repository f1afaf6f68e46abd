//! End-to-end: the `vibelux` binary as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::replays::sorted_lines;

fn vibelux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vibelux"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A replay pipeline over a small file, in a fresh folder.
fn replay_pipeline(dir: &Path) -> PathBuf {
    let mut lines = String::new();
    for minute in 0..3 {
        for second in (0..60).step_by(10) {
            for (sensor, zone) in [("s1", "z1"), ("s2", "z1"), ("s3", "z2")] {
                let temp = 20.0 + minute as f64 + second as f64 / 100.0;
                lines.push_str(&format!(
                    "{{\"sensor_id\":\"{sensor}\",\"zone\":\"{zone}\",\"ts\":\"2026-06-01T00:{minute:02}:{second:02}Z\",\"temp_c\":{temp},\"rh\":55}}\n"
                ));
            }
        }
        lines
            .push_str("{\"sensor_id\":\"s1\",\"zone\":\"z1\",\"ts\":\"yesterday\",\"temp_c\":1}\n");
    }
    std::fs::write(dir.join("readings.jsonl"), lines).unwrap();
    let sql = dir.join("replay.sql");
    std::fs::write(
        &sql,
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'file', path = 'readings.jsonl', format = 'json');
         CREATE VIEW zone_minute AS
           SELECT zone, window_start, count(*) AS n, max(temp_c) AS temp_max
           FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
         CREATE SINK windows FROM zone_minute WITH (connector = 'file', path = 'out/zone_minute.jsonl', format = 'json');
         CREATE SINK errors FROM readings_errors WITH (connector = 'file', path = 'out/errors.csv', format = 'csv');
         CREATE SINK counts FROM readings WITH (connector = 'stdout');",
    )
    .unwrap();
    sql
}

#[test]
fn check_accepts_every_example_pipeline() {
    let mut examples = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "sql") {
            continue;
        }
        examples += 1;
        // Examples name their data relative to the repository root, where the README runs them.
        let output = vibelux()
            .current_dir(repo())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            text(&output)
        );
        assert!(text(&output).contains(": ok"));
    }
    assert!(examples >= 2);
}

#[test]
fn check_rejects_a_broken_pipeline_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("broken.sql");
    std::fs::write(
        &sql,
        "CREATE SOURCE r (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'simulator');\nCREATE VIEW v AS\n  SELECT temp FROM r;\n",
    )
    .unwrap();
    let output = vibelux().arg("check").arg(&sql).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(message.contains("broken.sql:3:10:"), "{message}");
    assert!(
        message.contains("  SELECT temp FROM r;") && message.contains("^"),
        "{message}"
    );
}

#[test]
fn explain_prints_the_dataflow_of_each_view_and_sink() {
    let output = vibelux()
        .current_dir(repo())
        .arg("explain")
        .arg(repo().join("examples/greenhouse.sql"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&output);
    for step in [
        "materialized view zone_minute",
        "sink zone_minute_out",
        "AssignWindows TUMBLE(ts, 1m)",
        "Source readings",
    ] {
        assert!(shown.contains(step), "missing {step} in {shown}");
    }
}

#[test]
fn a_replay_writes_each_window_once_and_keeps_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sql = replay_pipeline(dir.path());
    let mut results = Vec::new();
    for workers in ["1", "2"] {
        let output = vibelux()
            .current_dir(dir.path())
            .args(["run", "--http", "off", "--no-state", "--workers", workers])
            .arg(&sql)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        let windows = sorted_lines(&dir.path().join("out/zone_minute.jsonl"));
        assert_eq!(windows.len(), 6, "{windows:?}");
        assert!(
            windows.contains(
                &r#"{"zone":"z1","window_start":"2026-06-01T00:02:00.000","n":12,"temp_max":22.5}"#
                    .to_string()
            ),
            "{windows:?}"
        );
        let errors = std::fs::read_to_string(dir.path().join("out/errors.csv")).unwrap();
        assert_eq!(errors.lines().count(), 4, "{errors}");
        assert!(errors.starts_with("reason,raw,origin\n"));
        assert!(
            errors.contains("expected an ISO 8601 timestamp"),
            "{errors}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 54);
        results.push(windows);
    }
    assert_eq!(results[0], results[1], "1 and 2 workers disagree");
}

#[test]
fn the_example_runs_live_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    // Run where the README runs it, as far as the example's inputs go (the PLC's tag map), but
    // write its output into the temporary folder.
    std::os::unix::fs::symlink(repo().join("examples"), dir.path().join("examples")).unwrap();
    let child = vibelux()
        .current_dir(dir.path())
        .arg("run")
        .arg(repo().join("examples/greenhouse.sql"))
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // At 60× a minute window closes every second of wall time (plus the 5 s watermark delay).
    let sink = dir.path().join("out/zone_minute.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&sink).map_or(true, |text| text.lines().count() < 20) {
        assert!(Instant::now() < deadline, "no closed window within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&output);
    assert!(
        shown.contains("sink zone_minute_out ← zone_minute → out/zone_minute.jsonl"),
        "{shown}"
    );
    assert!(shown.contains("stopping"), "{shown}");
    assert!(shown.contains("serving http://127.0.0.1:"), "{shown}");
    for line in std::fs::read_to_string(&sink).unwrap().lines() {
        let window: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            window["n"].as_i64().unwrap() > 0 && window["temp_avg"].as_f64().unwrap() > 15.0,
            "{line}"
        );
    }
}

#[test]
fn an_idle_tailed_source_still_closes_its_windows() {
    let dir = tempfile::tempdir().unwrap();
    // Readings from two minutes ago, then silence: only the clock can move the watermark on.
    let now = now_millis();
    let minute_start = (now / 60_000 - 2) * 60_000;
    let mut lines = String::new();
    for offset in [1_000, 20_000, 40_000] {
        let ts = minute_start + offset;
        lines.push_str(&format!(
            "{{\"sensor_id\":\"s1\",\"ts\":{ts},\"temp_c\":21.0}}\n"
        ));
    }
    std::fs::write(dir.path().join("live.jsonl"), lines).unwrap();
    std::fs::write(
        dir.path().join("tail.sql"),
        "CREATE SOURCE live (sensor_id TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
           WITH (connector = 'file', path = 'live.jsonl', mode = 'tail', idle_timeout = '1 second');
         CREATE VIEW per_minute AS SELECT window_start, count(*) AS n FROM TUMBLE(live, ts, INTERVAL '1 minute') GROUP BY window_start;
         CREATE SINK out FROM per_minute WITH (connector = 'file', path = 'out/per_minute.jsonl');",
    )
    .unwrap();
    let child = vibelux()
        .current_dir(dir.path())
        .args(["run", "--http", "off", "tail.sql"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sink = dir.path().join("out/per_minute.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&sink).map_or(true, |text| text.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the idle source never closed its window"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let written = std::fs::read_to_string(&sink).unwrap();
    assert!(written.contains("\"n\":3"), "{written}");
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_table_change_retracts_what_the_join_derived_from_the_old_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("readings.jsonl"),
        "{\"sensor_id\":\"s1\",\"zone\":\"z1\",\"ts\":\"2026-06-01T00:00:05Z\",\"temp_c\":23.0}\n\
         {\"sensor_id\":\"s2\",\"zone\":\"z1\",\"ts\":\"2026-06-01T00:00:06Z\",\"temp_c\":25.0}\n",
    )
    .unwrap();
    let setpoints = dir.path().join("setpoints.csv");
    std::fs::write(&setpoints, "zone,target_c\nz1,20\n").unwrap();
    std::fs::write(
        dir.path().join("join.sql"),
        "CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = 'readings.jsonl');
         CREATE TABLE setpoints (zone TEXT, target_c DOUBLE, PRIMARY KEY (zone))
           WITH (connector = 'file', path = 'setpoints.csv', mode = 'tail');
         CREATE VIEW deviation AS
           SELECT r.sensor_id, r.temp_c - s.target_c AS deviation FROM readings r JOIN setpoints s ON r.zone = s.zone;
         CREATE SINK changes FROM deviation WITH (connector = 'file', path = 'out/deviation.jsonl');",
    )
    .unwrap();
    let child = vibelux()
        .current_dir(dir.path())
        .args(["run", "--http", "off", "join.sql"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sink = dir.path().join("out/deviation.jsonl");
    let wait_for_lines = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = std::fs::read_to_string(&sink).unwrap_or_default();
            if lines.lines().count() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} changes, have:\n{lines}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = wait_for_lines(2);
    assert!(
        before.contains(r#"{"_op":"insert","sensor_id":"s1","deviation":3}"#),
        "{before}"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&setpoints)
        .unwrap()
        .write_all(b"z1,22\n")
        .unwrap();
    let after = wait_for_lines(6);
    for change in [
        r#"{"_op":"delete","sensor_id":"s1","deviation":3}"#,
        r#"{"_op":"delete","sensor_id":"s2","deviation":5}"#,
        r#"{"_op":"insert","sensor_id":"s1","deviation":1}"#,
        r#"{"_op":"insert","sensor_id":"s2","deviation":3}"#,
    ] {
        assert!(after.contains(change), "missing {change} in\n{after}");
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
}
