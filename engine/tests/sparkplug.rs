//! The Sparkplug B source as a host application, against a real Mosquitto broker and an edge
//! node built on pysparkplug (payloads generated from the published `sparkplug_b.proto`) and
//! Eclipse Paho: births, data by alias, a lost message answered by a rebirth request, historical
//! values, a device death, the broker's will marking the node's series stale, bad payloads.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::crashes::newest_checkpoint;
use common::mosquitto::Mosquitto;
use common::output::{json_lines, wait_for_lines};
use common::start_engine;
use serde_json::Value;

/// The edge node (`tests/peers/sparkplug_node.py`), driven a command at a time.
struct EdgeNode {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl EdgeNode {
    fn start(port: u16) -> EdgeNode {
        EdgeNode::start_with(port, &[])
    }

    /// A node that follows a primary host's STATE (store and forward while it is offline).
    fn start_with(port: u16, extra: &[&str]) -> EdgeNode {
        let python = std::env::var("VIBELUX_SPARKPLUG_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sparkplug_node.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([&port.to_string(), "greenhouse", "gw1"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs (scripts/test.sh installs pysparkplug and sets VIBELUX_SPARKPLUG_PYTHON)");
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        EdgeNode {
            child,
            stdin,
            lines,
        }
    }

    fn expect(&self, wanted: &str) {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("the edge node did not say {wanted:?}"));
            if line == wanted {
                return;
            }
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        let word = command.split_whitespace().next().unwrap();
        self.expect(&format!("ok {word}"));
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(row: &Value) -> String {
    format!(
        "{} {}/{} {} {} {} {} {}",
        row["message_type"].as_str().unwrap_or("?"),
        row["edge_node"].as_str().unwrap_or("?"),
        row["device"].as_str().unwrap_or("-"),
        row["metric"].as_str().unwrap_or("?"),
        row["value"],
        row["datatype"].as_str().unwrap_or("?"),
        row["quality"].as_str().unwrap_or("?"),
        if row["historical"] == Value::Bool(true) {
            "historical"
        } else {
            "live"
        },
    )
}

#[test]
fn a_host_reads_births_data_by_alias_rebirths_after_a_gap_and_marks_deaths_stale() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut engine = start_engine(&format!(
        "CREATE SOURCE plant (group_id TEXT, edge_node TEXT, device TEXT, metric TEXT,
           value DOUBLE, value_text TEXT, datatype TEXT, ts TIMESTAMP, quality TEXT,
           historical BOOLEAN, message_type TEXT,
           WATERMARK FOR ts AS ts - INTERVAL '1 hour')
         WITH (connector = 'sparkplug', url = '{url}', group = 'greenhouse', host_id = 'vibelux-test');
         CREATE SINK rows FROM plant WITH (connector = 'file', path = 'rows.jsonl');
         CREATE SINK errors FROM plant_errors WITH (connector = 'file', path = 'errors.jsonl');"
    ));
    engine.wait_for_log("mqtt subscribed", 1);
    let dir = engine.dir.path().to_path_buf();
    let rows_file = dir.join("rows.jsonl");

