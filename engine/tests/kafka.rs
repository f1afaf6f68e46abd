//! The Kafka source and sink against a real Kafka-compatible broker (Tansu), with
//! confluent-kafka (librdkafka's Python client) as the producing and consuming peer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crashes::{SENSOR_SECONDS, run_killed_between_checkpoints, write_sensor_readings};
use common::output::{json_lines, received, wait_for_lines, wait_for_received};
use common::start_engine;
use common::tansu::Tansu;

fn pipeline(bootstrap: &str, output: &Path) -> String {
    format!(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT, temp_c DOUBLE,
           part BIGINT, off BIGINT, k TEXT,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'kafka', brokers = '{bootstrap}', topic = 'readings',
               include = 'partition AS part, offset AS off, key AS k', allowed_lateness = '1 hour');
         CREATE SINK rows FROM readings WITH (connector = 'file', path = '{}');
         CREATE SINK errors FROM readings_errors WITH (connector = 'file', path = '{}');",
        output.display(),
        output.with_extension("errors.jsonl").display()
    )
}

#[test]
fn partitions_metadata_dead_letters_and_a_keyed_sink() {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    broker.peer(&["create", "readings", "3"]);
    broker.peer(&["create", "hot", "2"]);
    broker.peer(&["produce", "readings", "0", "3000"]);
    broker.peer(&[
        "produce-raw",
        "readings",
        r#"{"sensor_id":"s1","ts":"2026-06-01T00:00:00Z","temp_c":"warm"}"#,
    ]);
    // A byte a gateway garbled: `{"temp_c":2` then 0xff.
    let garbled: String = b"{\"temp_c\":2\xff}"
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    broker.peer(&["produce-hex", "readings", &garbled]);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("rows.jsonl");
    let mut engine = start_engine(&format!(
        "{}
         CREATE VIEW hot AS SELECT sensor_id, seq, temp_c FROM readings WHERE temp_c >= 29.9;
         CREATE SINK hot_out FROM hot WITH (connector = 'kafka', brokers = '{bootstrap}',
           topic = 'hot', key = '{{sensor_id}}', audit = 'hot_audit.jsonl');",
        pipeline(&bootstrap, &output)
    ));
    let rows = wait_for_lines(&output, 3000);
    let seen = received(&[&output]);
    assert_eq!(seen.len(), 3000);
    for (seq, temp) in &seen {
        assert!((temp - *seq as f64 / 100.0).abs() < 1e-9);
    }
    // Metadata: every row knows its partition and offset; a sensor's rows share a partition
    // (the producer keyed them), and offsets are dense per partition.
    let mut per_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut partition_of_sensor: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let part = row["part"].as_i64().unwrap();
        per_partition
            .entry(part)
            .or_default()
            .push(row["off"].as_i64().unwrap());
        let sensor = row["sensor_id"].as_str().unwrap().to_string();
        assert_eq!(row["k"].as_str().unwrap(), sensor);
        assert_eq!(*partition_of_sensor.entry(sensor).or_insert(part), part);
    }
    assert!(per_partition.len() > 1, "rows came from several partitions");
    let errors = wait_for_lines(&output.with_extension("errors.jsonl"), 2);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("field `temp_c`"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1]["reason"], "the payload is not UTF-8: invalid byte 0xff at byte 11",
        "{errors:?}"
    );
    assert_eq!(errors[1]["raw"], r#"{"temp_c":2\xff}"#, "{errors:?}");
    assert!(
        errors[0]["origin"]
            .as_str()
            .unwrap()
            .starts_with("kafka topic readings partition "),
        "{errors:?}"
    );
    // The sink's rows, read back by another client: keyed by sensor.
    let hot = broker.peer(&["consume", "hot", "10"]);
    let lines: Vec<&str> = hot.lines().collect();
    assert_eq!(lines.len(), 10, "{hot}");
    for line in lines {
        let (key, value) = line.split_once('\t').unwrap();
        let value: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(value["sensor_id"], key);
        assert!(value["seq"].as_i64().unwrap() >= 2990);
    }
    let log = engine.interrupt();
    assert!(log.contains("readings: 3000 rows, 2 dead letters"), "{log}");
    // Every delivery report is on record, with where the broker put the row.
    let audit = json_lines(&engine.dir.path().join("hot_audit.jsonl"));
    assert_eq!(audit.len(), 10, "{audit:?}");
    for line in &audit {
        assert_eq!(line["outcome"], "acknowledged", "{line}");
        assert!(line["offset"].as_i64().unwrap() >= 0, "{line}");
        assert!(line["row"]["seq"].as_i64().unwrap() >= 2990, "{line}");
    }
}

