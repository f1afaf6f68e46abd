//! End-to-end: files as they are in the field — a garbled byte, rotated logs, a table saved over
//! by an editor, a file that cannot be read. Every line arrives once, as a row or a dead letter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vibelux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vibelux"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A JSON reading from sensor `s<index>`, `index` seconds after the start of 2026-06-01.
fn json_reading(index: usize) -> Vec<u8> {
    json_reading_at(index, 1_780_272_000_000 + index as u64 * 1000)
}

fn json_reading_at(index: usize, millis: u64) -> Vec<u8> {
    format!("{{\"sensor_id\":\"s{index}\",\"ts\":{millis},\"temp_c\":21.5}}\n").into_bytes()
}

fn csv_reading(index: usize) -> Vec<u8> {
    format!(
        "s{index},2026-06-01 {:02}:{:02}:{:02},21.5\n",
        index / 3600,
        index / 60 % 60,
        index % 60
    )
    .into_bytes()
}

/// A pipeline that writes the source's rows, dead letters and late rows to three files.
fn write_pipeline(dir: &Path, path: &str, options: &str) -> PathBuf {
    let sql = dir.join("pipeline.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
               WATERMARK FOR ts AS ts - INTERVAL '1 hour')
             WITH (connector = 'file', path = '{path}', {options});
             CREATE SINK rows FROM readings WITH (connector = 'file', path = 'out/rows.jsonl');
             CREATE SINK errors FROM readings_errors WITH (connector = 'file', path = 'out/errors.jsonl');
             CREATE SINK late FROM readings_late WITH (connector = 'file', path = 'out/late.jsonl');"
        ),
    )
    .unwrap();
    sql
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn replay(dir: &Path, workers: &str) -> Output {
    vibelux()
        .current_dir(dir)
        .args([
            "run",
            "--http",
            "off",
            "--no-state",
            "--workers",
            workers,
            "pipeline.sql",
        ])
        .output()
        .unwrap()
}

#[test]
fn a_garbled_byte_is_one_dead_letter_and_the_replay_reads_every_other_line() {
    for (format, header, reading) in [
        ("json", "", json_reading as fn(usize) -> Vec<u8>),
        ("csv", "sensor_id,ts,temp_c\n", csv_reading),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header.as_bytes().to_vec();
        let mut garbled_at = 0;
        for index in 1..=1001 {
            let mut line = reading(index);
            if index == 11 {
                line[3] = 0xff;
                garbled_at = bytes.len();
            }
            bytes.extend_from_slice(&line);
        }
        std::fs::write(dir.path().join("in.txt"), bytes).unwrap();
        write_pipeline(dir.path(), "in.txt", &format!("format = '{format}'"));
        for workers in ["1", "2"] {
            let output = replay(dir.path(), workers);
            assert!(output.status.success(), "{}", text(&output));
            assert_eq!(lines_of(&dir.path().join("out/rows.jsonl")).len(), 1000);
            let errors = lines_of(&dir.path().join("out/errors.jsonl"));
            assert_eq!(errors.len(), 1, "{format}: {errors:?}");
            // Two workers each read their own stripes of the file, and still name the line.
            let origin = if header.is_empty() {
                "in.txt:11"
            } else {
                "in.txt:12"
            };
            assert!(
                errors[0].contains("invalid byte 0xff at byte 3 of the line")
                    && errors[0].contains(r"\\xff")
                    && errors[0].contains(origin)
                    && errors[0].contains(&format!("byte {}", garbled_at + 3)),
                "{format}: {}",
                errors[0]
            );
            assert!(
                text(&output).contains("readings: 1000 rows, 1 dead letters"),
                "{}",
                text(&output)
            );
        }
    }
}

/// A small deterministic generator, so the mutations are the same on every run.
struct Mutations(u64);

impl Mutations {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn half_the_lines_mutated_at_random_still_give_one_record_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = 4000;
    let mut random = Mutations(16);
    let mut bytes = Vec::new();
    for index in 0..lines {
        let mut line = json_reading(index);
        if random.next().is_multiple_of(2) {
            let at = random.next() as usize % (line.len() - 1);
            let byte = (random.next() % 255) as u8;
            line[at] = if byte == b'\n' { 0xff } else { byte };
        }
        bytes.extend_from_slice(&line);
    }
    std::fs::write(dir.path().join("in.jsonl"), bytes).unwrap();
    write_pipeline(dir.path(), "in.jsonl", "format = 'json'");
    for workers in ["1", "2"] {
        let output = replay(dir.path(), workers);
        assert!(output.status.success(), "{}", text(&output));
        let rows = lines_of(&dir.path().join("out/rows.jsonl")).len();
        let errors = lines_of(&dir.path().join("out/errors.jsonl")).len();
        let late = lines_of(&dir.path().join("out/late.jsonl")).len();
        assert!(errors > lines / 4, "only {errors} dead letters");
        assert_eq!(
            rows + errors + late,
            lines,
            "{workers} workers: {rows} rows, {errors} dead letters, {late} late"
        );
    }
}

