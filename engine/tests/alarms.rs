//! Alarms in running pipelines: the simulator's injected dropout raises and clears a deadman at
//! the exact instants its readings imply; a deadman fires while no input arrives at all; the
//! alarm state is a live view.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::output::{json_lines, wait_for_lines};
use common::start_engine;
use serde_json::Value;

fn millis(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn text_of(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

#[test]
fn a_dropout_raises_and_clears_the_deadman_at_the_instants_its_readings_imply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '2', sensors_per_zone = '2',
               interval = '10 seconds', speed = 'max', duration = '1d', seed = '4',
               faults = 'dropout', faults_path = 'faults.jsonl');
         CREATE ALARM quiet ON readings PER sensor_id WHEN STALE FOR INTERVAL '1 minute'
           SEVERITY 'high' MESSAGE '{sensor_id} silent since {ts}';
         CREATE SINK raw FROM readings WITH (connector = 'file', path = 'readings.jsonl');
         CREATE SINK quiet_out FROM quiet WITH (connector = 'file', path = 'quiet.jsonl');",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args(["run", "pipeline.sql", "--http", "off", "--workers", "2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let faults = json_lines(&dir.path().join("faults.jsonl"));
    assert_eq!(faults.len(), 1, "{faults:?}");
    let target = faults[0]["target"].as_str().unwrap();
    let start = millis(faults[0]["start"].as_str().unwrap());
    let end = millis(faults[0]["end"].as_str().unwrap());

    // What the readings imply: silent from the last reading before the dropout; the first one
    // after it clears the alarm.
    let mut readings: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let raw = json_lines(&dir.path().join("readings.jsonl"));
    for row in &raw {
        readings
            .entry(row["sensor_id"].as_str().unwrap())
            .or_default()
            .push(millis(row["ts"].as_str().unwrap()));
    }
    let times = readings.get_mut(target).unwrap();
    times.sort_unstable();
    let last_before = *times.iter().rev().find(|t| **t < start).unwrap();
    let first_after = *times.iter().find(|t| **t >= end).unwrap();

    let events = json_lines(&dir.path().join("quiet.jsonl"));
    let summary: Vec<(String, String, String, String)> = events
        .iter()
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_string();
            (
                field("sensor_id"),
                field("state"),
                field("ts"),
                field("message"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                target.to_string(),
                "active".to_string(),
                text_of(last_before + 60_000),
                format!("{target} silent since {}", text_of(last_before)),
            ),
            (
                target.to_string(),
                "cleared".to_string(),
                text_of(first_after),
                format!("{target} silent since {}", text_of(first_after)),
            ),
        ],
        "dropout of {target} from {} to {}",
        text_of(start),
        text_of(end)
    );
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn get(address: &str, path: &str) -> Value {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{address}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

#[test]
fn a_deadman_fires_while_nothing_arrives_and_the_state_view_shows_it() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("live.jsonl");
    // Two sensors report every second for five seconds up to now; then nothing at all.
    let now = now_millis();
    let mut lines = String::new();
    for offset in (0..5).rev() {
        for sensor in ["s1", "s2"] {
            let ts = now - offset * 1_000;
            lines.push_str(&format!(
                "{{\"sensor_id\":\"{sensor}\",\"ts\":{ts},\"temp_c\":21.0}}\n"
            ));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE live (sensor_id TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = '{}', mode = 'tail', idle_timeout = '1 second');
         CREATE ALARM quiet ON live PER sensor_id WHEN STALE SEVERITY 'high';
         CREATE SINK quiet_out FROM quiet WITH (connector = 'file', path = 'quiet.jsonl');",
        input.display()
    ));
    // 3 × the 1 s interval after the last reading: each sensor's alarm, from the clock alone.
    let events = wait_for_lines(&engine.dir.path().join("quiet.jsonl"), 2);
    let last = text_of(now);
    for event in &events {
        assert_eq!(event["state"], "active", "{events:?}");
        let raised = millis(event["ts"].as_str().unwrap());
        assert_eq!(
            raised - now,
            3_000,
            "raised at {raised}, last reading {last}"
        );
    }
    // The state view is a live view: GET it like any other.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = get(&engine.address, "/v1/views/quiet_state");
        let rows = state["rows"].as_array().cloned().unwrap_or_default();
        if rows.len() == 2 && rows.iter().all(|row| row["state"] == "active") {
            assert_eq!(rows[0]["severity"], "high", "{state}");
            assert_eq!(rows[0]["message"], "quiet: sensor_id s1", "{state}");
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(address: &str, path: &str, body: &str) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("http://{address}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn people_acknowledge_and_shelve_alarms_through_the_api() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("live.jsonl");
    let now = now_millis();
    // z1 is hot, z2 is not; readings every second up to now.
    let mut lines = String::new();
    for offset in (0..5).rev() {
        for (zone, temp) in [("z1", 35.0), ("z2", 20.0)] {
            let ts = now - offset * 1_000;
            lines.push_str(&format!(
                "{{\"zone\":\"{zone}\",\"ts\":{ts},\"temp_c\":{temp}}}\n"
            ));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE live (zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = '{}', mode = 'tail', idle_timeout = '1 second');
         CREATE ALARM hot ON live PER zone WHEN temp_c > 30 SEVERITY 'critical';
         CREATE SINK hot_out FROM hot WITH (connector = 'file', path = 'hot.jsonl');",
        input.display()
    ));
    let events = engine.dir.path().join("hot.jsonl");
    wait_for_lines(&events, 1);
    let address = engine.address.clone();
    let path = "/v1/alarms/hot/acknowledge";
    // Refusals name the problem.
    let (status, body) = post(&address, path, r#"{"key": {"zone": "z2"}, "by": "maria"}"#);
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no instance with that key")
    );
    let (status, body) = post(&address, path, r#"{"key": {"room": "r1"}, "by": "maria"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("keyed by [zone]"),
        "{body}"
    );
    let (status, body) = post(
        &address,
        "/v1/alarms/cold/acknowledge",
        r#"{"key": {}, "by": "m"}"#,
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &address,
        "/v1/alarms/hot/shelve",
        r#"{"key": {"zone": "z1"}, "by": "m"}"#,
    );
    assert_eq!(status, 400, "{body}");

    // Acknowledged, with who and why recorded in the transition and the state view.
    let (status, body) = post(
        &address,
        path,
        r#"{"key": {"zone": "z1"}, "by": "maria", "note": "opening vents"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let rows = wait_for_lines(&events, 2);
    assert_eq!(rows[1]["state"], "acknowledged", "{rows:?}");
    assert_eq!(rows[1]["actor"], "maria");
    assert_eq!(rows[1]["note"], "opening vents");
    assert_eq!(rows[1]["active_since"], rows[0]["ts"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = get(&address, "/v1/views/hot_state");
        if state["rows"][0]["state"] == "acknowledged" {
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second acknowledgement is refused: it is no longer active-unacknowledged.
    let (status, _) = post(&address, path, r#"{"key": {"zone": "z1"}, "by": "maria"}"#);
    assert_eq!(status, 409);

    // Shelved for a while, then unshelved by hand: the state it hid comes back.
    let (status, body) = post(
        &address,
        "/v1/alarms/hot/shelve",
        r#"{"key": {"zone": "z1"}, "by": "sam", "for": "1h", "note": "sensor maintenance"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let rows = wait_for_lines(&events, 3);
    assert_eq!(rows[2]["state"], "shelved", "{rows:?}");
    assert_eq!(rows[2]["actor"], "sam");
    let (status, body) = post(
        &address,
        "/v1/alarms/hot/unshelve",
        r#"{"key": {"zone": "z1"}, "by": "sam"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let rows = wait_for_lines(&events, 4);
    assert_eq!(rows[3]["state"], "acknowledged", "{rows:?}");
    // Transitions of an instance are strictly ordered in time.
    let times: Vec<i64> = rows
        .iter()
        .map(|row| millis(row["ts"].as_str().unwrap()))
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{rows:?}");
}

/// A local HTTP receiver: answers 500 to the first request (so the sink must retry), then 200;
/// returns the bodies it accepted.
fn start_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = accepted.clone();
    std::thread::spawn(move || {
        let mut requests = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            requests += 1;
            let status = if requests == 1 {
                "500 Internal Server Error"
            } else {
                bodies
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice::<Value>(&body).unwrap());
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (port, accepted)
}

#[test]
fn transitions_reach_an_mqtt_subscriber_and_a_webhook_and_failures_are_kept() {
    let broker = common::mosquitto::Mosquitto::start();
    let subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "alarms/#", "-v", "-C", "2", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // subscribed before anything is published
    let (port, received) = start_receiver();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed); // nothing listens there
    let dir = tempfile::tempdir().unwrap();
    let readings: String = [(0, 35.0), (1, 36.0), (2, 20.0)]
        .iter()
        .map(|(minute, temp)| {
            format!(
                "{{\"zone\":\"z1\",\"ts\":\"2026-06-01T00:0{minute}:00Z\",\"temp_c\":{temp}}}\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("readings.jsonl"), readings).unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE readings (zone TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
               WITH (connector = 'file', path = 'readings.jsonl');
             CREATE ALARM hot ON readings PER zone WHEN temp_c > 30 SEVERITY 'high'
               MESSAGE '{{zone}} at {{temp_c}} °C';
             CREATE SINK to_mqtt FROM hot
               WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{}', topic = 'alarms/{{zone}}/{{state}}',
                     audit = 'mqtt_audit.jsonl');
             CREATE SINK to_webhook FROM hot
               WITH (connector = 'webhook', url = 'http://127.0.0.1:{port}/alarms', backoff = '50ms',
                     header.x_vibelux_token = 'secret');
             CREATE SINK to_nowhere FROM hot
               WITH (connector = 'webhook', url = 'http://127.0.0.1:{closed_port}/', retries = '2',
                     backoff = '10ms', dead_letter = 'undelivered.jsonl');",
            broker.port
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args(["run", "pipeline.sql", "--http", "off"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    let published = subscriber.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&published.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("alarms/z1/active {"), "{lines:?}");
    assert!(lines[0].contains(r#""message":"z1 at 35 °C""#), "{lines:?}");
    assert!(lines[1].starts_with("alarms/z1/cleared {"), "{lines:?}");

    // Each message's outcome is on record: the broker acknowledged both.
    let mqtt_audit = json_lines(&dir.path().join("mqtt_audit.jsonl"));
    let acknowledged: Vec<(&str, &str)> = mqtt_audit
        .iter()
        .map(|line| {
            (
                line["topic"].as_str().unwrap(),
                line["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        acknowledged,
        [
            ("alarms/z1/active", "acknowledged"),
            ("alarms/z1/cleared", "acknowledged")
        ],
        "{mqtt_audit:?}"
    );
    assert_eq!(mqtt_audit[0]["row"]["message"], "z1 at 35 °C");

    // The receiver refused the first attempt; the retry delivered it, then the next one.
    let bodies = received.lock().unwrap().clone();
    let states: Vec<&str> = bodies
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "cleared"], "{bodies:?}");
    assert_eq!(bodies[0]["ts"], "2026-06-01T00:00:00.000");
    assert_eq!(bodies[1]["ts"], "2026-06-01T00:02:00.000");

    // Nothing listens: each transition is tried 3 times, then kept with the reason.
    let undelivered = json_lines(&dir.path().join("undelivered.jsonl"));
    assert_eq!(undelivered.len(), 2, "{undelivered:?}");
    assert_eq!(undelivered[0]["attempts"], 3);
    assert_eq!(undelivered[0]["payload"]["state"], "active");
    assert!(
        undelivered[0]["error"].as_str().unwrap().contains("onnect"),
        "{undelivered:?}"
    );
    // Every row's outcome is on record, delivered or not.
    let audit = json_lines(&dir.path().join("to_webhook.audit.jsonl"));
    let outcomes: Vec<(&str, u64)> = audit
        .iter()
        .map(|line| {
            (
                line["outcome"].as_str().unwrap(),
                line["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("delivered", 2), ("delivered", 1)], "{audit:?}");
    assert_eq!(audit[0]["row"]["state"], "active");
    let failed = json_lines(&dir.path().join("to_nowhere.audit.jsonl"));
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1]["outcome"], "dead_letter");
}

#[test]
fn a_plc_that_does_not_answer_raises_a_device_offline_alarm_from_its_health_rows() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed); // nothing answers there
    let engine = start_engine(&format!(
        "CREATE SOURCE plc (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, quality TEXT,
           WATERMARK FOR ts AS ts)
         WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', device = 'room1-plc',
               tags = '{}', poll_interval = '200ms', timeout = '100ms');
         CREATE ALARM plc_offline ON plc_health PER device
           WHEN NOT connected FOR INTERVAL '1 second'
           SEVERITY 'critical' MESSAGE '{{device}} offline: {{error}}';
         CREATE SINK offline FROM plc_offline WITH (connector = 'file', path = 'offline.jsonl');",
        repo.join("examples/plc/room1.toml").display()
    ));
    let events = wait_for_lines(&engine.dir.path().join("offline.jsonl"), 1);
    assert_eq!(events[0]["device"], "room1-plc", "{events:?}");
    assert_eq!(events[0]["state"], "active");
    assert_eq!(events[0]["severity"], "critical");
    let message = events[0]["message"].as_str().unwrap();
    assert!(message.starts_with("room1-plc offline: "), "{message}");
}

#[test]
fn a_webhook_over_https_trusts_the_receivers_private_ca() {
    use std::io::{BufRead, BufReader};
    let certs = tempfile::tempdir().unwrap();
    let ca = common::tls::make_certificates(certs.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Python's own HTTPS server, printing each body it receives.
    let receiver = format!(
        r#"
import http.server, ssl
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        print(body.decode(), flush=True)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", {port}), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("server.pem", "server.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#
    );
    let mut server = Command::new("python3")
        .args(["-c", &receiver])
        .current_dir(certs.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("readings.jsonl"),
        "{\"zone\":\"z1\",\"ts\":\"2026-06-01T00:00:00Z\",\"temp_c\":35}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipeline.sql"),
        format!(
            "CREATE SOURCE readings (zone TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
               WITH (connector = 'file', path = 'readings.jsonl');
             CREATE ALARM hot ON readings PER zone WHEN temp_c > 30;
             CREATE SINK hook FROM hot
               WITH (connector = 'webhook', url = 'https://127.0.0.1:{port}/alarms',
                     tls_ca = '{}', retries = '0');
             CREATE SINK untrusting FROM hot
               WITH (connector = 'webhook', url = 'https://127.0.0.1:{port}/alarms', retries = '0');",
            ca.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args(["run", "pipeline.sql", "--http", "off"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let body: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(body["state"], "active");
    assert_eq!(body["zone"], "z1");
    let audit = json_lines(&dir.path().join("hook.audit.jsonl"));
    assert_eq!(audit[0]["outcome"], "delivered", "{audit:?}");
    // Without the CA, the receiver's certificate is not trusted: nothing is sent.
    let refused = json_lines(&dir.path().join("untrusting.dead.jsonl"));
    assert_eq!(refused.len(), 1, "{refused:?}");
    let error = refused[0]["error"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        error.contains("issuer") || error.contains("certificate"),
        "{error}"
    );
}