#[test]
fn a_restarted_engine_resumes_from_the_committed_offsets() {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    broker.peer(&["create", "readings", "2"]);
    broker.peer(&["produce", "readings", "0", "4000"]);
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first.jsonl");
    let second = out.path().join("second.jsonl");
    let mut engine = start_engine(&pipeline(&bootstrap, &first));
    wait_for_lines(&first, 4000);
    // Stopped as docker or Kubernetes stop it: cleanly, committing its offsets.
    let log = engine.terminate();
    assert!(log.contains("stopping: sources close"), "{log}");
    broker.peer(&["produce", "readings", "4000", "4000"]);
    let mut engine = start_engine(&pipeline(&bootstrap, &second));
    wait_for_received(&[&first, &second], 8000);
    engine.interrupt();
    // The second run started where the first stopped: nothing skipped, nothing read twice.
    let again = received(&[&second]);
    assert_eq!(
        again.len(),
        4000,
        "the second run read {} rows",
        again.len()
    );
    assert_eq!(*again.keys().next().unwrap(), 4000);
}

#[test]
fn a_broker_that_is_down_at_start_is_waited_for() {
    let port = common::tansu::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("rows.jsonl");
    let mut engine = start_engine(&pipeline(&bootstrap, &output));
    std::thread::sleep(Duration::from_secs(2));
    let broker = Tansu::start_on(port);
    broker.peer(&["create", "readings", "2"]);
    broker.peer(&["produce", "readings", "0", "1000"]);
    wait_for_received(&[&output], 1000);
    let log = engine.interrupt();
    assert!(log.contains("kafka consumer error; retrying"), "{log}");
}

#[test]
fn consumption_resumes_across_a_broker_restart_and_then_an_engine_restart() {
    let mut broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    broker.peer(&["create", "readings", "2"]);
    broker.peer(&["produce", "readings", "0", "3000"]);
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first.jsonl");
    let second = out.path().join("second.jsonl");
    let mut engine = start_engine(&pipeline(&bootstrap, &first));
    wait_for_lines(&first, 3000);
    // The broker dies and comes back (its data on disk); the engine keeps running.
    broker.restart(Duration::from_secs(1));
    broker.peer(&["produce", "readings", "3000", "3000"]);
    wait_for_received(&[&first], 6000);
    // Then the engine restarts: it resumes from the offsets the restarted broker holds.
    let log = engine.terminate();
    assert!(log.contains("stopping: sources close"), "{log}");
    broker.peer(&["produce", "readings", "6000", "2000"]);
    let mut engine = start_engine(&pipeline(&bootstrap, &second));
    wait_for_received(&[&first, &second], 8000);
    engine.interrupt();
    let again = received(&[&second]);
    assert_eq!(
        again.len(),
        2000,
        "the second run read {} rows",
        again.len()
    );
    assert_eq!(*again.keys().next().unwrap(), 6000);
}

#[test]
fn a_backlog_that_arrives_after_a_quiet_start_is_not_late() {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("rows.jsonl");
    // No topic yet, so no partition is assigned; a second of quiet must not let the watermark
    // follow the clock, or the backlog produced next (dated months ago) would all be late.
    let mut engine = start_engine(&format!(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'kafka', brokers = '{bootstrap}', topic = 'readings', idle_timeout = '1 second');
         CREATE SINK rows FROM readings WITH (connector = 'file', path = '{}');",
        output.display()
    ));
    std::thread::sleep(Duration::from_secs(3));
    broker.peer(&["create", "readings", "2"]);
    broker.peer(&["produce", "readings", "0", "2000"]);
    wait_for_lines(&output, 2000);
    let log = engine.interrupt();
    assert!(
        log.contains("readings: 2000 rows, 0 dead letters, 0 late"),
        "{log}"
    );
}

/// `vibelux run pipeline.sql` in `dir`, checkpointing (its own state directory there).
fn vibelux_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vibelux"));
    command
        .current_dir(dir)
        .args(["run", "pipeline.sql", "--http", "off"])
        .args(args)
        .stdout(Stdio::null());
    command
}

