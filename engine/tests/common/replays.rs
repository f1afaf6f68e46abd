//! Replays killed at random moments and restarted: what the checkpoint tests of single
//! operators and whole pipelines share (`checkpoints.rs`, `join_checkpoints.rs`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator, so every run of the test kills at the same moments.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// `rows` readings of 20 sensors in 4 zones, 20 a second, slightly out of order.
pub fn write_input(dir: &Path, rows: usize, first_second: i64) {
    let mut random = Lcg(7);
    let mut text = String::new();
    for i in 0..rows {
        let millis = (first_second + (i / 20) as i64) * 1000 + random.below(3000) as i64;
        let ts = chrono::DateTime::from_timestamp_millis(millis)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let temp = 20.0 + random.below(5000) as f64 / 1000.0;
        text.push_str(&format!(
            "{{\"sensor_id\": \"s{}\", \"zone\": \"z{}\", \"ts\": \"{ts}\", \"temp_c\": {temp}}}\n",
            i % 20,
            i % 4
        ));
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("in.jsonl"))
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// The object storage server's environment, once a test has started it (other runs ignore it).
pub static OBJECT_STORAGE: std::sync::OnceLock<Vec<(&'static str, String)>> =
    std::sync::OnceLock::new();

pub fn vibelux(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vibelux"));
    command
        .envs(OBJECT_STORAGE.get().cloned().unwrap_or_default())
        .current_dir(dir)
        .args(["run", "pipeline.sql", "--http", "off"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs to the end; returns stderr.
pub fn run_to_end(dir: &Path, args: &[&str]) -> String {
    let output = vibelux(dir, args).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the run failed:\n{log}");
    log
}

/// How a run was interrupted.
#[derive(Clone, Copy)]
pub enum Interruption {
    Kill,
    CtrlC,
}

/// Runs the pipeline, interrupting it after random delays, until a run ends by itself.
/// Returns how many runs were interrupted and every run's stderr.
pub fn run_interrupted(dir: &Path, args: &[&str], how: Interruption, seed: u64) -> (usize, String) {
    let mut random = Lcg(seed);
    let mut interrupted = 0;
    let mut logs = String::new();
    // Later runs get longer before they are interrupted, so that a slow machine finishes too.
    for run in 0..40 {
        let mut child = vibelux(dir, args).spawn().unwrap();
        let delay = Duration::from_millis(60 + random.below(500) + 200 * run);
        let started = Instant::now();
        let mut ended = None;
        while started.elapsed() < delay {
            if let Some(status) = child.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if ended.is_none() {
            let signal = match how {
                Interruption::Kill => "-KILL",
                Interruption::CtrlC => "-INT",
            };
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        logs.push_str(&log);
        match (ended, how) {
            (Some(status), _) => {
                assert!(status.success(), "a run failed:\n{log}");
                return (interrupted, logs);
            }
            (None, Interruption::CtrlC) => {
                assert!(output.status.success(), "a stopped run failed:\n{log}");
                interrupted += 1;
            }
            (None, Interruption::Kill) => interrupted += 1,
        }
    }
    panic!("the replay never finished:\n{logs}");
}

pub fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A folder with `pipeline` as `pipeline.sql`, names for three of four zones, and `rows`
/// readings.
pub fn folder_with(pipeline: &str, rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
    // Zone z3 has no name: its readings join nothing.
    std::fs::write(
        dir.path().join("zones.csv"),
        "zone,name\nz0,north\nz1,south\nz2,east\n",
    )
    .unwrap();
    write_input(dir.path(), rows, 1_717_200_000);
    dir
}

/// Starts a run and stops it cleanly (Ctrl-C) once it has stored a few checkpoints of its own,
/// mid-replay.
pub fn stop_mid_replay(dir: &Path, args: &[&str]) -> String {
    let before = super::crashes::newest_checkpoint(dir);
    let mut child = vibelux(dir, args).spawn().unwrap();
    let started = Instant::now();
    while super::crashes::newest_checkpoint(dir) < before + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the replay ended before it could be stopped"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the stopped run failed:\n{log}");
    assert!(log.contains("stopping"), "{log}");
    log
}