    // The host announced itself (retained), as Sparkplug 3.0 edge nodes expect.
    let state = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "spBv1.0/STATE/vibelux-test", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    let state: Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["online"], Value::Bool(true));

    let mut node = EdgeNode::start(broker.port);
    node.send("connect");
    let births = wait_for_lines(&rows_file, 7);
    let births: Vec<String> = births.iter().map(summary).collect();
    assert_eq!(
        births,
        [
            "NBIRTH gw1/- temp 21.5 Float good live",
            "NBIRTH gw1/- rh 60.25 Double good live",
            "NBIRTH gw1/- fan 1 Boolean good live",
            "NBIRTH gw1/- offset -3 Int32 good live",
            "NBIRTH gw1/- mode null String good live",
            "DBIRTH gw1/room1 co2 900 UInt16 good live",
            "DBIRTH gw1/room1 temp 22 Float good live",
        ]
    );
    let mode = &json_lines(&rows_file)[4];
    assert_eq!(mode["value_text"], "auto");
    assert_eq!(mode["group_id"], "greenhouse");

    // Data by alias only, read through the births.
    node.send("data temp=22.5 offset=-4");
    node.send("ddata co2=950");
    let rows = wait_for_lines(&rows_file, 10);
    let data: Vec<String> = rows[7..].iter().map(summary).collect();
    assert_eq!(
        data,
        [
            "NDATA gw1/- temp 22.5 Float good live",
            "NDATA gw1/- offset -4 Int32 good live",
            "DDATA gw1/room1 co2 950 UInt16 good live",
        ]
    );

    // A lost message: the data after it is still read, and the host asks for a rebirth, which
    // the node answers with its births.
    node.send("skip");
    node.send("data temp=23");
    node.expect("rebirth");
    let rows = wait_for_lines(&rows_file, 18);
    assert_eq!(summary(&rows[10]), "NDATA gw1/- temp 23 Float good live");
    assert!(
        rows[11..18]
            .iter()
            .all(|row| row["message_type"].as_str().unwrap().ends_with("BIRTH"))
    );
    engine.wait_for_log("asked the node to rebirth", 1);

    // A historical value keeps its own time; a quality property is read.
    node.send("historical temp=19.5 600");
    node.send("quality temp=24 500");
    let rows = wait_for_lines(&rows_file, 20);
    assert_eq!(
        summary(&rows[18]),
        "NDATA gw1/- temp 19.5 Float good historical"
    );
    let live_ts = rows[17]["ts"].as_str().unwrap().to_string();
    let historical_ts = rows[18]["ts"].as_str().unwrap();
    assert!(
        historical_ts < live_ts.as_str(),
        "{historical_ts} is 10 minutes before {live_ts}"
    );
    assert_eq!(summary(&rows[19]), "NDATA gw1/- temp 24 Float stale live");

    // The device dies: its two series are stale, with their last values.
    node.send("ddeath");
    let rows = wait_for_lines(&rows_file, 22);
    let device_death: Vec<String> = rows[20..22].iter().map(summary).collect();
    assert_eq!(
        device_death,
        [
            "DDEATH gw1/room1 co2 900 UInt16 stale live",
            "DDEATH gw1/room1 temp 22 Float stale live",
        ]
    );

    // Garbage on a Sparkplug topic is a dead letter naming the problem and the topic.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "spBv1.0/greenhouse/NDATA/gw1", "-m", "not protobuf"])
        .status()
        .unwrap();
    assert!(status.success());
    let errors = wait_for_lines(&dir.join("errors.jsonl"), 1);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a Sparkplug B payload"),
        "{errors:?}"
    );
    assert_eq!(
        errors[0]["origin"],
        "sparkplug topic spBv1.0/greenhouse/NDATA/gw1"
    );

    // The node drops off without a word: the broker publishes its will (NDEATH) and every
    // series of the node goes stale with its last value (the rebirth's, or data since).
    node.send("kill");
    let rows = wait_for_lines(&rows_file, 27);
    let death: Vec<String> = rows[22..27].iter().map(summary).collect();
    assert_eq!(
        death,
        [
            "NDEATH gw1/- fan 1 Boolean stale live",
            "NDEATH gw1/- mode null String stale live",
            "NDEATH gw1/- offset -3 Int32 stale live",
            "NDEATH gw1/- rh 60.25 Double stale live",
            "NDEATH gw1/- temp 24 Float stale live",
        ]
    );
    let report = engine.interrupt();
    assert!(report.contains("plant"), "{report}");
}

const RESTART_PIPELINE: &str =
    "CREATE SOURCE plant (edge_node TEXT, device TEXT, metric TEXT, datatype TEXT,
       value DOUBLE, ts TIMESTAMP, quality TEXT, historical BOOLEAN, message_type TEXT,
       WATERMARK FOR ts AS ts - INTERVAL '1 second')
     WITH (connector = 'sparkplug', url = 'URL', group = 'greenhouse', host_id = 'scada',
           allowed_lateness = '1 hour');
     CREATE MATERIALIZED VIEW temps AS
       SELECT metric, count(*) AS readings, min(value) AS lowest FROM plant
       WHERE device IS NULL AND metric = 'temp' AND quality = 'good' GROUP BY metric;
     CREATE SINK rows FROM plant WITH (connector = 'file', path = 'rows.jsonl');
     CREATE SINK late FROM plant_late WITH (connector = 'file', path = 'late.jsonl');";