#[test]
fn a_kafka_source_killed_mid_stream_reads_every_message_exactly_once() {
    let broker = Tansu::start();
    broker.peer(&["create", "readings", "2"]);
    // 300 s of readings, 10 ms apart, 10 sensors: every 10 s window of a sensor has 100.
    broker.peer(&["produce", "readings", "0", "30000"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT,
               WATERMARK FOR ts AS ts - INTERVAL '1 second')
             WITH (connector = 'kafka', brokers = '{}', topic = 'readings',
                   \"properties.session.timeout.ms\" = '6000');
             CREATE VIEW sensor_windows AS
               SELECT sensor_id, window_start, count(*) AS n
               FROM TUMBLE(readings, ts, INTERVAL '10 seconds') GROUP BY sensor_id, window_start;
             CREATE SINK rows FROM readings WITH (connector = 'file', path = 'out/rows.jsonl');
             CREATE SINK windows FROM sensor_windows
               WITH (connector = 'file', path = 'out/windows.jsonl');",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let rows = dir.path().join("out/rows.jsonl");
    let windows = dir.path().join("out/windows.jsonl");
    let args = ["--checkpoint-interval", "50ms"];
    // Kill at different amounts read each time (a fixed sequence, so runs are repeatable).
    let amounts = [2_500, 6_000, 4_000, 7_000];
    let mut crashes = 0;
    // The client logs a lot: to a file, so that a full pipe never blocks the engine.
    let logged = |run: usize| {
        let log = std::fs::File::create(dir.path().join(format!("run-{run}.log"))).unwrap();
        let mut command = vibelux_in(dir.path(), &args);
        command.stderr(log);
        command
    };
    for (run, more) in amounts.into_iter().enumerate() {
        let mut child = logged(run).spawn().unwrap();
        // Kill it once it has read a little more.
        let before = json_lines(&rows).len();

        // A killed consumer's partitions are handed on when its session times out (6 s).
        let deadline = Instant::now() + Duration::from_secs(90);
        while json_lines(&rows).len() < (before + more).min(29_000) {
            assert!(
                Instant::now() < deadline,
                "the engine read nothing:\n{}",
                std::fs::read_to_string(dir.path().join(format!("run-{run}.log"))).unwrap()
            );
            assert!(child.try_wait().unwrap().is_none(), "the engine ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        crashes += 1;
        if before + more >= 29_000 {
            break;
        }
    }
    assert!(crashes >= 2);
    let mut child = logged(4).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while json_lines(&rows).len() < 30_000 || json_lines(&windows).len() < 300 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} rows and {} windows after the last restart:\n{}",
                json_lines(&rows).len(),
                json_lines(&windows).len(),
                std::fs::read_to_string(dir.path().join("run-4.log")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A moment for anything repeated to show.
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(dir.path().join("run-4.log")).unwrap()
    );
    let mut seqs: Vec<i64> = json_lines(&rows)
        .iter()
        .map(|row| row["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs.len(), 30_000, "rows read twice or lost");
    assert_eq!(seqs, (0..30_000).collect::<Vec<i64>>());
    let windows = json_lines(&windows);
    assert_eq!(windows.len(), 300, "windows written twice or lost");
    assert!(
        windows.iter().all(|window| window["n"] == 100),
        "{windows:?}"
    );
}

#[test]
fn a_kafka_sink_killed_mid_stream_delivers_every_row_at_least_once_with_stable_ids() {
    let broker = Tansu::start();
    broker.peer(&["create", "windows", "1"]);
    let dir = tempfile::tempdir().unwrap();
    // 200,000 readings of 10 sensors, 10 ms apart: 2,000 one-second windows of 10 per sensor.
    write_sensor_readings(dir.path(), 200_000);
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "{SENSOR_SECONDS}
             CREATE SINK out FROM sensor_seconds
               WITH (connector = 'kafka', brokers = '{}', topic = 'windows');",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let kills = run_killed_between_checkpoints(dir.path(), &["--checkpoint-interval", "50ms"]);
    assert!(kills >= 2, "only {kills} kills");
    let consumed = broker.peer(&["consume-ids", "windows"]);
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in consumed.lines() {
        let (id, value) = line.split_once('\t').unwrap();
        by_id
            .entry(id.to_string())
            .or_default()
            .push(value.to_string());
    }
    // Every window is there, once per id: a message sent again carries the same id and the
    // same row.
    assert_eq!(by_id.len(), 20_000, "{} distinct ids", by_id.len());
    assert!(by_id.keys().all(|id| id.len() == 16), "an id is missing");
    for (id, values) in &by_id {
        assert!(
            values.iter().all(|value| value == &values[0]),
            "{id}: {values:?}"
        );
        let window: serde_json::Value = serde_json::from_str(&values[0]).unwrap();
        assert_eq!(window["n"], 10, "{window}");
    }
    // How many were sent again depends on what was in flight at each kill.
    let total: usize = by_id.values().map(Vec::len).sum();
    eprintln!("{total} messages for 20000 windows after {kills} kills");
}

/// Two tables read from Kafka: a sensor registry keyed by the message key (tombstones delete),
/// and setpoints captured from a database as Debezium change events.
fn tables_pipeline(bootstrap: &str, out: &Path) -> String {
    format!(
        "CREATE TABLE registry (sensor_id TEXT, room TEXT, PRIMARY KEY (sensor_id))
           WITH (connector = 'kafka', brokers = '{bootstrap}', topic = 'registry',
                 include = 'key AS sensor_id');
         CREATE TABLE setpoints (zone TEXT, target_c DOUBLE, PRIMARY KEY (zone))
           WITH (connector = 'kafka', brokers = '{bootstrap}', topic = 'pg.public.setpoints',
                 format = 'debezium-json');
         CREATE VIEW rooms AS SELECT sensor_id, room FROM registry;
         CREATE VIEW targets AS SELECT zone, target_c FROM setpoints;
         CREATE SINK rooms_out FROM rooms WITH (connector = 'file', path = '{0}/rooms.jsonl');
         CREATE SINK targets_out FROM targets WITH (connector = 'file', path = '{0}/targets.jsonl');
         CREATE SINK errors_out FROM registry_errors
           WITH (connector = 'file', path = '{0}/errors.jsonl');",
        out.display()
    )
}

fn changes(path: &Path) -> Vec<String> {
    let mut changes: Vec<String> = json_lines(path).iter().map(|row| row.to_string()).collect();
    changes.sort();
    changes
}

#[test]
fn kafka_tables_delete_on_tombstones_and_debezium_deletes_and_reread_their_topics_on_restart() {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    broker.peer(&["create", "registry", "2"]);
    broker.peer(&["create", "pg.public.setpoints", "1"]);
    broker.peer(&[
        "produce-keyed",
        "registry",
        r#"s1={"room":"r1"}"#,
        r#"s2={"room":"r2"}"#,
        r#"s3={"room":"r3"}"#,
        // Neither key nor value: a deletion of nothing the table can name.
        "=",
    ]);
    broker.peer(&[
        "produce-keyed",
        "pg.public.setpoints",
        r#"{"zone":"z1"}={"before":null,"after":{"zone":"z1","target_c":21.0},"op":"r"}"#,
        // As the converter writes it with schemas enabled.
        r#"{"zone":"z2"}={"schema":{"type":"struct"},"payload":{"before":null,"after":{"zone":"z2","target_c":22.0},"op":"c"}}"#,
    ]);
    let first = tempfile::tempdir().unwrap();
    let mut engine = start_engine(&tables_pipeline(&bootstrap, first.path()));
    let rooms = first.path().join("rooms.jsonl");
    let targets = first.path().join("targets.jsonl");
    wait_for_lines(&rooms, 3);
    wait_for_lines(&targets, 2);
    let errors = wait_for_lines(&first.path().join("errors.jsonl"), 1);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no value for the key column `sensor_id`"),
        "{errors:?}"
    );
    assert_eq!(errors[0]["raw"], "a tombstone without a key", "{errors:?}");

    // s2 is retired, s1 moves; z1 is raised, z2 is deleted (with PostgreSQL's default replica
    // identity `before` holds the key alone), and Debezium's tombstone for compaction follows.
    broker.peer(&["produce-keyed", "registry", "s2=", r#"s1={"room":"r9"}"#]);
    broker.peer(&[
        "produce-keyed",
        "pg.public.setpoints",
        r#"{"zone":"z1"}={"before":{"zone":"z1","target_c":21.0},"after":{"zone":"z1","target_c":23.0},"op":"u"}"#,
        r#"{"zone":"z2"}={"before":{"zone":"z2"},"after":null,"op":"d"}"#,
        r#"{"zone":"z2"}="#,
    ]);
    wait_for_lines(&rooms, 6);
    wait_for_lines(&targets, 5);
    engine.interrupt();
    assert_eq!(
        changes(&rooms),
        [
            r#"{"_op":"delete","room":"r1","sensor_id":"s1"}"#,
            r#"{"_op":"delete","room":"r2","sensor_id":"s2"}"#,
            r#"{"_op":"insert","room":"r1","sensor_id":"s1"}"#,
            r#"{"_op":"insert","room":"r2","sensor_id":"s2"}"#,
            r#"{"_op":"insert","room":"r3","sensor_id":"s3"}"#,
            r#"{"_op":"insert","room":"r9","sensor_id":"s1"}"#,
        ]
    );
    assert_eq!(
        changes(&targets),
        [
            r#"{"_op":"delete","target_c":21,"zone":"z1"}"#,
            r#"{"_op":"delete","target_c":22,"zone":"z2"}"#,
            r#"{"_op":"insert","target_c":21,"zone":"z1"}"#,
            r#"{"_op":"insert","target_c":22,"zone":"z2"}"#,
            r#"{"_op":"insert","target_c":23,"zone":"z1"}"#,
        ]
    );
    assert_eq!(json_lines(&first.path().join("errors.jsonl")).len(), 1);

    // Without checkpoints a table commits no offsets: a new run reads its topics whole again
    // and holds what they say now.
    let second = tempfile::tempdir().unwrap();
    let mut engine = start_engine(&tables_pipeline(&bootstrap, second.path()));
    wait_for_lines(&second.path().join("rooms.jsonl"), 2);
    wait_for_lines(&second.path().join("targets.jsonl"), 1);
    wait_for_lines(&second.path().join("errors.jsonl"), 1);
    engine.interrupt();
    assert_eq!(
        changes(&second.path().join("rooms.jsonl")),
        [
            r#"{"_op":"insert","room":"r3","sensor_id":"s3"}"#,
            r#"{"_op":"insert","room":"r9","sensor_id":"s1"}"#,
        ]
    );
    assert_eq!(
        changes(&second.path().join("targets.jsonl")),
        [r#"{"_op":"insert","target_c":23,"zone":"z1"}"#]
    );
}

/// What the registry topic says after messages `0..count` (`produce-registry`): each key's
/// last message, a tombstone leaving no row.
fn registry_after(count: usize) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for i in 0..count {
        let key = format!("s{}", i % 500);
        match i % 7 {
            3 => rows.remove(&key),
            _ => rows.insert(key, format!("r{i}")),
        };
    }
    rows
}

/// Applies a change log a sink wrote; panics on a row inserted twice or deleted unheld.
fn applied(lines: &[serde_json::Value]) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for line in lines {
        let key = line["sensor_id"].as_str().unwrap().to_string();
        let room = line["room"].as_str().unwrap().to_string();
        match line["_op"].as_str().unwrap() {
            "insert" => assert!(rows.insert(key, room).is_none(), "{line} twice"),
            _ => assert_eq!(rows.remove(&key), Some(room), "{line} was not held"),
        }
    }
    rows
}

#[test]
fn a_kafka_table_killed_while_it_loads_and_after_holds_what_its_topic_says() {
    let broker = Tansu::start();
    broker.peer(&["create", "registry", "2"]);
    broker.peer(&["produce-registry", "registry", "0", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE TABLE registry (sensor_id TEXT, room TEXT, PRIMARY KEY (sensor_id))
             WITH (connector = 'kafka', brokers = '{}', topic = 'registry',
                   include = 'key AS sensor_id', \"properties.session.timeout.ms\" = '6000');
             CREATE VIEW rooms AS SELECT sensor_id, room FROM registry;
             CREATE SINK rooms_out FROM rooms WITH (connector = 'file', path = 'out/rooms.jsonl');",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let rooms = dir.path().join("out/rooms.jsonl");
    let run = |run: usize| {
        let log = std::fs::File::create(dir.path().join(format!("run-{run}.log"))).unwrap();
        let mut command = vibelux_in(dir.path(), &["--checkpoint-interval", "50ms"]);
        command.stderr(log).spawn().unwrap()
    };
    let log = |run: usize| std::fs::read_to_string(dir.path().join(format!("run-{run}.log")));
    // Killed a moment after it starts: most likely while it loads the topic.
    let mut child = run(0);
    std::thread::sleep(Duration::from_millis(1500));

    child.kill().unwrap();
    child.wait().unwrap();
    // Restarted, it applies the load; more changes arrive, and it is killed among them.
    let mut child = run(1);

    let deadline = Instant::now() + Duration::from_secs(90);
    while applied(&json_lines(&rooms)) != registry_after(20_000) {
        assert!(Instant::now() < deadline, "{:?}", log(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.peer(&["produce-registry", "registry", "20000", "20000"]);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // The last run ends with the table the whole topic says, each change written once. (Its
    // sink cuts what the killed run wrote after its last checkpoint as it opens: its first
    // progress line comes after.)
    let mut child = run(2);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !log(2).unwrap_or_default().contains("rooms_out:") {
        assert!(Instant::now() < deadline, "{:?}", log(2));
        std::thread::sleep(Duration::from_millis(50));
    }
    while applied(&json_lines(&rooms)) != registry_after(40_000) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{:?}", log(2));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "{:?}", log(2));
    assert_eq!(applied(&json_lines(&rooms)), registry_after(40_000));
}
