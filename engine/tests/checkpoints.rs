//! Checkpoints end to end: a replay killed with SIGKILL (or stopped with Ctrl-C) at random
//! moments and restarted each time ends with the same outputs as a run that was never
//! interrupted, row for row: windows in a file and in the Parquet warehouse, and a changelog of
//! running totals.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::crashes::newest_checkpoint_in;
use common::object_storage::ObjectStorage;
use common::output::writers_of_each_epoch;
use common::replays::{
    Interruption, OBJECT_STORAGE, folder_with, run_interrupted, run_to_end, sorted_lines,
    stop_mid_replay, vibelux, write_input,
};

const PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE VIEW zone_minute AS
  SELECT zone, window_start, window_end, count(*) AS n, round(avg(temp_c), 6) AS temp_avg
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start, window_end;
CREATE VIEW zone_totals AS
  SELECT zone, count(*) AS n, max(temp_c) AS temp_max FROM readings GROUP BY zone;
CREATE SINK minute_file FROM zone_minute WITH (connector = 'file', path = 'out/zone_minute.jsonl');
CREATE SINK minute_warehouse FROM zone_minute
  WITH (connector = 'parquet', path = 'warehouse/zone_minute', rollover = '1 second');
CREATE SINK totals FROM zone_totals WITH (connector = 'file', path = 'out/zone_totals.jsonl');
";

fn folder(rows: usize) -> tempfile::TempDir {
    folder_with(PIPELINE, rows)
}

/// The closed windows, in order.
fn windows(dir: &Path) -> Vec<String> {
    sorted_lines(&dir.join("out/zone_minute.jsonl"))
}

/// The changelog of totals, applied: what the view holds at the end.
fn totals(dir: &Path) -> BTreeMap<String, i64> {
    contents(&dir.join("out/zone_totals.jsonl"))
}

/// A changelog (`_op` = `insert` or `delete`), applied: each row the view holds at the end,
/// with its count.
fn contents(changelog: &Path) -> BTreeMap<String, i64> {
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for line in std::fs::read_to_string(changelog).unwrap().lines() {
        let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
        let insert = row["_op"] == "insert";
        row.as_object_mut().unwrap().remove("_op");
        *held.entry(row.to_string()).or_default() += if insert { 1 } else { -1 };
    }
    held.retain(|_, count| *count != 0);
    held
}

