//! The MQTT source and sink against a real Mosquitto broker, with third-party clients as peers
//! (Mosquitto's own `mosquitto_pub`/`mosquitto_sub`, and Eclipse Paho from Python).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crashes::{SENSOR_SECONDS, run_killed_between_checkpoints, write_sensor_readings};
use common::mosquitto::{
    Mosquitto, counting_folder, counting_pipeline, counting_pipeline_with, start_publisher,
    wait_for_acks,
};
use common::output::{json_lines, received, wait_for_lines, wait_for_received};
use common::{Engine, start_engine, start_engine_with};

fn publish(port: u16, topic: &str, payload: &str, qos: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", qos])
        .args(["-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub is installed (scripts/test.sh installs it)");
    assert!(status.success());
}

/// Publishes a payload that need not be text.
fn publish_bytes(port: u16, topic: &str, payload: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-f"])
        .arg(file.path())
        .status()
        .expect("mosquitto_pub is installed (scripts/test.sh installs it)");
    assert!(status.success());
}

#[test]
fn topic_levels_json_paths_and_bare_values_become_rows_and_bad_payloads_dead_letters() {
    let broker = Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut engine = start_engine(&format!(
        "CREATE SOURCE readings (room TEXT, zone TEXT, sensor_id TEXT NOT NULL, ts TIMESTAMP,
           temp_c DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'mqtt', url = '{url}', topic = 'site/{{room}}/{{zone}}/{{sensor_id}}');
         CREATE SOURCE gateway (device TEXT NOT NULL, ts TIMESTAMP, rh DOUBLE,
           WATERMARK FOR ts AS ts)
         WITH (connector = 'mqtt', url = '{url}', topic = 'gw/{{device}}',
               json_paths = 'ts = $.meta.time, rh = $.data.values[1]');
         CREATE SOURCE bare (sensor_id TEXT NOT NULL, ts TIMESTAMP, value DOUBLE,
           WATERMARK FOR ts AS ts)
         WITH (connector = 'mqtt', url = '{url}', topic = 'raw/{{sensor_id}}/temp',
               format = 'raw', qos = '0');
         CREATE VIEW hot AS SELECT room, sensor_id, temp_c FROM readings WHERE temp_c > 30;
         CREATE SINK rows FROM readings WITH (connector = 'file', path = 'readings.jsonl');
         CREATE SINK gateway_rows FROM gateway WITH (connector = 'file', path = 'gateway.jsonl');
         CREATE SINK bare_rows FROM bare WITH (connector = 'file', path = 'bare.jsonl');
         CREATE SINK errors FROM readings_errors WITH (connector = 'file', path = 'errors.jsonl');
         CREATE SINK alerts FROM hot WITH (connector = 'mqtt', url = '{url}',
           topic = 'alerts/{{room}}/{{sensor_id}}', retain = 'true');"
    ));
    engine.wait_for_log("mqtt subscribed", 3);
    let port = broker.port;
    publish(
        port,
        "site/r1/z1/s1",
        r#"{"ts":"2026-06-01T00:00:01Z","temp_c":21.5}"#,
        "1",
    );
    publish(
        port,
        "site/r1/z2/s2",
        r#"{"ts":1780272002000,"temp_c":31.0,"extra":[1]}"#,
        "1",
    );
    publish(
        port,
        "site/r2/z1/s3",
        r#"{"ts":"2026-06-01T00:00:03Z","temp_c":35.5}"#,
        "1",
    );
    publish(
        port,
        "site/r2/z1/s3",
        r#"{"ts":"2026-06-01T00:00:04Z","temp_c":"warm"}"#,
        "1",
    );
    publish(
        port,
        "site/r2/z1/s3",
        r#"{"ts":"2026-06-01T00:00:05Z","temp_c":2"#,
        "1",
    );
    publish(port, "site/r2/z1/s3", r#"{"temp_c":20}"#, "1");
    // A byte a gateway garbled: one dead letter, and the topic reads on.
    publish_bytes(
        port,
        "site/r2/z1/s3",
        b"{\"ts\":\"2026-06-01T00:00:06Z\",\"temp_c\":2\xff}",
    );
    publish(
        port,
        "site/r2/z1/s3",
        r#"{"ts":"2026-06-01T00:00:07Z","temp_c":22.5}"#,
        "1",
    );
    publish(
        port,
        "gw/hvac-1",
        r#"{"meta":{"time":"2026-06-01T00:00:06Z"},"data":{"values":[1,64.5]}}"#,
        "1",
    );
    publish(port, "raw/s7/temp", "19.25", "0");

    let dir = engine.dir.path().to_path_buf();
    let rows = wait_for_lines(&dir.join("readings.jsonl"), 4);
    let summary: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{}/{}/{} {} {}",
                row["room"], row["zone"], row["sensor_id"], row["ts"], row["temp_c"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#""r1"/"z1"/"s1" "2026-06-01T00:00:01.000" 21.5"#,
            r#""r1"/"z2"/"s2" "2026-06-01T00:00:02.000" 31"#,
            r#""r2"/"z1"/"s3" "2026-06-01T00:00:03.000" 35.5"#,
            r#""r2"/"z1"/"s3" "2026-06-01T00:00:07.000" 22.5"#,
        ]
    );
    let errors = wait_for_lines(&dir.join("errors.jsonl"), 4);
    let reasons: Vec<&str> = errors
        .iter()
        .map(|error| error["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("field `temp_c`"), "{reasons:?}");
    assert!(reasons[1].contains("truncated JSON"), "{reasons:?}");
    assert!(
        reasons[2].contains("missing required field `ts`"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[3],
        "the payload is not UTF-8: invalid byte 0xff at byte 39"
    );
    assert_eq!(
        errors[3]["raw"],
        r#"{"ts":"2026-06-01T00:00:06Z","temp_c":2\xff}"#
    );
    assert!(
        errors
            .iter()
            .all(|e| e["origin"] == "mqtt topic site/r2/z1/s3")
    );
    assert_eq!(
        errors[0]["raw"],
        r#"{"ts":"2026-06-01T00:00:04Z","temp_c":"warm"}"#
    );

    let gateway = wait_for_lines(&dir.join("gateway.jsonl"), 1);
    assert_eq!(gateway[0]["device"], "hvac-1");
    assert_eq!(gateway[0]["ts"], "2026-06-01T00:00:06.000");
    assert_eq!(gateway[0]["rh"], 64.5);
    let bare = wait_for_lines(&dir.join("bare.jsonl"), 1);
    assert_eq!(bare[0]["sensor_id"], "s7");
    assert_eq!(bare[0]["value"], 19.25);
    assert!(
        bare[0]["ts"].as_str().unwrap().starts_with("20"),
        "{bare:?}"
    );

    // The alerts were retained: a subscriber arriving now still gets the latest per topic.
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "alerts/#", "-v", "-W", "2"])
        .output()
        .unwrap();
    // The run is checkpointed: each message carries its row's id, for receivers to drop what
    // a restart publishes again.
    let mut retained: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let (topic, payload) = line.split_once(' ').unwrap();
            let mut message: serde_json::Value = serde_json::from_str(payload).unwrap();
            let id = message.as_object_mut().unwrap().remove("_id").unwrap();
            let id = id.as_str().unwrap();
            assert!(
                id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
                "{id}"
            );
            format!("{topic} {message}")
        })
        .collect();
    retained.sort();
    assert_eq!(
        retained,
        [
            r#"alerts/r1/s2 {"room":"r1","sensor_id":"s2","temp_c":31}"#,
            r#"alerts/r2/s3 {"room":"r2","sensor_id":"s3","temp_c":35.5}"#,
        ]
    );
    let log = engine.interrupt();
    assert!(log.contains("readings: 4 rows, 4 dead letters"), "{log}");
}

