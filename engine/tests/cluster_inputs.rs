//! What each kind of input does in a cluster of processes: Kafka partitions dealt over every
//! process's workers, an MQTT shared subscription, Modbus devices polled from one process, a
//! tailed table read on process 0, and the sources that are refused.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{
    Processes, all_succeeded, exit_statuses, kill_once, logs_of, start_checkpointed_cluster,
    start_serving_cluster, stop_cleanly, vibelux, write_hosts,
};
use common::crashes::write_sensor_readings;
use common::mosquitto::{Mosquitto, counting_folder, start_publisher, wait_for_acks};

#[test]
fn a_cluster_reading_kafka_partitions_killed_a_process_at_a_time_reads_each_message_once() {
    let broker = common::tansu::Tansu::start();
    broker.peer(&["create", "readings", "4"]);
    // 200 s of readings, 10 ms apart, 10 sensors keyed over the partitions: every 10 s window
    // of a sensor has 100.
    broker.peer(&["produce", "readings", "0", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT,
               part BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1 second')
             WITH (connector = 'kafka', brokers = '{}', topic = 'readings',
                   include = 'partition AS part');
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
    let read = || common::output::json_lines(&rows).len();
    // Killed twice, process 1 then process 0, each time once a few more rows were read.
    for (round, more) in [(0, 3_000), (1, 5_000)] {
        let name = format!("kafka-{round}");
        let mut children = Processes(start_checkpointed_cluster(dir.path(), &name));
        let before = read();
        kill_once(dir.path(), &name, &mut children, 1 - round, || {
            read() >= before + more
        });
    }
    let name = "kafka-last";
    let mut children = Processes(start_checkpointed_cluster(dir.path(), name));
    let deadline = Instant::now() + Duration::from_secs(90);
    while read() < 20_000 || common::output::json_lines(&windows).len() < 200 {
        assert!(
            Instant::now() < deadline,
            "{} rows after the last restart:\n{}",
            read(),
            logs_of(dir.path(), name)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A moment for anything repeated to show, then a stop of one process stops both.
    std::thread::sleep(Duration::from_millis(500));
    stop_cleanly(dir.path(), name, &mut children, 1);
    let rows = common::output::json_lines(&rows);
    let mut seqs: Vec<i64> = rows
        .iter()
        .map(|row| row["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs.len(), 20_000, "rows read twice or lost");
    assert_eq!(seqs, (0..20_000).collect::<Vec<i64>>());
    let windows = common::output::json_lines(&windows);
    assert_eq!(windows.len(), 200, "windows written twice or lost");
    assert!(
        windows.iter().all(|window| window["n"] == 100),
        "{windows:?}"
    );
    // Every partition was read (by the worker of one process or the other).
    let mut partitions: Vec<i64> = rows
        .iter()
        .map(|row| row["part"].as_i64().unwrap())
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    assert_eq!(partitions, [0, 1, 2, 3]);
}

/// Each process's client joins one shared subscription, so the broker hands each message to one
/// process; killed a process at a time while the messages stream in, the cluster loses none
/// it acknowledged, and each process resumes from its own journal.
#[test]
fn a_cluster_shares_an_mqtt_subscription_and_killed_a_process_at_a_time_loses_no_message() {
    const COUNT: usize = 8_000;
    let broker = Mosquitto::start();
    let (dir, rows) = counting_folder(broker.port);
    let read = || common::output::json_lines(&rows).len();
    let subscribed = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(0..2).all(|process| {
            std::fs::read_to_string(dir.path().join(format!("{name}-{process}.log")))
                .is_ok_and(|log| log.contains("mqtt subscribed"))
        }) {
            assert!(
                Instant::now() < deadline,
                "{name} did not subscribe:\n{}",
                logs_of(dir.path(), name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut children = Processes(start_checkpointed_cluster(dir.path(), "mqtt-0"));
    subscribed("mqtt-0");
    let (mut publisher, acks) = start_publisher(broker.port, COUNT, 1_000);
    // Killed twice, process 1 then process 0, each time once the cluster stored a checkpoint
    // and a few more rows were read after it; the publisher goes on meanwhile, and the broker
    // keeps what it takes for the sessions away.
    let state = dir.path().join("state");
    for (round, more) in [(0, 1_000), (1, 1_000)] {
        let name = format!("mqtt-{round}");
        let wanted = common::crashes::newest_checkpoint_in(&state) + 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::crashes::newest_checkpoint_in(&state) < wanted {
            assert!(
                Instant::now() < deadline,
                "{name} stored no checkpoint:\n{}",
                logs_of(dir.path(), &name)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = read();
        kill_once(dir.path(), &name, &mut children, 1 - round, || {
            read() >= before + more
        });
        let next = format!("mqtt-{}", round + 1);
        children = Processes(start_checkpointed_cluster(dir.path(), &next));
        subscribed(&next);
    }
    wait_for_acks(&acks, COUNT);
    assert!(publisher.wait().unwrap().success());
    let seqs = || -> Vec<i64> {
        let lines = common::output::json_lines(&rows);
        lines
            .iter()
            .map(|row| row["seq"].as_i64().unwrap())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while seqs()
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < COUNT
    {
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT} messages:\n{}",
            read(),
            logs_of(dir.path(), "mqtt-2")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop_cleanly(dir.path(), "mqtt-2", &mut children, 0);
    let seqs = seqs();
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), COUNT, "messages lost");
    // A message journaled whose acknowledgement a kill cut off comes again (QoS 1 is at least
    // once): at most the broker's in-flight window (100) per client and kill.
    assert!(
        seqs.len() - COUNT <= 2 * 100,
        "{} repeated",
        seqs.len() - COUNT
    );
    // Both processes received messages, each into its own journal.
    for process in 0..2 {
        let journal = dir
            .path()
            .join(format!("state/sources/readings/journal-{process}"));
        let bytes: u64 = std::fs::read_dir(&journal)
            .unwrap_or_else(|error| panic!("{}: {error}", journal.display()))
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum();
        assert!(bytes > 0, "process {process} journaled nothing");
    }
    let resumed = logs_of(dir.path(), "mqtt-2");
    assert!(resumed.contains("resuming from checkpoint"), "{resumed}");
    // One process of two workers cannot replay the processes' journals: refused, and said.
    let output = vibelux(dir.path(), &["--state", "state", "--workers", "2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("taken by 2 process(es) with 2 worker(s) in all, and this run has 1 with 2")
            && log.contains("resumes only with the same processes and workers"),
        "{log}"
    );
}

/// Every process of a cluster starts every source; a PLC is polled by the one process that
/// runs its device's worker, and its rows are the same as one process would read.
#[test]
fn a_cluster_polls_each_plc_from_one_process_only() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tags = repo.join("examples/plc/room1.toml");
    let devices = ["room1", "room2", "room3", "room4"];
    let pipeline: String = devices
        .iter()
        .map(|device| {
            format!(
                "CREATE SOURCE {device} (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE,
                   quality TEXT, WATERMARK FOR ts AS ts)
                   WITH (connector = 'modbus', simulate = 'true', tags = '{}', device = '{device}',
                         poll_interval = '100ms');
                 CREATE SINK {device}_rows FROM {device}
                   WITH (connector = 'file', path = 'out/{device}.jsonl');\n",
                tags.display()
            )
        })
        .collect();
    std::fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
    // Long enough for two debug builds to start and connect on a busy machine.
    let (http, children) = start_serving_cluster(dir.path(), "12s", Some("modbus"));
    let mut children = Processes(children);
    // Which processes are connected to each device, once every device is polled.
    let connected_in = |process: usize| -> Vec<String> {
        let answer = common::request(
            &format!("127.0.0.1:{}", http[process]),
            "GET",
            "/metrics",
            &[],
            None,
        );
        answer
            .body
            .lines()
            .filter_map(|line| line.strip_prefix("vibelux_source_connected{source=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter(|(_, value)| value.trim().parse::<f64>() == Ok(1.0))
            .map(|(source, _)| source.to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, second) = loop {
        let (first, second) = (connected_in(0), connected_in(1));
        if first.len() + second.len() >= devices.len() || Instant::now() > deadline {
            break (first, second);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for device in devices {
        let polling = [&first, &second]
            .iter()
            .filter(|connected| connected.iter().any(|source| source == device))
            .count();
        assert_eq!(
            polling, 1,
            "{device}: process 0 polls {first:?}, process 1 {second:?}"
        );
    }
    assert!(
        !first.is_empty() && !second.is_empty(),
        "the devices were not spread over the processes: {first:?} / {second:?}"
    );
    let statuses = exit_statuses(&mut children.0, "modbus", dir.path(), "modbus");
    assert!(all_succeeded(&statuses), "{statuses:?}");
    // Each device's rows once: one poller, one reading per tag and poll.
    for device in devices {
        let path = dir.path().join("out").join(format!("{device}.jsonl"));
        let rows = common::output::json_lines(&path);
        assert!(rows.len() > 20, "{device}: {} rows", rows.len());
        let mut seen = std::collections::HashSet::new();
        for row in &rows {
            assert_eq!(row["device"], device);
            let key = (row["tag"].to_string(), row["ts"].to_string());
            assert!(seen.insert(key), "{device}: a reading twice: {row}");
        }
    }
}

/// The rows per room that a changelog of `(room, n)` leaves, replayed in order.
fn rooms_in(path: &Path) -> std::collections::BTreeMap<String, i64> {
    let mut rooms = std::collections::BTreeMap::new();
    for change in common::output::json_lines(path) {
        let room = change["room"].as_str().unwrap().to_string();
        let n = change["n"].as_i64().unwrap();
        match change["_op"].as_str() {
            Some("insert") => {
                rooms.insert(room, n);
            }
            _ => {
                if rooms.get(&room) == Some(&n) {
                    rooms.remove(&room);
                }
            }
        }
    }
    rooms
}

/// A tailed table is read on process 0 and joined with readings every process reads; an edit
/// to it moves what it derived, whichever process read the readings.
#[test]
fn a_tailed_table_joins_readings_read_by_every_process_and_its_edits_apply() {
    let dir = tempfile::tempdir().unwrap();
    write_sensor_readings(dir.path(), 20_000);
    let sensors = dir.path().join("sensors.csv");
    let rows: String = (0..10)
        .map(|sensor| format!("s{sensor},{}\n", if sensor < 5 { "a" } else { "b" }))
        .collect();
    std::fs::write(&sensors, format!("sensor_id,room\n{rows}")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = 'in.jsonl');
         CREATE TABLE sensors (sensor_id TEXT, room TEXT, PRIMARY KEY (sensor_id))
           WITH (connector = 'file', path = 'sensors.csv', mode = 'tail');
         CREATE VIEW per_room AS
           SELECT s.room, count(*) AS n FROM readings r JOIN sensors s ON r.sensor_id = s.sensor_id
           GROUP BY s.room;
         CREATE SINK rooms FROM per_room WITH (connector = 'file', path = 'out/rooms.jsonl');",
    )
    .unwrap();
    write_hosts(dir.path(), 2);
    let _processes = Processes(
        (0..2)
            .map(|process| {
                let log = std::fs::File::create(dir.path().join(format!("table-{process}.log")));
                vibelux(dir.path(), &["--workers", "1", "--hosts", "hosts"])
                    .env("VIBELUX_PROCESS", process.to_string())
                    .stderr(log.unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let changes = dir.path().join("out/rooms.jsonl");
    let wait_for_rooms = |expected: &[(&str, i64)]| {
        let expected: std::collections::BTreeMap<String, i64> = expected
            .iter()
            .map(|(room, n)| (room.to_string(), *n))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rooms = rooms_in(&changes);
            if rooms == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rooms {rooms:?}, expected {expected:?}\n{}",
                logs_of(dir.path(), "table")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Half the readings were read by each process; every one found its sensor's room.
    wait_for_rooms(&[("a", 10_000), ("b", 10_000)]);
    // s0 moves to room b: its 2,000 readings move with it.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&sensors)
        .unwrap();
    std::io::Write::write_all(&mut file, b"s0,b\n").unwrap();
    wait_for_rooms(&[("a", 8_000), ("b", 12_000)]);
}