#[test]
fn data_an_edge_node_stored_while_the_engine_was_down_arrives_as_history_that_corrects_views() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let pipeline = RESTART_PIPELINE.replace("URL", &url);
    let mut first = start_engine(&pipeline);
    first.wait_for_log("mqtt subscribed", 1);
    let mut node = EdgeNode::start_with(broker.port, &["scada"]);
    node.send("connect");
    node.expect("stored 0"); // born once the host's STATE said online
    node.send("data temp=21");
    wait_for_lines(&first.dir.path().join("rows.jsonl"), 8);

    // The engine stops (its STATE goes offline); the node stores what it measures meanwhile.
    first.interrupt();
    node.expect("host offline");
    node.send("data temp=18");
    node.send("data temp=17.5");
    node.send("data temp=19");

    // Back online: the node is born again and sends its stored values as history.
    let second = start_engine(&pipeline);
    node.expect("host online");
    node.expect("stored 3");
    let rows_file = second.dir.path().join("rows.jsonl");
    let rows = wait_for_lines(&rows_file, 10);
    let history: Vec<String> = rows[7..10].iter().map(summary).collect();
    assert_eq!(
        history,
        [
            "NDATA gw1/- temp 18 Float good historical",
            "NDATA gw1/- temp 17.5 Float good historical",
            "NDATA gw1/- temp 19 Float good historical",
        ]
    );
    let birth_ts = rows[0]["ts"].as_str().unwrap();
    assert!(
        rows[7]["ts"].as_str().unwrap() < birth_ts,
        "history keeps its time"
    );
    // Older than the watermark, within the allowed lateness: the view is corrected.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{}/v1/views/temps", second.address))
            .output()
            .unwrap();
        let contents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let row = &contents["rows"][0];
        if row["readings"] == 4 {
            assert_eq!(row["lowest"], 17.5, "{contents}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{contents}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(json_lines(&second.dir.path().join("late.jsonl")).is_empty());
}

#[test]
fn a_node_that_drops_off_raises_an_alarm_per_series_from_its_death() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut engine = start_engine(&format!(
        "CREATE SOURCE plant (edge_node TEXT, device TEXT, metric TEXT, value DOUBLE, ts TIMESTAMP,
           quality TEXT, message_type TEXT, WATERMARK FOR ts AS ts)
         WITH (connector = 'sparkplug', url = '{url}', group = 'greenhouse', idle_timeout = '1 second');
         CREATE ALARM node_gone ON plant PER edge_node, device, metric
           WHEN quality = 'stale' CLEAR WHEN quality = 'good'
           SEVERITY 'high' MESSAGE '{{edge_node}}/{{device}} {{metric}} stale since {{message_type}}';
         CREATE SINK gone FROM node_gone WITH (connector = 'file', path = 'gone.jsonl');"
    ));
    engine.wait_for_log("mqtt subscribed", 1);
    let mut node = EdgeNode::start(broker.port);
    node.send("connect");
    node.send("data temp=23");
    // The node drops off without a word: the broker publishes its will, every series of the
    // node and of its device goes stale, and the alarm raises once per series.
    node.send("kill");
    let events = wait_for_lines(&engine.dir.path().join("gone.jsonl"), 7);
    let mut raised: Vec<String> = events
        .iter()
        .map(|event| {
            format!(
                "{} {}",
                event["state"].as_str().unwrap(),
                event["message"].as_str().unwrap()
            )
        })
        .collect();
    raised.sort();
    assert_eq!(
        raised,
        [
            "active gw1/NULL fan stale since NDEATH",
            "active gw1/NULL mode stale since NDEATH",
            "active gw1/NULL offset stale since NDEATH",
            "active gw1/NULL rh stale since NDEATH",
            "active gw1/NULL temp stale since NDEATH",
            "active gw1/room1 co2 stale since NDEATH",
            "active gw1/room1 temp stale since NDEATH",
        ]
    );
    engine.interrupt();
}

