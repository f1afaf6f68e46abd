//! Live views end to end: a running `vibelux run` serving a materialized view over WebSocket to
//! real clients (tokio-tungstenite), checked against each other: a snapshot plus the diffs after
//! it always add up to what a later snapshot says, whatever the client asked for (resume, a
//! filter, upserts) and however slowly it reads.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use common::{Engine, PIPELINE, post_sql, start_engine, start_engine_with};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(engine: &Engine, query: &str) -> Socket {
    let url = format!(
        "ws://{}/v1/views/zone_stats/subscribe{query}",
        engine.address
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// 1,000 simulated sensors at 60×: enough changes to fill socket buffers within seconds.
const THOUSAND_SENSORS: &str =
    "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
    WITH (connector = 'simulator', rooms = '4', zones_per_room = '5', sensors_per_zone = '50',
          interval = '10 seconds', speed = '60x', seed = '5');";

/// A view's contents as row text → count.
type Contents = BTreeMap<String, i64>;

/// Everything one subscriber received: a starting state and the timestamped diffs after it.
#[derive(Default)]
struct Mirror {
    start: Contents,
    start_ts: u64,
    diffs: Vec<(u64, String, i64)>,
    progress: u64,
    update_messages: usize,
}

impl Mirror {
    /// The contents as of `ts` (every diff before it applied).
    fn at(&self, ts: u64) -> Contents {
        assert!(
            ts >= self.start_ts && ts <= self.progress,
            "{ts} outside what was received"
        );
        let mut contents = self.start.clone();
        for (time, row, diff) in &self.diffs {
            if *time < ts {
                *contents.entry(row.clone()).or_insert(0) += diff;
            }
        }
        contents.retain(|_, count| *count != 0);
        contents
    }

    fn now(&self) -> Contents {
        self.at(self.progress)
    }

    /// Applies one message; checks the contents never go negative.
    fn receive(&mut self, message: &Value) {
        match message["type"].as_str().unwrap() {
            "snapshot" => {
                self.start_ts = message["ts"].as_u64().unwrap();
                self.progress = self.start_ts;
                for entry in message["rows"].as_array().unwrap() {
                    *self.start.entry(entry["row"].to_string()).or_insert(0) +=
                        entry["diff"].as_i64().unwrap();
                }
            }
            "updates" => {
                let ts = message["ts"].as_u64().unwrap();
                assert!(
                    ts >= self.progress,
                    "updates at {ts} after progress {}",
                    self.progress
                );
                self.update_messages += 1;
                for entry in message["updates"].as_array().unwrap() {
                    self.diffs.push((
                        ts,
                        entry["row"].to_string(),
                        entry["diff"].as_i64().unwrap(),
                    ));
                }
            }
            "progress" => {
                let ts = message["ts"].as_u64().unwrap();
                assert!(ts >= self.progress);
                self.progress = ts;
                assert!(
                    self.now().values().all(|count| *count > 0),
                    "negative contents"
                );
            }
            other => panic!("unexpected {other}: {message}"),
        }
    }
}

/// Reads messages into the mirror until its progress reaches `ts`.
async fn read_until(socket: &mut Socket, mirror: &mut Mirror, ts: u64) {
    while mirror.progress < ts {
        let message = next(socket).await;
        mirror.receive(&message);
    }
}

/// Subscribes and reads the schema and the snapshot (or, resuming, sets the start).
async fn subscribe(engine: &Engine, query: &str) -> (Socket, Mirror, Value) {
    let mut socket = connect(engine, query).await;
    let schema = next(&mut socket).await;
    assert_eq!(schema["type"], "schema", "{schema}");
    let mut mirror = Mirror::default();
    if !query.contains("resume_from") {
        let snapshot = next(&mut socket).await;
        mirror.receive(&snapshot);
    }
    (socket, mirror, schema)
}

fn zone_of(row: &str) -> String {
    serde_json::from_str::<Value>(row).unwrap()["zone"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_snapshots_and_diffs_that_add_up() {
    let engine = start_engine(PIPELINE);
    let (mut first, mut a, schema) = subscribe(&engine, "").await;
    assert_eq!(schema["key"], serde_json::json!(["zone"]));
    assert_eq!(schema["columns"][2]["name"], "temp_max");
    // Let some changes flow: each zone's row is retracted and re-inserted as readings arrive.
    while a.update_messages < 5 {
        let message = next(&mut first).await;
        a.receive(&message);
    }
    assert!(
        a.diffs.iter().any(|(_, _, diff)| *diff < 0),
        "updates retract"
    );

    // A later subscriber's snapshot is what the first one's diffs add up to at that time.
    let (_second, b, _) = subscribe(&engine, "").await;
    read_until(&mut first, &mut a, b.start_ts).await;
    assert_eq!(a.at(b.start_ts), b.start);
    assert_eq!(b.start.len(), 4, "one row per zone");

    // Resuming from a timestamp the first one saw: no snapshot, and the diffs since continue
    // the first one's contents exactly (coalesced or not).
    let resume_at = a.progress;
    let (mut third, mut c, _) = subscribe(&engine, &format!("?resume_from={resume_at}")).await;
    c.start = a.at(resume_at);
    c.start_ts = resume_at;
    c.progress = resume_at;
    read_until(&mut third, &mut c, resume_at + 1).await;
    read_until(&mut first, &mut a, c.progress).await;
    assert_eq!(c.now(), a.at(c.progress));

    // A filter on a key column: the same rows, only that zone's.
    let (mut fourth, mut d, _) = subscribe(&engine, "?zone=r01-z02").await;
    let after = d.start_ts + 1;
    read_until(&mut fourth, &mut d, after).await;
    read_until(&mut first, &mut a, d.progress).await;
    let expected: Contents = a
        .at(d.progress)
        .into_iter()
        .filter(|(row, _)| zone_of(row) == "r01-z02")
        .collect();
    assert_eq!(d.now(), expected);
    assert_eq!(d.now().len(), 1);

    // The sweeps that wrote those changes are timed.
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", engine.address)])
        .output()
        .expect("curl runs");
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let sweeps: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("vibelux_view_sweep_seconds_count{view=\"zone_stats\"} ")
        })
        .unwrap_or_else(|| panic!("a sweep count in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(sweeps > 0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_between_changes_and_a_close_is_returned() {
    let engine = start_engine(PIPELINE);
    let (mut socket, mut mirror, _) = subscribe(&engine, "").await;
    use futures_util::SinkExt;
    socket
        .send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    // The pong comes among the changes, which go on adding up.
    let pong = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Pong(payload) => break payload,
            Message::Text(text) => mirror.receive(&serde_json::from_str(&text).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"still there?");
    // Changes keep coming after it (the mirror checks they never make a row's count negative).
    let target = mirror.progress + 1;
    read_until(&mut socket, &mut mirror, target).await;
    // Closing: the server answers with a close frame, then the connection ends.
    socket.close(None).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_coalesced_changes_that_add_up() {
    // 1,000 sensors: a few seconds of changes fill the socket buffers, so the server must wait
    // for the reader, and the changes that pile up meanwhile go out merged.
    let engine = start_engine(&format!(
        "{THOUSAND_SENSORS}
         CREATE MATERIALIZED VIEW zone_stats AS
           SELECT sensor_id, zone, count(*) AS n, max(temp_c) AS temp_max FROM readings GROUP BY sensor_id, zone;"
    ));
    let (mut first, mut a, _) = subscribe(&engine, "").await;
    let (mut slow, mut f, _) = subscribe(&engine, "").await;
    let reading = tokio::spawn(async move {
        // The prompt reader keeps up all along.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            let message = next(&mut first).await;
            a.receive(&message);
        }
        (first, a)
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (mut first, mut a) = reading.await.unwrap();
    let target = a.progress;
    read_until(&mut slow, &mut f, target).await;
    read_until(&mut first, &mut a, f.progress).await;
    assert_eq!(f.now(), a.at(f.progress));
    let prompt_messages = a
        .diffs
        .iter()
        .filter(|(ts, _, _)| *ts >= f.start_ts && *ts < f.progress)
        .map(|(ts, _, _)| *ts)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        f.update_messages < prompt_messages,
        "the slow reader's changes were coalesced: {} messages for the prompt reader's {prompt_messages}",
        f.update_messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upsert_envelope_keeps_one_row_per_key() {
    let engine = start_engine(PIPELINE);
    let (mut first, mut a, _) = subscribe(&engine, "").await;
    let mut upserts = connect(&engine, "?envelope=upsert").await;
    assert_eq!(next(&mut upserts).await["envelope"], "upsert");
    let mut by_key: HashMap<String, String> = HashMap::new();
    let mut changed_keys = 0;
    while changed_keys < 12 {
        let message = next(&mut upserts).await;
        let entries = match message["type"].as_str().unwrap() {
            "snapshot" => message["rows"].as_array().unwrap().clone(),
            "updates" => message["updates"].as_array().unwrap().clone(),
            "progress" => continue,
            other => panic!("unexpected {other}"),
        };
        for entry in entries {
            let key = entry["key"]["zone"].as_str().unwrap().to_string();
            assert!(!entry["row"].is_null(), "no zone is ever deleted here");
            by_key.insert(key, entry["row"].to_string());
            changed_keys += 1;
        }
    }
    // Read on to a progress message, then compare with the diff subscriber's contents then.
    let progress = loop {
        let message = next(&mut upserts).await;
        if message["type"] == "progress" {
            break message["ts"].as_u64().unwrap();
        }
        for entry in message["updates"].as_array().unwrap() {
            by_key.insert(
                entry["key"]["zone"].as_str().unwrap().to_string(),
                entry["row"].to_string(),
            );
        }
    };
    read_until(&mut first, &mut a, progress).await;
    let expected: HashMap<String, String> = a
        .at(progress)
        .into_keys()
        .map(|row| (zone_of(&row), row))
        .collect();
    assert_eq!(by_key, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_reasons() {
    let engine = start_engine(PIPELINE);
    let refused = |result: Result<_, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string(),
        ),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the subscription was accepted"),
    };
    let base = format!("ws://{}/v1/views", engine.address);
    let (status, body) =
        refused(tokio_tungstenite::connect_async(format!("{base}/nope/subscribe")).await);
    assert_eq!(status, 404);
    assert!(body.contains("there are: zone_stats"), "{body}");
    let (status, body) = refused(
        tokio_tungstenite::connect_async(format!("{base}/zone_stats/subscribe?colour=red")).await,
    );
    assert_eq!(status, 400);
    assert!(body.contains("`colour` is not an option"), "{body}");
    let (status, body) = refused(
        tokio_tungstenite::connect_async(format!(
            "{base}/zone_stats/subscribe?resume_from=99999999999999"
        ))
        .await,
    );
    assert_eq!(status, 410);
    assert!(body.contains("subscribe without resume_from"), "{body}");
}

#[test]
fn the_api_lists_views_with_keys_units_and_metrics() {
    let engine = start_engine(PIPELINE);
    let get = |path: &str| -> String {
        let output = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                &format!("http://{}{path}", engine.address),
            ])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let views: Value = serde_json::from_str(&get("/v1/views")).unwrap();
    let view = &views["views"][0];
    assert_eq!(view["name"], "zone_stats");
    assert_eq!(view["key"], serde_json::json!(["zone"]));
    assert_eq!(view["columns"][2]["unit"], "°C", "max keeps the unit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let contents: Value = serde_json::from_str(&get("/v1/views/zone_stats")).unwrap();
        if contents["rows"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{contents}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = get("/metrics");
    for expected in [
        "vibelux_source_rows_total{source=\"readings\"}",
        "vibelux_view_rows{view=\"zone_stats\"} 4",
        "vibelux_view_subscribers{view=\"zone_stats\"} 0",
        "vibelux_dataflow_step_seconds_count",
        "vibelux_watermark_lag_seconds{source=\"readings\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    assert!(get("/healthz").contains("\"ok\""));
    assert!(get("/").contains("<title>Vibelux</title>"));
    let openapi: Value = serde_json::from_str(&get("/openapi.json")).unwrap();
    assert!(openapi["paths"]["/v1/views/{name}/subscribe"].is_object());
}

fn file_lines(engine: &Engine, name: &str) -> usize {
    std::fs::read_to_string(engine.dir.path().join(name)).map_or(0, |text| text.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_sinks_can_be_added_and_dropped_while_running() {
    let engine = start_engine(PIPELINE);
    // A new materialized view is served at once, from the rows that arrive after it.
    let (status, body) = post_sql(
        &engine,
        "CREATE MATERIALIZED VIEW room_stats AS SELECT room, count(*) AS n FROM readings GROUP BY room;",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["done"],
        "created materialized view room_stats"
    );
    let url = format!("ws://{}/v1/views/room_stats/subscribe", engine.address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let schema = next(&mut socket).await;
    assert_eq!(schema["key"], serde_json::json!(["room"]));
    let mut mirror = Mirror::default();
    mirror.receive(&next(&mut socket).await);
    while mirror.now().len() < 2 {
        let message = next(&mut socket).await;
        mirror.receive(&message);
    }
    let listed = Command::new("curl")
        .args(["-s", &format!("http://{}/v1/views", engine.address)])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["views"][1]["name"], "room_stats");
    assert_eq!(listed["views"][1]["subscribers"], 1, "{listed}");
    // A sink added while running writes; dropped, it stops.
    let (status, body) = post_sql(
        &engine,
        "CREATE SINK warm FROM readings WITH (connector = 'file', path = 'warm.jsonl', format = 'json')",
    );
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while file_lines(&engine, "warm.jsonl") < 24 {
        assert!(std::time::Instant::now() < deadline, "the new sink writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = post_sql(&engine, "DROP SINK warm; DROP VIEW room_stats;");
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_drop = file_lines(&engine, "warm.jsonl");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        file_lines(&engine, "warm.jsonl"),
        after_drop,
        "a dropped sink stops"
    );
    let views: Value = serde_json::from_str(&String::from_utf8_lossy(
        &Command::new("curl")
            .args(["-s", &format!("http://{}/v1/views", engine.address)])
            .output()
            .unwrap()
            .stdout,
    ))
    .unwrap();
    assert_eq!(views["views"].as_array().unwrap().len(), 1, "{views}");
    // What the file defined is not changed from outside, and errors point into the request.
    let (status, body) = post_sql(&engine, "DROP VIEW zone_stats");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("defined in the pipeline file"),
        "{body}"
    );
    let (status, body) = post_sql(&engine, "CREATE VIEW v AS\n  SELECT colour FROM readings");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("request:2:10: "),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_the_retained_history_is_told_and_disconnected() {
    // A second of history; a reader with a tiny receive buffer that stops reading for longer.
    let engine = start_engine_with(
        &format!(
            "{THOUSAND_SENSORS}
             CREATE MATERIALIZED VIEW sensor_stats AS
               SELECT sensor_id, count(*) AS n, max(temp_c) AS temp_max FROM readings GROUP BY sensor_id;"
        ),
        &["--retention", "1s"],
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(engine.address.parse().unwrap())
        .await
        .unwrap();
    let url = format!("ws://{}/v1/views/sensor_stats/subscribe", engine.address);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut reader, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(next(&mut reader).await["type"], "schema");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reason = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("messages, then the reason")
            .expect("the reason comes before the end");
        match message {
            Ok(Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "error" {
                    break message["reason"].as_str().unwrap().to_string();
                }
            }
            Ok(_) => {}
            Err(error) => panic!("the connection broke before saying why: {error}"),
        }
    };
    assert!(reason.starts_with("fell behind"), "{reason}");
    // Then the server closes the connection.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the server did not close the connection"),
        }
    }
}

#[test]
fn the_final_report_counts_what_sinks_added_while_running_wrote() {
    let mut engine = start_engine_with(PIPELINE, &["--for", "4s"]);
    let (status, body) = post_sql(
        &engine,
        "CREATE SINK warm FROM readings WITH (connector = 'file', path = 'warm.jsonl', format = 'json')",
    );
    assert_eq!(status, 200, "{body}");
    let log = engine.finish();
    let written = file_lines(&engine, "warm.jsonl");
    assert!(written > 0, "{log}");
    assert!(
        log.contains(&format!("added while running: warm: {written} written")),
        "{log}"
    );
}
