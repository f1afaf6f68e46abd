//! A real Mosquitto broker on a free loopback port, with persistence, for the MQTT tests.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker that keeps sessions and queued messages on disk (so a restart loses
    /// nothing it acknowledged) and queues without limit for offline persistent sessions.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// A broker whose listener has `listener_options` (e.g. TLS certificate files) added.
    pub fn start_with(listener_options: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                // Run as root, Mosquitto switches to the `mosquitto` user, which cannot write
                // its state into our folder; `user root` keeps it as it is (and does nothing
                // for other users).
                "user root\nlistener {port} 127.0.0.1\n{listener_options}\nallow_anonymous true\n\
                 persistence true\npersistence_location {}/\nmax_queued_messages 0\n\
                 max_inflight_messages 100\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut broker = Mosquitto {
            port,
            child: None,
            config,
            _dir: dir,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker as a service manager would (SIGTERM: it saves its state) and starts it
    /// again on the same port after `down`.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().unwrap();
        }
        std::thread::sleep(down);
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the Paho publisher; returns it with its stdout lines.
pub fn start_publisher(
    port: u16,
    count: usize,
    rate: usize,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mqtt_publish.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([port.to_string(), count.to_string(), rate.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Waits for the publisher to report at least `acked` acknowledged messages.
pub fn wait_for_acks(lines: &std::sync::mpsc::Receiver<String>, acked: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the publisher reports progress");
        if line == "done" {
            return;
        }
        if let Some(count) = line.strip_prefix("acked ")
            && count.parse::<usize>().unwrap() >= acked
        {
            return;
        }
        assert!(!line.starts_with("unacknowledged"), "publisher: {line}");
    }
}

/// A folder holding the counting pipeline, and where it writes its rows.
pub fn counting_folder(port: u16) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        dir.path().join("pipeline.sql"),
        counting_pipeline(port, &rows),
    )
    .unwrap();
    (dir, rows)
}

/// Readings of the Paho publisher's topics (QoS 1), every row written to `output`, late rows beside it.
pub fn counting_pipeline(port: u16, output: &Path) -> String {
    counting_pipeline_with(port, output, "")
}

/// The counting pipeline with extra source options (`, protocol = '5'`).
pub fn counting_pipeline_with(port: u16, output: &Path, options: &str) -> String {
    format!(
        "CREATE SOURCE readings (room TEXT, zone TEXT, sensor_id TEXT NOT NULL, ts TIMESTAMP,
           seq BIGINT, temp_c DOUBLE, WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}',
               topic = 'site/{{room}}/{{zone}}/{{sensor_id}}', qos = '1'{options});
         CREATE SINK rows FROM readings WITH (connector = 'file', path = '{}');
         CREATE SINK late FROM readings_late WITH (connector = 'file', path = '{}');",
        output.display(),
        output.with_extension("late.jsonl").display()
    )
}