fn check_contents(seen: &BTreeMap<i64, f64>, count: usize) {
    assert_eq!(seen.len(), count);
    for (seq, temp) in seen {
        assert!((0..count as i64).contains(seq), "unexpected message {seq}");
        assert!(
            (temp - *seq as f64 / 100.0).abs() < 1e-9,
            "message {seq}: {temp}"
        );
    }
}

#[test]
fn every_qos1_message_arrives_when_the_broker_restarts_mid_stream() {
    const COUNT: usize = 10_000;
    let mut broker = Mosquitto::start();
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("rows.jsonl");
    let mut engine: Engine = start_engine(&counting_pipeline(broker.port, &output));
    engine.wait_for_log("mqtt subscribed", 1);
    let (mut publisher, lines) = start_publisher(broker.port, COUNT, 4_000);
    wait_for_acks(&lines, 3_000);
    broker.restart(Duration::from_millis(300));
    wait_for_acks(&lines, COUNT);
    assert!(publisher.wait().unwrap().success());
    let late = output.with_extension("late.jsonl");
    let seen = wait_for_received(&[&output, &late], COUNT);
    check_contents(&seen, COUNT);
    // The engine came back by itself: it says so, resubscribed, and its metrics count it.
    engine.wait_for_log("mqtt subscribed", 2);
    let metrics = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            &format!("http://{}/metrics", engine.address),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("vibelux_source_connected{source=\"readings\"} 1"),
        "{metrics}"
    );
    let failures: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("vibelux_source_connection_errors_total{source=\"readings\"} ")
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 1, "{metrics}");
    let log = engine.interrupt();
    assert!(log.contains("reconnecting"), "{log}");
}