/// Every row of the warehouse table, as CSV lines, sorted; and the number of epochs.
fn warehouse(dir: &Path) -> (Vec<String>, usize) {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .args([
            "query",
            "--warehouse",
            "warehouse",
            "--format",
            "csv",
            "SELECT zone, window_start, n, temp_avg FROM zone_minute ORDER BY zone, window_start",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let epochs = std::fs::read_dir(dir.join("warehouse/zone_minute/_manifests"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("epoch-")
        })
        .count();
    (rows, epochs)
}

fn assert_same_results(reference: &Path, resumed: &Path) {
    let expected = windows(reference);
    assert!(expected.len() > 800, "{} windows", expected.len());
    assert_eq!(windows(resumed), expected, "the windows differ");
    assert_eq!(totals(resumed), totals(reference), "the totals differ");

    let (rows, _) = warehouse(resumed);
    assert_eq!(rows, warehouse(reference).0, "the warehouse differs");
}

fn interrupted_replays_end_with_the_same_results(how: Interruption, workers: &str, seed: u64) {
    let reference = folder(250_000);
    run_to_end(reference.path(), &["--no-state", "--workers", workers]);
    let resumed = folder(250_000);
    let args = ["--checkpoint-interval", "50ms", "--workers", workers];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, how, seed);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    assert_same_results(reference.path(), resumed.path());
    // Each worker writes its own warehouse files, and a checkpoint commits them together.
    let epochs = writers_of_each_epoch(&resumed.path().join("warehouse/zone_minute"));
    let most = epochs.iter().map(|writers| writers.len()).max();
    assert_eq!(
        most.map(|n| n.to_string()).as_deref(),
        Some(workers),
        "{epochs:?}"
    );

    // Run again: the replay ended, and its last checkpoint says so. Nothing is added.
    let (_, epochs) = warehouse(resumed.path());
    let log = run_to_end(resumed.path(), &args);
    assert!(log.contains("when the last run ended"), "{log}");
    assert!(log.contains("readings: 0 rows"), "{log}");
    assert_same_results(reference.path(), resumed.path());
    assert_eq!(warehouse(resumed.path()).1, epochs);
}

#[test]
fn a_replay_killed_at_random_moments_ends_with_the_same_results() {
    interrupted_replays_end_with_the_same_results(Interruption::Kill, "1", 1);
}

#[test]
fn a_replay_on_two_workers_killed_at_random_moments_ends_with_the_same_results() {
    interrupted_replays_end_with_the_same_results(Interruption::Kill, "2", 2);
}

#[test]
fn a_replay_checkpointed_to_object_storage_killed_at_random_moments_ends_with_the_same_results() {
    let storage = ObjectStorage::start("checkpoints");
    OBJECT_STORAGE.set(storage.environment()).unwrap();
    let reference = folder(250_000);
    run_to_end(reference.path(), &["--no-state"]);
    let resumed = folder(250_000);
    let args = [
        "--checkpoint-interval",
        "50ms",
        "--state",
        "s3://checkpoints/greenhouse/replay",
    ];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 5);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(
        logs.contains("state: s3://checkpoints/greenhouse/replay"),
        "{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    assert_same_results(reference.path(), resumed.path());
    // The checkpoints are objects: the newest three manifests and their chunks; none is on
    // local disk.
    let keys = storage.keys("checkpoints", "greenhouse/replay/");
    let manifests = keys
        .iter()
        .filter(|key| key.starts_with("greenhouse/replay/checkpoint-"))
        .count();
    assert_eq!(manifests, 3, "{keys:?}");
    assert!(
        keys.iter()
            .all(|key| key.starts_with("greenhouse/replay/checkpoint-")
                || key.starts_with("greenhouse/replay/chunks/")),
        "{keys:?}"
    );
    assert!(keys.len() > manifests, "no chunks: {keys:?}");
    let local = std::fs::read_dir(resumed.path().join("pipeline.state"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(local, 0, "checkpoints were written locally");

    // A bucket that is not there fails the start at once, naming the URL.
    let output = vibelux(resumed.path(), &["--state", "s3://missing/run"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(log.contains("listing s3://missing/run"), "{log}");
}

#[test]
fn a_replay_stopped_cleanly_again_and_again_keeps_its_open_windows() {
    interrupted_replays_end_with_the_same_results(Interruption::CtrlC, "1", 3);
}

#[test]
fn lines_appended_after_a_finished_replay_are_read_on_from_where_it_ended() {
    let dir = folder(20_000);
    run_to_end(dir.path(), &[]);
    let before = windows(dir.path());
    // An hour later, 20 more minutes of readings.
    write_input(dir.path(), 24_000, 1_717_200_000 + 3_600);
    let log = run_to_end(dir.path(), &[]);
    assert!(log.contains("readings: 24000 rows"), "{log}");
    let after = windows(dir.path());
    let reference = folder(20_000);
    write_input(reference.path(), 24_000, 1_717_200_000 + 3_600);
    run_to_end(reference.path(), &["--no-state"]);
    assert_eq!(after, windows(reference.path()));
    assert!(after.len() > before.len());
}

#[test]
fn a_replay_resumed_with_other_worker_counts_ends_with_the_same_results() {
    let reference = folder(250_000);
    run_to_end(reference.path(), &["--no-state"]);
    // One worker, then three, then two to the end: windows open at each stop, totals and the
    // warehouse's staged rows are shared out among the new workers by key.
    let dir = folder(250_000);
    let args = |workers| ["--checkpoint-interval", "50ms", "--workers", workers];
    stop_mid_replay(dir.path(), &args("1"));
    let log = stop_mid_replay(dir.path(), &args("3"));
    assert!(
        log.contains("taken with --workers 1: its state is shared out among 3"),
        "{log}"
    );
    let log = run_to_end(dir.path(), &args("2"));
    assert!(
        log.contains("taken with --workers 3: its state is shared out among 2"),
        "{log}"
    );
    assert_same_results(reference.path(), dir.path());
}

/// A simulated facility replayed at full speed: windows, a detector per sensor and an alarm
/// per sensor, whose outputs depend on nothing but the simulation's seed.
const FACILITY: &str = "
CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'simulator', rooms = '2', zones_per_room = '5', sensors_per_zone = '10',
        interval = '10 seconds', speed = 'max', start = '2024-06-01T05:00:00Z',
        duration = '6 hours', seed = '11', faults = 'stuck,dropout,spike');
CREATE VIEW zone_minute AS
  SELECT zone, window_start, count(*) AS n, round(avg(temp_c), 6) AS temp_avg
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE VIEW scored AS
  SELECT sensor_id, ts, round(anomaly_score('zscore', temp_c) OVER (PARTITION BY sensor_id), 9) AS score
  FROM readings;
CREATE VIEW steps AS
  SELECT sensor_id, ts, temp_c - LAG(temp_c, 3) OVER (PARTITION BY sensor_id ORDER BY ts) AS step,
    round(avg(temp_c) OVER (PARTITION BY sensor_id ORDER BY ts
                            RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW), 9) AS recent
  FROM readings;
CREATE VIEW rises AS
  SELECT sensor_id, ts, round(LEAD(temp_c, 2) OVER (PARTITION BY sensor_id ORDER BY ts) - temp_c, 9) AS rise
  FROM readings;
CREATE ALARM too_warm ON readings PER sensor_id
  WHEN temp_c > 25.5 FOR INTERVAL '2 minutes' CLEAR WHEN temp_c < 25;
CREATE SINK minutes FROM zone_minute WITH (connector = 'file', path = 'out/minutes.jsonl');
CREATE SINK step_rows FROM steps WITH (connector = 'file', path = 'out/steps.jsonl');
CREATE SINK scores FROM scored WITH (connector = 'file', path = 'out/scores.jsonl');
CREATE SINK rise_changes FROM rises WITH (connector = 'file', path = 'out/rises.jsonl');
CREATE SINK alarms FROM too_warm WITH (connector = 'file', path = 'out/alarms.jsonl');
";

#[test]
fn detectors_window_functions_and_alarms_resumed_with_other_worker_counts_end_with_the_same_results()
 {
    let facility = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.sql"), FACILITY).unwrap();
        dir
    };
    let outputs = |dir: &Path| {
        ["minutes", "scores", "alarms", "steps"]
            .map(|name| sorted_lines(&dir.join(format!("out/{name}.jsonl"))))
    };
    // A view with LEAD is written as a changelog (each row given again when its later row
    // comes), compared by what it adds up to.
    let rises = |dir: &Path| contents(&dir.join("out/rises.jsonl"));
    let reference = facility();
    run_to_end(reference.path(), &["--no-state", "--workers", "2"]);
    let expected = outputs(reference.path());
    let expected_rises = rises(reference.path());
    assert!(
        expected_rises.len() > 100_000,
        "{} rises",
        expected_rises.len()
    );
    assert!(expected[0].len() > 1_000, "{} windows", expected[0].len());
    assert!(
        expected[2].len() > 10,
        "{} alarm transitions",
        expected[2].len()
    );
    let dir = facility();
    let args = |workers| ["--checkpoint-interval", "50ms", "--workers", workers];
    stop_mid_replay(dir.path(), &args("2"));
    stop_mid_replay(dir.path(), &args("1"));
    run_to_end(dir.path(), &args("3"));
    let resumed = outputs(dir.path());
    assert!(expected[3].len() > 100_000, "{} steps", expected[3].len());
    assert!(
        rises(dir.path()) == expected_rises,
        "the rises (LEAD) differ"
    );
    for (name, (got, want)) in ["minutes", "scores", "alarms", "steps"]
        .iter()
        .zip(resumed.iter().zip(&expected))
    {
        assert!(
            got == want,
            "{name} differ: {} rows, {} expected",
            got.len(),
            want.len()
        );
    }
}

/// A view added before the others (so every node after it moves), and a comment: what was
/// there keeps its state.
fn with_a_view_added() -> String {
    let added = "-- added later: the warmest reading per zone and minute
CREATE VIEW zone_max AS
  SELECT zone, window_start, max(temp_c) AS temp_max
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE SINK max_file FROM zone_max WITH (connector = 'file', path = 'out/zone_max.jsonl');
";
    PIPELINE.replace(
        "CREATE VIEW zone_minute AS",
        &format!("{added}CREATE VIEW zone_minute AS"),
    )
}

#[test]
fn an_edited_pipeline_keeps_the_state_of_what_did_not_change_and_names_what_did() {
    // The pipeline as first written is stopped mid-replay, with windows open.
    let dir = folder(250_000);
    let args = ["--checkpoint-interval", "50ms"];
    stop_mid_replay(dir.path(), &args);
    // A view is added, and the replay continues.
    std::fs::write(dir.path().join("pipeline.sql"), with_a_view_added()).unwrap();
    let log = run_to_end(dir.path(), &args);
    assert!(
        log.contains("new, starting empty:\n    - the open windows of sink max_file"),
        "{log}"
    );
    assert!(!log.contains("changed, so starting empty"), "{log}");
    // The windows open at the edit, the totals and the warehouse continued as if nothing
    // had happened.
    let reference = folder(250_000);
    run_to_end(reference.path(), &["--no-state"]);
    assert_same_results(reference.path(), dir.path());
    let added = sorted_lines(&dir.path().join("out/zone_max.jsonl"));
    assert!(!added.is_empty(), "the new view wrote nothing");

    // Now a view with state changes: the restart is refused, and says which state and why.
    let edited = with_a_view_added().replace(
        "max(temp_c) AS temp_max FROM readings",
        "min(temp_c) AS temp_min FROM readings",
    );
    std::fs::write(dir.path().join("pipeline.sql"), edited).unwrap();
    write_input(dir.path(), 2_000, 1_717_200_000 + 20_000);
    let before = windows(dir.path());
    let output = vibelux(dir.path(), &[]).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("the pipeline changed since checkpoint")
            && log.contains("  - the groups of sink totals\n")
            && log.contains("--rebuild-changed"),
        "{log}"
    );
    assert_eq!(windows(dir.path()), before, "a refused run wrote");
    // Accepted, the changed view starts empty: its totals count only the new readings.
    let log = run_to_end(dir.path(), &["--rebuild-changed"]);
    assert!(
        log.contains("changed, so starting empty:\n    - the groups of sink totals"),
        "{log}"
    );
    assert!(log.contains("readings: 2000 rows"), "{log}");
    let mut rebuilt: BTreeMap<String, i64> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.path().join("out/zone_totals.jsonl"))
        .unwrap()
        .lines()
    {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["_op"] == "insert" && row.get("temp_min").is_some() {
            rebuilt.insert(row["zone"].to_string(), row["n"].as_i64().unwrap());
        }
    }
    assert_eq!(rebuilt.values().copied().collect::<Vec<_>>(), vec![500; 4]);
    // The next restart resumes the edited pipeline's own checkpoints.
    let log = run_to_end(dir.path(), &[]);
    assert!(log.contains("when the last run ended"), "{log}");
    assert!(!log.contains("starting empty"), "{log}");
}

#[test]
fn a_parquet_replay_killed_at_random_moments_ends_with_the_same_results() {
    // 250,000 readings archived in a warehouse table of several files, replayed into windows.
    let archive = "CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
        WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
        WITH (connector = 'file', path = 'in.jsonl');
      CREATE SINK archive FROM readings
        WITH (connector = 'parquet', path = 'warehouse/readings', rollover_rows = '20000',
              partition_by = 'zone');";
    let replay = "CREATE SOURCE past (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
        WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
        WITH (connector = 'parquet', path = 'warehouse/readings');
      CREATE VIEW zone_minute AS
        SELECT zone, window_start, window_end, count(*) AS n, round(avg(temp_c), 6) AS temp_avg
        FROM TUMBLE(past, ts, INTERVAL '1 minute') GROUP BY zone, window_start, window_end;
      CREATE SINK minute_file FROM zone_minute
        WITH (connector = 'file', path = 'out/zone_minute.jsonl');";
    let archived = || {
        let dir = folder(250_000);
        std::fs::write(dir.path().join("pipeline.sql"), archive).unwrap();
        run_to_end(dir.path(), &["--no-state"]);
        std::fs::write(dir.path().join("pipeline.sql"), replay).unwrap();
        dir
    };
    let reference = archived();
    run_to_end(reference.path(), &["--no-state"]);
    let expected = windows(reference.path());
    assert!(expected.len() > 800, "{} windows", expected.len());
    let resumed = archived();
    let args = ["--checkpoint-interval", "50ms", "--workers", "2"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 6);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    assert_eq!(windows(resumed.path()), expected, "the windows differ");
}

/// A run serving HTTP on `port`, checkpointing often.
fn serve(dir: &Path, port: u16) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .args(["run", "pipeline.sql", "--checkpoint-interval", "100ms"])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(port, "GET", "/healthz", None).0 != 200 {
        assert!(Instant::now() < deadline, "the engine did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn curl(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    if let Some(body) = body {
        command.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The checkpoints a serving run has stored so far, from its `/metrics`.
fn checkpoints_stored(port: u16) -> u64 {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("vibelux_checkpoints_stored_total "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

fn lines_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_acknowledged_alarm_is_still_acknowledged_after_a_crash_and_its_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut lines = String::new();
    for offset in (0..5).rev() {
        for (zone, temp) in [("z1", 35.0), ("z2", 20.0)] {
            let ts = now - offset * 1_000;
            lines.push_str(&format!(
                "{{\"zone\":\"{zone}\",\"ts\":{ts},\"temp_c\":{temp}}}\n"
            ));
        }
    }
    std::fs::write(dir.path().join("live.jsonl"), lines).unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE live (zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = 'live.jsonl', mode = 'tail', idle_timeout = '1 second');
         CREATE ALARM hot ON live PER zone WHEN temp_c > 30 SEVERITY 'critical';
         CREATE SINK hot_out FROM hot WITH (connector = 'file', path = 'hot.jsonl');",
    )
    .unwrap();
    let events = dir.path().join("hot.jsonl");
    let port = free_port();
    let mut engine = serve(dir.path(), port);
    wait_until("the alarm to go active", || lines_of(&events).len() == 1);
    let acknowledge = r#"{"key": {"zone": "z1"}, "by": "maria", "note": "opening vents"}"#;
    let (status, body) = curl(
        port,
        "POST",
        "/v1/alarms/hot/acknowledge",
        Some(acknowledge),
    );
    assert_eq!(status, 202, "{body}");
    wait_until("the acknowledgement", || lines_of(&events).len() == 2);
    // Two checkpoints later (the first may have been cut before the acknowledgement), the
    // engine crashes. Counted, not timed: a loaded machine can take a second for one.
    let stored = checkpoints_stored(port);
    wait_until("two more checkpoints", || {
        checkpoints_stored(port) >= stored + 2
    });
    engine.kill().unwrap();
    engine.wait().unwrap();

    let mut engine = serve(dir.path(), port);
    let state = || curl(port, "GET", "/v1/views/hot_state", None).1;
    wait_until("the alarm's state view", || {
        state()["rows"][0]["state"] == "acknowledged"
    });
    // Still acknowledged by maria: a second acknowledgement is refused.
    let (status, body) = curl(
        port,
        "POST",
        "/v1/alarms/hot/acknowledge",
        Some(acknowledge),
    );
    assert_eq!(status, 409, "{body}");
    // The history was kept, not wiped, and not repeated.
    let rows = lines_of(&events);
    let states: Vec<&str> = rows
        .iter()
        .map(|row| row["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "acknowledged"], "{rows:?}");
    assert_eq!(rows[1]["actor"], "maria");
    engine.kill().unwrap();
    engine.wait().unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_example_pipeline_checkpoints_while_it_runs_and_resumes_after_a_kill() {
    // A facility simulated at 60x beside a PLC polled on the wall clock: sources on different
    // clocks, each part of the dataflow cut at its own time.
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let copy = Command::new("cp")
        .args([
            "-r",
            examples.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copy.success());
    let run = |log: &str| {
        Command::new(env!("CARGO_BIN_EXE_vibelux"))
            .current_dir(dir.path())
            .args(["run", "examples/greenhouse.sql", "--http", "off"])
            .args(["--checkpoint-interval", "500ms"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let state = dir.path().join("greenhouse.state");
    let newest = || newest_checkpoint_in(&state);
    let mut child = run("run-1.log");
    let started = Instant::now();
    while newest() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints while running:\n{}",
            std::fs::read_to_string(dir.path().join("run-1.log")).unwrap()
        );
        assert!(child.try_wait().unwrap().is_none(), "the example ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = newest();
    let mut child = run("run-2.log");
    let started = Instant::now();
    while newest() <= stored + 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.path().join("run-2.log")).unwrap();
    assert!(
        log.contains(&format!("resuming from checkpoint {stored} ")),
        "{log}"
    );
}
