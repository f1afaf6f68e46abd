//! Crashing a checkpointed run again and again: what the at-least-once and exactly-once tests
//! of sinks and sources share.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The id of the newest checkpoint in `dir/pipeline.state` (0 when there is none).
pub fn newest_checkpoint(dir: &Path) -> u64 {
    newest_checkpoint_in(&dir.join("pipeline.state"))
}

/// The id of the newest checkpoint in the state directory `state` (0 when there is none).
pub fn newest_checkpoint_in(state: &Path) -> u64 {
    std::fs::read_dir(state)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix("checkpoint-")?
                        .strip_suffix(".bin")?
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Runs `vibelux run pipeline.sql --http off ARGS` in `dir` again and again, killing each run
/// (SIGKILL) a few milliseconds after it has stored a checkpoint or two of its own, until a run
/// ends by itself. Each run's stderr goes to `run-N.log`. Returns how many runs were killed.
pub fn run_killed_between_checkpoints(dir: &Path, args: &[&str]) -> u64 {
    // Every run but the last is killed: the number of a run is the number killed before it.
    for run in 0..60u64 {
        let log_path = dir.join(format!("run-{run}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let before = newest_checkpoint(dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
            .current_dir(dir)
            .args(["run", "pipeline.sql", "--http", "off"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let wanted = before + 1 + run % 2;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = None;
        while newest_checkpoint(dir) < wanted && Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if ended.is_none() {
            // A little later than the checkpoint, so that rows after it are in flight.
            std::thread::sleep(Duration::from_millis(run * 37 % 40));
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        if ended.is_some() {
            let log = std::fs::read_to_string(&log_path).unwrap();
            assert!(status.success(), "run {run} failed:\n{log}");
            return run;
        }
        assert!(
            newest_checkpoint(dir) >= wanted,
            "run {run} stored no checkpoints"
        );
    }
    panic!("the run never ended by itself");
}

/// `count` readings of 10 sensors, 10 ms apart (`sensor_id`, `ts`, `seq`), as JSON lines in
/// `dir/in.jsonl`: one-second windows of 10 per sensor.
pub fn write_sensor_readings(dir: &Path, count: u64) {
    let mut input = String::new();
    for i in 0..count {
        let stamp = chrono::DateTime::from_timestamp_millis(1_780_000_000_000 + 10 * i as i64)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        input.push_str(&format!(
            "{{\"sensor_id\": \"s{}\", \"ts\": \"{stamp}\", \"seq\": {i}}}\n",
            i % 10
        ));
    }
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
}

/// Per-sensor one-second windows of the readings `write_sensor_readings` writes, for a sink
/// added after them.
pub const SENSOR_SECONDS: &str =
    "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT,
   WATERMARK FOR ts AS ts - INTERVAL '1 second')
 WITH (connector = 'file', path = 'in.jsonl');
 CREATE VIEW sensor_seconds AS
   SELECT sensor_id, window_start, count(*) AS n, max(seq) AS last
   FROM TUMBLE(readings, ts, INTERVAL '1 second') GROUP BY sensor_id, window_start;
";