#[test]
fn a_replay_that_cannot_read_its_file_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A directory opens like a file, and every read of it fails, as a disk error would.
    std::fs::create_dir(dir.path().join("in.jsonl")).unwrap();
    write_pipeline(dir.path(), "in.jsonl", "format = 'json'");
    let output = replay(dir.path(), "1");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("source readings could not be read to its end: reading in.jsonl"),
        "{}",
        text(&output)
    );
}

/// A running engine; killed when dropped.
struct Running(Child);

impl Running {
    fn start(dir: &Path) -> Running {
        Running::start_with(dir, 1)
    }

    fn start_with(dir: &Path, workers: usize) -> Running {
        Running(
            vibelux()
                .current_dir(dir)
                .args(["run", "--http", "off", "pipeline.sql", "--workers"])
                .arg(workers.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Stops it as Ctrl-C does; returns what it printed.
    fn interrupt(mut self) -> String {
        Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .unwrap();
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output));
        text(&output)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` has at least `count` lines; returns them.
fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = lines_of(path);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} lines in {}, have {}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Readings timed now: a tailed source's watermark follows the clock while it is idle.
fn readings(range: std::ops::Range<usize>) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    range
        .flat_map(|index| json_reading_at(index, now))
        .collect()
}

#[test]
fn a_tailed_file_rotated_then_copytruncated_while_running_yields_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.jsonl");
    std::fs::write(&live, readings(0..100)).unwrap();
    write_pipeline(dir.path(), "live.jsonl", "mode = 'tail'");
    // Two workers: the followed file is read once, by the first, whatever happens to it.
    let engine = Running::start_with(dir.path(), 2);
    let rows = dir.path().join("out/rows.jsonl");
    wait_for_lines(&rows, 100);

    // A garbled line appended while running: one dead letter, and reading goes on.
    let mut garbled = readings(100..101);
    garbled[5] = 0xfe;
    append(&live, &garbled);
    append(&live, &readings(101..150));
    wait_for_lines(&rows, 149);

    // logrotate's default: move the file away, a new one at the path.
    std::fs::rename(&live, dir.path().join("live.jsonl.1")).unwrap();
    std::fs::write(&live, readings(150..250)).unwrap();
    wait_for_lines(&rows, 249);

    // copytruncate: copy, then empty the same file in place, and the writer carries on.
    std::fs::copy(&live, dir.path().join("live.jsonl.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(&live, &readings(250..400));
    let written = wait_for_lines(&rows, 399);
    std::thread::sleep(Duration::from_millis(500));
    let log = engine.interrupt();

    let written = lines_of(&rows).len().max(written.len());
    assert_eq!(written, 399, "{log}");
    let mut sensors: Vec<String> = lines_of(&rows)
        .iter()
        .map(|line| line.split('"').nth(3).unwrap().to_string())
        .collect();
    sensors.sort();
    sensors.dedup();
    assert_eq!(sensors.len(), 399, "a line was read twice");
    let errors = lines_of(&dir.path().join("out/errors.jsonl"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(r"\\xfe"), "{}", errors[0]);
    assert!(log.contains("the file was replaced"), "{log}");
}

#[test]
fn a_table_file_saved_over_by_rename_updates_the_joins_that_read_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("readings.jsonl"),
        "{\"sensor_id\":\"s1\",\"zone\":\"z1\",\"ts\":\"2026-06-01T00:00:05Z\",\"temp_c\":23.0}\n\
         {\"sensor_id\":\"s2\",\"zone\":\"z2\",\"ts\":\"2026-06-01T00:00:06Z\",\"temp_c\":25.0}\n\
         {\"sensor_id\":\"s3\",\"zone\":\"z3\",\"ts\":\"2026-06-01T00:00:07Z\",\"temp_c\":27.0}\n",
    )
    .unwrap();
    let setpoints = dir.path().join("setpoints.csv");
    std::fs::write(&setpoints, "zone,target_c\nz1,20\nz2,20\n").unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = 'readings.jsonl');
         CREATE TABLE setpoints (zone TEXT, target_c DOUBLE, PRIMARY KEY (zone))
           WITH (connector = 'file', path = 'setpoints.csv', mode = 'tail');
         CREATE VIEW deviation AS
           SELECT r.sensor_id, r.temp_c - s.target_c AS deviation FROM readings r JOIN setpoints s ON r.zone = s.zone;
         CREATE SINK changes FROM deviation WITH (connector = 'file', path = 'out/deviation.jsonl');",
    )
    .unwrap();
    let engine = Running::start(dir.path());
    let sink = dir.path().join("out/deviation.jsonl");
    wait_for_lines(&sink, 2);

    // Saved as editors and `sed -i` save: a new file renamed over the old one. z1 changes, z2
    // is gone, z3 is new.
    let edited = dir.path().join("setpoints.csv.tmp");
    std::fs::write(&edited, "zone,target_c\nz1,22\nz3,25\n").unwrap();
    std::fs::rename(&edited, &setpoints).unwrap();
    wait_for_lines(&sink, 6);
    // Lines appended to the new file after the edit apply too.
    append(&setpoints, b"z2,21\n");
    let changes = wait_for_lines(&sink, 7).join("\n");
    engine.interrupt();
    for change in [
        r#"{"_op":"insert","sensor_id":"s1","deviation":3}"#,
        r#"{"_op":"insert","sensor_id":"s2","deviation":5}"#,
        r#"{"_op":"delete","sensor_id":"s1","deviation":3}"#,
        r#"{"_op":"insert","sensor_id":"s1","deviation":1}"#,
        r#"{"_op":"delete","sensor_id":"s2","deviation":5}"#,
        r#"{"_op":"insert","sensor_id":"s3","deviation":2}"#,
        r#"{"_op":"insert","sensor_id":"s2","deviation":4}"#,
    ] {
        assert!(changes.contains(change), "missing {change} in\n{changes}");
    }
    assert_eq!(changes.lines().count(), 7, "{changes}");
}

#[test]
fn a_tailed_table_does_not_hold_back_windows_of_a_simulation_running_ahead_of_the_clock() {
    // At 600×, simulated time leaves the wall clock behind within a second: the table must
    // follow the data's time, or no window after the wall clock would ever close.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("setpoints.csv"),
        "room,target_c\nr01,24\nr02,25\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT, room TEXT, ts TIMESTAMP, temp_c DOUBLE,
                                 WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
           WITH (connector = 'simulator', rooms = '2', interval = '10 seconds', speed = '600x', seed = '3');
         CREATE TABLE setpoints (room TEXT, target_c DOUBLE, PRIMARY KEY (room))
           WITH (connector = 'file', path = 'setpoints.csv', mode = 'tail');
         CREATE VIEW deviation AS
           SELECT r.room, window_start, avg(r.temp_c - s.target_c) AS deviation
           FROM TUMBLE(readings, ts, INTERVAL '1 minute') AS r JOIN setpoints s ON r.room = s.room
           GROUP BY r.room, window_start;
         CREATE SINK minutes FROM deviation WITH (connector = 'file', path = 'out/minutes.jsonl');",
    )
    .unwrap();
    let engine = Running::start(dir.path());
    // Forty simulated minutes take four seconds; two rooms close a window each a minute.
    let minutes = wait_for_lines(&dir.path().join("out/minutes.jsonl"), 80);
    engine.interrupt();
    assert!(
        minutes.iter().any(|line| line.contains("\"room\":\"r02\"")),
        "{minutes:?}"
    );
}

#[test]
fn a_tailed_table_is_loaded_before_the_readings_it_joins_are_counted() {
    // A replay reads thousands of readings in the time the table takes to load: they must not
    // meet an empty table, nor their windows close before the join's pairs reach them.
    let dir = tempfile::tempdir().unwrap();
    let readings: String = (0..20_000)
        .map(|i: i64| {
            let ts = chrono::DateTime::from_timestamp_millis(1_780_000_000_000 + 10 * i)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            format!("{{\"sensor_id\":\"s{}\",\"ts\":\"{ts}\"}}\n", i % 10)
        })
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), readings).unwrap();
    let sensors: String = (0..10)
        .map(|s| format!("s{s},{}\n", if s < 5 { "a" } else { "b" }))
        .collect();
    std::fs::write(
        dir.path().join("sensors.csv"),
        format!("sensor_id,room\n{sensors}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = 'in.jsonl');
         CREATE TABLE sensors (sensor_id TEXT, room TEXT, PRIMARY KEY (sensor_id))
           WITH (connector = 'file', path = 'sensors.csv', mode = 'tail');
         CREATE VIEW per_room AS SELECT s.room, window_start, count(*) AS n
           FROM TUMBLE(readings, ts, INTERVAL '10 seconds') r JOIN sensors s ON r.sensor_id = s.sensor_id
           GROUP BY s.room, window_start;
         CREATE SINK rooms FROM per_room WITH (connector = 'file', path = 'out/rooms.jsonl');",
    )
    .unwrap();
    let engine = Running::start_with(dir.path(), 2);
    // 200 s of readings: 20 windows per room, every one of 500 readings.
    wait_for_lines(&dir.path().join("out/rooms.jsonl"), 40);
    engine.interrupt();
    let windows = lines_of(&dir.path().join("out/rooms.jsonl"));
    assert_eq!(windows.len(), 40, "{windows:?}");
    assert!(
        windows.iter().all(|window| window.contains("\"n\":500")),
        "{windows:?}"
    );
}

#[test]
fn a_second_engine_writing_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("live.jsonl"), readings(0..5)).unwrap();
    write_pipeline(dir.path(), "live.jsonl", "mode = 'tail'");
    let first = Running::start(dir.path());
    wait_for_lines(&dir.path().join("out/rows.jsonl"), 5);
    let second = replay(dir.path(), "1");
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("another process or sink is writing this file"),
        "{}",
        text(&second)
    );
    // The first engine's output is intact.
    assert_eq!(lines_of(&dir.path().join("out/rows.jsonl")).len(), 5);
    first.interrupt();
}