#[test]
fn messages_published_while_the_engine_is_down_arrive_when_it_returns() {
    let (seen, _) = restart_the_engine_while_publishing("");
    check_contents(&seen, 6_000);
}

#[test]
fn an_mqtt_5_session_is_kept_for_its_expiry_and_not_beyond() {
    // The broker keeps the session for an hour: nothing is lost.
    let (seen, _) =
        restart_the_engine_while_publishing(", protocol = '5', session_expiry = '1 hour'");
    check_contents(&seen, 6_000);
    // A session that expires at once is gone while the engine is away (as MQTT 5 means it to
    // be, where a 3.1.1 session would have stayed): what was published meanwhile never arrives.
    let (seen, before_restart) =
        restart_the_engine_while_publishing(", protocol = '5', session_expiry = '0s'");
    assert!(
        seen.len() < 6_000 && seen.len() >= before_restart,
        "{} of 6000 arrived, {before_restart} before the restart",
        seen.len()
    );
}

/// Publishes 6,000 QoS 1 messages while the engine stops and starts again; returns what the two
/// runs received and how much the first had.
fn restart_the_engine_while_publishing(options: &str) -> (BTreeMap<i64, f64>, usize) {
    const COUNT: usize = 6_000;
    let broker = Mosquitto::start();
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first.jsonl");
    let second = out.path().join("second.jsonl");
    // Two engines in two folders share the broker's session, so neither keeps state: in a
    // checkpointed run what the first took in would be in its own journal
    // (`an_engine_killed_mid_stream_loses_no_acknowledged_message_whatever_its_worker_count` restarts one in place).
    let mut engine = start_engine_with(
        &counting_pipeline_with(broker.port, &first, options),
        &["--no-state"],
    );
    engine.wait_for_log("mqtt subscribed", 1);
    let (mut publisher, lines) = start_publisher(broker.port, COUNT, 3_000);
    wait_for_acks(&lines, 1_500);
    engine.interrupt();
    let before_restart = received(&[&first]).len();
    // Publishing goes on while the engine is away; the broker queues for its session.
    wait_for_acks(&lines, 3_500);
    let mut engine = start_engine_with(
        &counting_pipeline_with(broker.port, &second, options),
        &["--no-state"],
    );
    wait_for_acks(&lines, COUNT);
    assert!(publisher.wait().unwrap().success());
    assert!((1_000..COUNT).contains(&before_restart), "{before_restart}");
    // Everything the second run will get has arrived once it has been quiet for two seconds.
    let mut seen = received(&[&first, &second]);
    let mut quiet = 0;
    while seen.len() < COUNT && quiet < 2 {
        std::thread::sleep(Duration::from_secs(1));
        let now = received(&[&first, &second]);
        quiet = if now.len() == seen.len() {
            quiet + 1
        } else {
            0
        };
        seen = now;
    }
    engine.interrupt();
    (seen, before_restart)
}

