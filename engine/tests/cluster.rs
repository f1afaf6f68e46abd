//! A timely cluster of `vibelux run` processes on loopback: the same results as one process,
//! to the row, with sources split across every process's workers and sinks written once.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{
    Processes, all_succeeded, exit_statuses, logs_of, start_checkpointed_cluster,
    start_serving_cluster, vibelux, write_hosts,
};
use common::crashes::{newest_checkpoint_in, write_sensor_readings};
use common::output::writers_of_each_epoch;

/// A simulated facility replayed at full speed and the file of readings beside it: windows, a
/// detector per sensor and an alarm per sensor, whose outputs depend on nothing but the input.
const PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'simulator', rooms = '2', zones_per_room = '5', sensors_per_zone = '10',
        interval = '10 seconds', speed = 'max', start = '2024-06-01T05:00:00Z',
        duration = '3 hours', seed = '11', faults = 'stuck,dropout,spike');
CREATE SOURCE counted (sensor_id TEXT NOT NULL, ts TIMESTAMP, seq BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '1 second')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE VIEW zone_minute AS
  SELECT zone, window_start, count(*) AS n, round(avg(temp_c), 6) AS temp_avg
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE VIEW scored AS
  SELECT sensor_id, ts, round(anomaly_score('zscore', temp_c) OVER (PARTITION BY sensor_id), 9) AS score
  FROM readings;
CREATE ALARM too_warm ON readings PER sensor_id
  WHEN temp_c > 25.5 FOR INTERVAL '2 minutes' CLEAR WHEN temp_c < 25;
CREATE VIEW sensor_seconds AS
  SELECT sensor_id, window_start, count(*) AS n, max(seq) AS last
  FROM TUMBLE(counted, ts, INTERVAL '1 second') GROUP BY sensor_id, window_start;
CREATE SINK minutes FROM zone_minute WITH (connector = 'file', path = 'out/minutes.jsonl');
CREATE SINK scores FROM scored WITH (connector = 'file', path = 'out/scores.jsonl');
CREATE SINK alarms FROM too_warm WITH (connector = 'file', path = 'out/alarms.jsonl');
CREATE SINK seconds FROM sensor_seconds WITH (connector = 'file', path = 'out/seconds.jsonl');
CREATE SINK warehouse FROM sensor_seconds
  WITH (connector = 'parquet', path = 'warehouse/seconds', rollover_rows = '2000');
";

const OUTPUTS: [&str; 4] = ["minutes", "scores", "alarms", "seconds"];

fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), PIPELINE).unwrap();
    write_sensor_readings(dir.path(), 20_000);
    dir
}

fn succeeded(what: &str, output: Output) -> String {
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{what}:\n{log}");
    log
}

/// Each output's lines, sorted: the order rows are written in may differ between runs. The
/// warehouse's rows as `vibelux query` reads them.
fn outputs(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut outputs: Vec<(String, Vec<String>)> = OUTPUTS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join("out").join(format!("{name}.jsonl")))
                .unwrap_or_default();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            (name.to_string(), lines)
        })
        .collect();
    let query = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .args(["query", "--warehouse", "warehouse", "--format", "csv"])
        .arg(
            "SELECT sensor_id, window_start, n, last FROM seconds ORDER BY sensor_id, window_start",
        )
        .output()
        .unwrap();
    succeeded("querying the warehouse", query.clone());
    let rows = String::from_utf8(query.stdout).unwrap();
    outputs.push((
        "warehouse".into(),
        rows.lines().skip(1).map(str::to_string).collect(),
    ));
    outputs
}

/// What the pipeline writes as one process with two workers: the reference.
fn one_process_outputs() -> Vec<(String, Vec<String>)> {
    let reference = folder();
    succeeded(
        "one process",
        vibelux(reference.path(), &["--workers", "2"])
            .output()
            .unwrap(),
    );
    outputs(reference.path())
}