/// A checkpointed host of `workers` workers in `dir`, its stderr in `log`; returns once it has
/// subscribed.
fn start_host(dir: &Path, log: &str, workers: usize) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .args([
            "run",
            "pipeline.sql",
            "--http",
            "off",
            "--checkpoint-interval",
            "100ms",
            "--workers",
            &workers.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.join(log))
        .unwrap_or_default()
        .contains("mqtt subscribed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the host did not subscribe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_host_killed_after_the_births_reads_data_by_alias_when_it_restarts_with_more_workers() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // No rebirth requests: the restarted host must know the births it had.
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE plant (edge_node TEXT, device TEXT, metric TEXT, value DOUBLE,
               datatype TEXT, ts TIMESTAMP, quality TEXT, message_type TEXT,
               WATERMARK FOR ts AS ts - INTERVAL '1 hour')
             WITH (connector = 'sparkplug', url = 'mqtt://127.0.0.1:{}', group = 'greenhouse',
                   rebirth = 'false');
             CREATE SINK rows FROM plant WITH (connector = 'file', path = 'rows.jsonl');
             CREATE SINK errors FROM plant_errors WITH (connector = 'file', path = 'errors.jsonl');",
            broker.port
        ),
    )
    .unwrap();
    let rows_file = dir.path().join("rows.jsonl");
    let mut host = start_host(dir.path(), "run-1.log", 1);
    let mut node = EdgeNode::start(broker.port);
    node.send("connect");
    node.send("data temp=22.5 offset=-4");
    wait_for_lines(&rows_file, 9);
    // Once a checkpoint after the births is stored (checkpoint 0 is where the outputs stood
    // before the run), the host dies.
    let first = newest_checkpoint(dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while newest_checkpoint(dir.path()) < (first + 1).max(2) {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    host.kill().unwrap();
    host.wait().unwrap();

    // With three workers the node's messages may go to another worker than before: that
    // worker's host must have taken the node's births from the one worker's part.
    let mut host = start_host(dir.path(), "run-2.log", 3);
    node.send("data temp=25 offset=-6");
    node.send("ddata co2=990");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while json_lines(&rows_file).len() < 12 {
        if std::time::Instant::now() > deadline {
            let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
            panic!(
                "{} of 12 rows: {:?}\nerrors: {:?}\nrun 1:\n{}\nrun 2:\n{}",
                json_lines(&rows_file).len(),
                json_lines(&rows_file)
                    .iter()
                    .map(summary)
                    .collect::<Vec<_>>(),
                json_lines(&dir.path().join("errors.jsonl")),
                log("run-1.log"),
                log("run-2.log")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rows = json_lines(&rows_file);
    let after: Vec<String> = rows[9..].iter().map(summary).collect();
    assert_eq!(
        after,
        [
            "NDATA gw1/- temp 25 Float good live",
            "NDATA gw1/- offset -6 Int32 good live",
            "DDATA gw1/room1 co2 990 UInt16 good live",
        ]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(json_lines(&rows_file).len(), 12, "rows repeated");
    assert!(json_lines(&dir.path().join("errors.jsonl")).is_empty());
    let log = std::fs::read_to_string(dir.path().join("run-2.log")).unwrap();
    assert!(log.contains("resuming from checkpoint"), "{log}");
    let _ = host.kill();
    let _ = host.wait();
}

/// In a cluster the host runs on process 0 alone (a node's data needs its births): rows are
/// decoded there whichever worker's key they go to, the other process connects no client, and
/// a cluster stopped and started again decodes data by alias with the births its checkpoint
/// kept.
#[test]
fn a_cluster_runs_the_host_on_process_zero_and_resumes_it_with_its_births() {
    use common::cluster::{Processes, logs_of, stop_cleanly};
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE plant (edge_node TEXT, device TEXT, metric TEXT, value DOUBLE,
               datatype TEXT, ts TIMESTAMP, quality TEXT, historical BOOLEAN, message_type TEXT,
               WATERMARK FOR ts AS ts - INTERVAL '1 second')
             WITH (connector = 'sparkplug', url = 'mqtt://127.0.0.1:{}', group = 'greenhouse',
                   host_id = 'vibelux-cluster', idle_timeout = '1 second');
             CREATE SINK rows FROM plant WITH (connector = 'file', path = 'rows.jsonl');",
            broker.port
        ),
    )
    .unwrap();
    let rows_file = dir.path().join("rows.jsonl");
    let start = |name: &str| {
        let children = Processes(common::cluster::start_checkpointed_cluster(
            dir.path(),
            name,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(dir.path().join(format!("{name}-0.log")))
            .is_ok_and(|log| log.contains("mqtt subscribed"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                logs_of(dir.path(), name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        children
    };
    let stop = |mut children: Processes, name: &str| {
        stop_cleanly(dir.path(), name, &mut children, 1);
    };
    let children = start("first");
    let mut node = EdgeNode::start(broker.port);
    node.send("connect");
    node.send("data temp=22.5 offset=-4");
    let rows = wait_for_lines(&rows_file, 9);
    assert_eq!(summary(&rows[7]), "NDATA gw1/- temp 22.5 Float good live");
    // A last checkpoint, with the host's births, once a checkpoint holds the rows.
    let wanted = common::crashes::newest_checkpoint_in(&dir.path().join("state")) + 1;
    while common::crashes::newest_checkpoint_in(&dir.path().join("state")) < wanted {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(children, "first");
    let process_one = std::fs::read_to_string(dir.path().join("first-1.log")).unwrap();
    assert!(!process_one.contains("mqtt subscribed"), "{process_one}");

    // Started again, the host reads data by alias with the births it had: no rebirth.
    let children = start("second");
    node.send("data temp=23");
    let rows = wait_for_lines(&rows_file, 10);
    assert_eq!(summary(&rows[9]), "NDATA gw1/- temp 23 Float good live");
    stop(children, "second");
    let logs = logs_of(dir.path(), "second");
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    assert!(!logs.contains("asked the node to rebirth"), "{logs}");
}