/// A broker with a TLS listener using the certificates `make_certificates` made in `certs`.
fn tls_broker(certs: &Path, more: &str) -> Mosquitto {
    Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n{more}",
        certs.join("ca.pem").display(),
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    ))
}

/// A TLS source trusting `ca`, or the system's roots when `None`.
fn tls_pipeline(port: &str, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |ca| format!("tls_ca = '{}',", ca.display()));
    format!(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts)
         WITH (connector = 'mqtt', url = 'mqtts://127.0.0.1:{port}', {ca}
               topic = 'site/{{sensor_id}}');
         CREATE SINK rows FROM readings WITH (connector = 'file', path = 'rows.jsonl');"
    )
}

#[test]
fn readings_arrive_over_tls_verified_against_the_brokers_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = common::tls::make_certificates(certs.path());
    let broker = tls_broker(certs.path(), "");
    let port = broker.port.to_string();
    let mut engine = start_engine(&tls_pipeline(&port, Some(&ca)));
    engine.wait_for_log("mqtt subscribed", 1);
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "--cafile"])
        .arg(&ca)
        .args([
            "-t",
            "site/s1",
            "-m",
            r#"{"ts":"2026-06-01T00:00:01Z","temp_c":22.5}"#,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let rows = wait_for_lines(&engine.dir.path().join("rows.jsonl"), 1);
    assert_eq!(rows[0]["sensor_id"], "s1");
    assert_eq!(rows[0]["temp_c"], 22.5);
    engine.interrupt();

    // A CA that did not sign the broker's certificate: refused, said, and retried.
    let other = tempfile::tempdir().unwrap();
    let wrong_ca = common::tls::make_certificates(other.path());
    let mut engine = start_engine(&tls_pipeline(&port, Some(&wrong_ca)));
    engine.wait_for_log("mqtt connection lost; reconnecting", 1);
    let log = engine.interrupt();
    assert!(log.to_lowercase().contains("certificate"), "{log}");

    // Without tls_ca the system's roots are trusted; SSL_CERT_FILE names them here.
    let mut engine = common::start_engine_in_env(
        &tls_pipeline(&port, None),
        &[],
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("SSL_CERT_DIR", ""),
        ],
    );
    engine.wait_for_log("mqtt subscribed", 1);
    engine.interrupt();
}

#[test]
fn a_broker_that_requires_client_certificates_accepts_ours() {
    let certs = tempfile::tempdir().unwrap();
    let ca = common::tls::make_certificates(certs.path());
    let broker = tls_broker(certs.path(), "require_certificate true");
    let port = broker.port;
    let with_certificate = |client: bool| {
        let client = if client {
            format!(
                "tls_client_cert = '{}', tls_client_key = '{}',",
                certs.path().join("client.pem").display(),
                certs.path().join("client.key").display()
            )
        } else {
            String::new()
        };
        format!(
            "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
               WATERMARK FOR ts AS ts)
             WITH (connector = 'mqtt', url = 'mqtts://127.0.0.1:{port}', tls_ca = '{}', {client}
                   topic = 'site/{{sensor_id}}');
             CREATE SINK rows FROM readings WITH (connector = 'file', path = 'rows.jsonl');",
            ca.display()
        )
    };
    let mut engine = start_engine(&with_certificate(true));
    engine.wait_for_log("mqtt subscribed", 1);
    engine.interrupt();
    let mut engine = start_engine(&with_certificate(false));
    engine.wait_for_log("mqtt connection lost; reconnecting", 1);
    let log = engine.interrupt();
    assert!(!log.contains("mqtt subscribed"), "{log}");
}