/// Runs the pipeline as `processes` processes of `workers` each in `dir`, all to their end.
fn run_cluster(dir: &Path, processes: usize, workers: usize) -> Vec<String> {
    write_hosts(dir, processes);
    let children: Vec<Child> = (0..processes)
        .map(|process| {
            vibelux(
                dir,
                &["--workers", &workers.to_string(), "--hosts", "hosts"],
            )
            .env("VIBELUX_PROCESS", process.to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(process, child)| {
            succeeded(
                &format!("process {process}"),
                child.wait_with_output().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_cluster_of_processes_writes_what_one_process_writes() {
    let expected = one_process_outputs();
    for (name, lines) in &expected {
        assert!(!lines.is_empty(), "one process wrote no {name}");
    }
    for (processes, workers) in [(2, 1), (2, 2), (3, 1)] {
        let dir = folder();
        let logs = run_cluster(dir.path(), processes, workers);
        assert!(
            logs[0].contains(&format!("process 0 of a cluster of {processes}")),
            "{}",
            logs[0]
        );
        for (name, lines) in outputs(dir.path()) {
            let reference = &expected.iter().find(|(n, _)| *n == name).unwrap().1;
            assert!(
                lines == *reference,
                "{processes} processes × {workers} workers wrote {} {name} rows, one process {}",
                lines.len(),
                reference.len()
            );
        }
        // Every worker of process 0 writes warehouse files of its own; the other processes'
        // rows go to them.
        let epochs = writers_of_each_epoch(&dir.path().join("warehouse/seconds"));
        let writers: std::collections::BTreeSet<String> = epochs.into_iter().flatten().collect();
        assert_eq!(
            writers.len(),
            workers,
            "{processes} × {workers}: {writers:?}"
        );
    }
}

/// The end of each process's log of the run `name`.
#[test]
fn a_cluster_killed_a_process_at_a_time_resumes_from_its_checkpoints_without_loss_or_repeats() {
    let expected = one_process_outputs();
    let dir = folder();
    let state = dir.path().join("state");
    let mut killed = 0;
    for round in 0..40u64 {
        let name = format!("round-{round}");
        let mut children = start_checkpointed_cluster(dir.path(), &name);
        // Kill one process, 0 and 1 in turn: in every third round a little after the cluster
        // stored a checkpoint of its own, so that rows after it are in flight; in the others at
        // some moment 1 to 3 seconds after the start (wherever a checkpoint is then).
        let wanted = newest_checkpoint_in(&state) + 1;
        // The timer starts once the processes have connected (a process waits for its peers
        // as long as it takes, as pods that start in any order must).
        let connected = Instant::now() + Duration::from_secs(60);
        while !(0..2).all(|process| {
            std::fs::read_to_string(dir.path().join(format!("{name}-{process}.log")))
                .is_ok_and(|log| log.contains("  state: "))
        }) {
            assert!(Instant::now() < connected, "{name} never connected");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        let timer = Duration::from_millis(1_000 + round * 733 % 2_000);
        let due = || match round % 3 {
            2 => newest_checkpoint_in(&state) >= wanted,
            _ => started.elapsed() >= timer,
        };
        let deadline = started + Duration::from_secs(60);
        let mut ended = false;
        while !due() && Instant::now() < deadline {
            if children.iter_mut().any(|c| c.try_wait().unwrap().is_some()) {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // A run that resumed from the last checkpoint of a run that ended has nothing left to
        // do but end: let it.
        let finishing = std::fs::read_to_string(dir.path().join(format!("{name}-0.log")))
            .unwrap_or_default()
            .contains("when the last run ended");
        if !ended && !finishing {
            std::thread::sleep(Duration::from_millis(round * 37 % 40));
            let victim = (round % 2) as usize;
            children[victim].kill().unwrap();
            killed += 1;
        }
        // The process that was not killed stops by itself once its peer is gone.
        let statuses = exit_statuses(
            &mut children,
            &format!("a process of {name} kept running without its peer"),
            dir.path(),
            &name,
        );
        if all_succeeded(&statuses) {
            break;
        }
        // What an operator sees of the process that was not killed (unless it had just ended):
        // one line saying why it stopped, and a status that says "try again".
        if !ended && !finishing {
            let survivor = 1 - (round % 2) as usize;
            let log =
                std::fs::read_to_string(dir.path().join(format!("{name}-{survivor}.log"))).unwrap();
            assert!(
                statuses[survivor].success()
                    || (statuses[survivor].code() == Some(75)
                        && log.contains("lost its connection to another process of the cluster")),
                "{name}: process {survivor} ended with {:?}:\n{}",
                statuses[survivor],
                logs_of(dir.path(), &name)
            );
        }
        assert!(
            !ended,
            "{name} failed by itself:\n{}",
            logs_of(dir.path(), &name)
        );
    }
    eprintln!("the cluster was killed {killed} times before it ran to its end");
    assert!(killed >= 2, "the cluster ended after {killed} kills");
    let resumed = (1..=killed)
        .map(|round| std::fs::read_to_string(dir.path().join(format!("round-{round}-1.log"))))
        .filter(|log| {
            log.as_ref()
                .is_ok_and(|log| log.contains("resuming from checkpoint"))
        })
        .count();
    assert!(
        resumed > 0,
        "no restart of process 1 resumed from a checkpoint"
    );
    for (name, lines) in outputs(dir.path()) {
        let reference = &expected.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(
            lines == *reference,
            "after {killed} kills the cluster wrote {} {name} rows, one process {}",
            lines.len(),
            reference.len()
        );
    }
}

#[test]
fn a_clusters_checkpoint_resumes_in_one_process_of_as_many_workers() {
    let expected = one_process_outputs();
    let dir = folder();
    let state = dir.path().join("state");
    let mut children = start_checkpointed_cluster(dir.path(), "cluster");
    // Both processes of a worker each, killed once the cluster stored a checkpoint of its own
    // (its first, checkpoint 0, only says where the outputs started).
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest_checkpoint_in(&state) < 1 {
        assert!(
            Instant::now() < deadline,
            "the cluster stored no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Its checkpoint keys state by the cluster's worker number: one process with two workers
    // takes it as it is.
    let log = succeeded(
        "one process resuming the cluster's checkpoint",
        vibelux(dir.path(), &["--state", "state", "--workers", "2"])
            .output()
            .unwrap(),
    );
    assert!(log.contains("resuming from checkpoint"), "{log}");
    for (name, lines) in outputs(dir.path()) {
        let reference = &expected.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(
            lines == *reference,
            "resumed in one process: {} {name} rows, one process throughout {}",
            lines.len(),
            reference.len()
        );
    }
}

#[test]
fn a_stop_of_one_process_stops_the_cluster_with_a_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // A facility paced by the clock: it never ends by itself.
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
           WITH (connector = 'simulator', rooms = '2', zones_per_room = '2', sensors_per_zone = '5',
                 interval = '10 seconds', speed = '600x', seed = '3');
         CREATE VIEW zone_minute AS
           SELECT zone, window_start, count(*) AS n
           FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
         CREATE SINK minutes FROM zone_minute WITH (connector = 'file', path = 'out/minutes.jsonl');",
    )
    .unwrap();
    let start = |name: &str, stop_after: Option<&str>| -> Vec<Child> {
        write_hosts(dir.path(), 2);
        (0..2)
            .map(|process| {
                let log = std::fs::File::create(dir.path().join(format!("{name}-{process}.log")))
                    .unwrap();
                let mut command = vibelux(dir.path(), &["--state", "state"]);
                command.args(["--hosts", "hosts", "--process", &process.to_string()]);
                // Only process 1 is told when to stop.
                if let (1, Some(after)) = (process, stop_after) {
                    command.args(["--for", after]);
                }
                command.stderr(log).spawn().unwrap()
            })
            .collect()
    };
    let wait_all = |children: Vec<Child>, name: &str| {
        let mut children = Processes(children);
        let what = format!("a process of {name} did not stop");
        let statuses = exit_statuses(&mut children.0, &what, dir.path(), name);
        assert!(
            all_succeeded(&statuses),
            "{name}:\n{}",
            logs_of(dir.path(), name)
        );
    };
    wait_all(start("first", Some("4s")), "first");
    let log = std::fs::read_to_string(dir.path().join("first-0.log")).unwrap();
    assert!(
        log.contains("process 1 of the cluster was stopped, so is this one"),
        "{log}"
    );
    // Both stopped cleanly: the next run resumes from the cluster's last checkpoint.
    wait_all(start("second", Some("2s")), "second");
    let log = std::fs::read_to_string(dir.path().join("second-1.log")).unwrap();
    assert!(log.contains("when the last run ended"), "{log}");
}

#[test]
fn process_zero_serves_views_alarm_commands_and_the_audit_trail_for_every_process_and_each_its_metrics()
 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
           WITH (connector = 'simulator', rooms = '2', zones_per_room = '2', sensors_per_zone = '5',
                 interval = '10 seconds', speed = '60x', seed = '3');
         CREATE MATERIALIZED VIEW zones AS SELECT zone, count(*) AS n FROM readings GROUP BY zone;
         CREATE ALARM reading ON readings PER sensor_id WHEN temp_c > -1000;
         CREATE SOURCE trail WITH (connector = 'audit');
         CREATE SINK changes FROM trail WITH (connector = 'file', path = 'changes.jsonl');",
    )
    .unwrap();
    let (http, mut children) = start_serving_cluster(dir.path(), "30s", None);
    let get = |port: u16, path: &str| {
        common::request(&format!("127.0.0.1:{port}"), "GET", path, &[], None)
    };
    // Every zone counted, by both processes' workers, in process 0's view.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get(http[0], "/v1/views/zones");
        if answer.status == 200 && answer.body.matches("\"zone\":\"r").count() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", answer.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    let elsewhere = get(http[1], "/v1/views/zones");
    assert_eq!(elsewhere.status, 404);
    assert!(
        elsewhere
            .body
            .contains("live views, the API and the Postgres port are on process 0"),
        "{}",
        elsewhere.body
    );
    // Each process counts the rows its own workers read, and times its own dataflow steps.
    let metric = |port: u16, name: &str| -> f64 {
        let metrics = get(port, "/metrics").body;
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {metrics}"))
    };
    for port in [http[0], http[1]] {
        assert!(metric(port, "vibelux_source_rows_total{source=\"readings\"}") > 0.0);
        assert!(metric(port, "vibelux_dataflow_step_seconds_count") > 0.0);
    }
    // Every sensor's alarm is active; its instance lives on the worker its key is routed to,
    // in either process. Acknowledged through process 0, all of them are.
    let instances = |deadline: Instant| -> Vec<serde_json::Value> {
        loop {
            let answer = get(http[0], "/v1/views/reading_state");
            let rows: Vec<serde_json::Value> =
                serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|body| body["rows"].as_array().cloned())
                    .unwrap_or_default();
            if rows.len() == 20 {
                return rows;
            }
            assert!(Instant::now() < deadline, "{}", answer.body);
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    for row in instances(Instant::now() + Duration::from_secs(15)) {
        let sensor = row["sensor_id"].as_str().unwrap();
        let answer = common::request(
            &format!("127.0.0.1:{}", http[0]),
            "POST",
            "/v1/alarms/reading/acknowledge",
            &["content-type: application/json".into()],
            Some(&format!(
                r#"{{"key": {{"sensor_id": "{sensor}"}}, "by": "maria"}}"#
            )),
        );
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = instances(deadline);
        if rows.iter().all(|row| row["state"] == "acknowledged") {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A view and a sink added over the API run on every process: process 0 passes the request
    // on, and both processes' workers feed them (each process reads half of the sensors).
    let post_sql = |sql: &str| {
        common::request(
            &format!("127.0.0.1:{}", http[0]),
            "POST",
            "/v1/sql",
            &["content-type: application/sql".into()],
            Some(sql),
        )
    };
    let answer = post_sql(
        "CREATE MATERIALIZED VIEW sensors AS SELECT sensor_id, count(*) AS n FROM readings GROUP BY sensor_id;
         CREATE SINK added FROM readings WITH (connector = 'file', path = 'added.jsonl');",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sensors_written = || -> std::collections::BTreeSet<String> {
        common::output::json_lines(&dir.path().join("added.jsonl"))
            .iter()
            .map(|row| row["sensor_id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get(http[0], "/v1/views/sensors");
        let counted = answer.body.matches("\"sensor_id\":").count();
        if counted == 20 && sensors_written().len() == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} sensors counted, {} written: {}",
            sensors_written().len(),
            answer.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = post_sql("DROP SINK added; DROP VIEW sensors;");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(get(http[0], "/v1/views/sensors").status, 404);
    // What was done over process 0's API is in its audit trail, which the pipeline reads.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let changes = common::output::json_lines(&dir.path().join("changes.jsonl"));
        let done = |action: &str| {
            changes
                .iter()
                .filter(|change| change["action"] == action && change["outcome"] == "ok")
                .count()
        };
        if done("alarm") == 20 && done("sql") == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{changes:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Two hosts on one machine: network namespaces joined by a veth pair, each with an address
/// of its own; removed when dropped.
struct TwoHosts {
    namespaces: [String; 2],
    addresses: [String; 2],
}

impl TwoHosts {
    fn create() -> TwoHosts {
        let tag = std::process::id();
        let namespaces = [format!("vlx{tag}a"), format!("vlx{tag}b")];
        let subnet = format!("10.231.{}", tag % 250);
        let addresses = [format!("{subnet}.1"), format!("{subnet}.2")];
        let hosts = TwoHosts {
            namespaces: namespaces.clone(),
            addresses: addresses.clone(),
        };
        let ip = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().unwrap();
            assert!(
                output.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        for namespace in &namespaces {
            ip(&["netns", "add", namespace]);
        }
        let links = [format!("vlx{tag}x"), format!("vlx{tag}y")];
        ip(&[
            "link", "add", &links[0], "type", "veth", "peer", "name", &links[1],
        ]);
        for i in 0..2 {
            ip(&["link", "set", &links[i], "netns", &namespaces[i]]);
            let address = format!("{}/24", addresses[i]);
            ip(&[
                "-n",
                &namespaces[i],
                "addr",
                "add",
                &address,
                "dev",
                &links[i],
            ]);
            ip(&["-n", &namespaces[i], "link", "set", &links[i], "up"]);
            ip(&["-n", &namespaces[i], "link", "set", "lo", "up"]);
        }
        hosts
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

#[test]
fn a_cluster_across_two_network_namespaces_writes_what_one_process_writes() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
    {
        // Namespaces need root; the loopback test above covers the cluster itself.
        eprintln!("not root: no network namespaces here, the loopback cluster test stands in");
        return;
    }
    let expected = one_process_outputs();
    let hosts = TwoHosts::create();
    let dir = folder();
    let lines: Vec<String> = hosts
        .addresses
        .iter()
        .map(|address| format!("{address}:2101"))
        .collect();
    std::fs::write(dir.path().join("hosts"), lines.join("\n")).unwrap();
    let children: Vec<Child> = (0..2)
        .map(|process| {
            Command::new("ip")
                .args(["netns", "exec", &hosts.namespaces[process]])
                .arg(env!("CARGO_BIN_EXE_vibelux"))
                .args(["run", "pipeline.sql", "--no-state", "--http", "off"])
                .args(["--hosts", "hosts", "--process", &process.to_string()])
                .current_dir(dir.path())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (process, child) in children.into_iter().enumerate() {
        succeeded(
            &format!("process {process} in {}", hosts.namespaces[process]),
            child.wait_with_output().unwrap(),
        );
    }
    assert_eq!(outputs(dir.path()), expected);
}