#[test]
fn an_engine_killed_mid_stream_loses_no_acknowledged_message_whatever_its_worker_count() {
    const COUNT: usize = 8_000;
    let broker = Mosquitto::start();
    let (dir, rows) = counting_folder(broker.port);
    // Each run has another number of workers: the topics' messages go to other workers than
    // before, and each must still be taken from the journal once.
    let run = |number: usize| {
        let workers = [1, 3, 2][number].to_string();
        let log = std::fs::File::create(dir.path().join(format!("run-{number}.log"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_vibelux"))
            .current_dir(dir.path())
            .args([
                "run",
                "pipeline.sql",
                "--http",
                "off",
                "--checkpoint-interval",
                "100ms",
                "--workers",
                &workers,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let log_of = |number: usize| {
        std::fs::read_to_string(dir.path().join(format!("run-{number}.log"))).unwrap()
    };
    let wait_for = |what: &str, number: usize, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}:\n{}", log_of(number));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut engine = run(0);
    wait_for("subscribed", 0, &|| log_of(0).contains("mqtt subscribed"));
    let (mut publisher, lines) = start_publisher(broker.port, COUNT, 2_000);
    // Killed twice while messages stream in: each time some were received, journaled and
    // acknowledged but not yet in a checkpoint.
    for (number, after) in [(1, 2_000), (2, 4_500)] {
        wait_for("rows", number - 1, &|| json_lines(&rows).len() >= after);
        engine.kill().unwrap();
        engine.wait().unwrap();
        engine = run(number);
    }
    wait_for_acks(&lines, COUNT);
    assert!(publisher.wait().unwrap().success());
    wait_for("every message", 2, &|| {
        let seqs: std::collections::BTreeSet<i64> = json_lines(&rows)
            .iter()
            .map(|row| row["seq"].as_i64().unwrap())
            .collect();
        seqs.len() >= COUNT
    });
    std::thread::sleep(Duration::from_millis(500));
    engine.kill().unwrap();
    engine.wait().unwrap();
    let seqs: Vec<i64> = json_lines(&rows)
        .iter()
        .map(|row| row["seq"].as_i64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), COUNT, "messages lost");
    // A message journaled but whose acknowledgement the kill cut off is delivered again by the
    // broker (QoS 1 is at least once): at most the broker's in-flight window (100 in the test
    // broker's configuration) per kill, and here two kills. Under load a kill can find most of
    // the window journaled and not yet acknowledged (92 repeats were seen in a CI run).
    assert!(
        seqs.len() - COUNT <= 2 * 100,
        "{} messages repeated",
        seqs.len() - COUNT
    );
    assert!(
        log_of(2).contains("resuming from checkpoint"),
        "{}",
        log_of(2)
    );
}

#[test]
fn an_mqtt_sink_killed_mid_stream_publishes_every_row_at_least_once_with_stable_ids() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // 100,000 readings: 1,000 one-second windows of 10 per sensor.
    write_sensor_readings(dir.path(), 100_000);
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "{SENSOR_SECONDS}
             CREATE SINK out FROM sensor_seconds
               WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'windows/{{sensor_id}}');",
            broker.port
        ),
    )
    .unwrap();
    // A subscriber for the whole test, at QoS 1, writing what it gets to a file.
    let received_path = dir.path().join("received.txt");
    let mut subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "windows/#", "-q", "1", "-v"])
        .stdout(std::fs::File::create(&received_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let kills = run_killed_between_checkpoints(dir.path(), &["--checkpoint-interval", "50ms"]);
    assert!(kills >= 2, "only {kills} kills");
    // Until the subscriber has had everything.
    let deadline = Instant::now() + Duration::from_secs(30);
    let by_id = loop {
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in std::fs::read_to_string(&received_path).unwrap().lines() {
            let (_, payload) = line.split_once(' ').unwrap();
            let mut window: serde_json::Value = serde_json::from_str(payload).unwrap();
            let id = window
                .as_object_mut()
                .unwrap()
                .remove("_id")
                .expect("every message carries its row's id");
            by_id
                .entry(id.as_str().unwrap().to_string())
                .or_default()
                .push(window.to_string());
        }
        if by_id.len() >= 10_000 || Instant::now() > deadline {
            break by_id;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    // Every window, once per id; a message published again has the same id and row.
    assert_eq!(by_id.len(), 10_000, "{} distinct ids", by_id.len());
    for (id, windows) in &by_id {
        assert!(
            windows.iter().all(|w| w == &windows[0]),
            "{id}: {windows:?}"
        );
        let window: serde_json::Value = serde_json::from_str(&windows[0]).unwrap();
        assert_eq!(window["n"], 10, "{window}");
    }
    let total: usize = by_id.values().map(Vec::len).sum();
    eprintln!("{total} messages for 10000 windows after {kills} kills");
}
