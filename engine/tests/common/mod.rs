//! What the end-to-end tests share: a `vibelux run` serving HTTP on a free port.
#![allow(dead_code)] // each test file uses its part

pub mod cluster;
pub mod crashes;
pub mod modbus;
pub mod mosquitto;
pub mod object_storage;
pub mod output;
pub mod replays;
pub mod tansu;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A simulated facility at 60×, and per-zone counts as a materialized view (keyed by zone).
pub const PIPELINE: &str = "CREATE SOURCE readings (
      sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
    WITH (connector = 'simulator', rooms = '2', zones_per_room = '2', sensors_per_zone = '3',
          interval = '10 seconds', speed = '60x', seed = '5');
    CREATE MATERIALIZED VIEW zone_stats AS
      SELECT zone, count(*) AS n, max(temp_c) AS temp_max FROM readings GROUP BY zone;";

/// A running engine in its own folder; killed when dropped.
pub struct Engine {
    child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
    /// What it has printed to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// How it was started, to start it again.
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Engine {
    /// Waits for a run started with a `--for` to end; returns its stderr.
    pub fn finish(&mut self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the run did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100)); // the reader thread drains the pipe
        self.log.lock().unwrap().join("\n")
    }
}

impl Engine {
    /// Waits until stderr has `count` lines containing `text`.
    pub fn wait_for_log(&self, text: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(text))
                .count();
            if seen >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for {count} × {text:?} in:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of its Postgres port (started with `--pg 127.0.0.1:0`).
    pub fn pg_address(&self) -> String {
        self.wait_for_log("serving postgres://", 1);
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|line| line.contains("serving postgres://"))
            .unwrap();
        let rest = line.split("serving postgres://").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().to_string()
    }

    /// Stops the run as Ctrl-C does and waits for it to end; returns its stderr.
    pub fn interrupt(&mut self) -> String {
        self.signal("-INT")
    }

    /// Stops the run as a service manager does (SIGTERM); returns its stderr.
    pub fn terminate(&mut self) -> String {
        self.signal("-TERM")
    }

    fn signal(&mut self, signal: &str) -> String {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        self.finish()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_engine(sql: &str) -> Engine {
    start_engine_with(sql, &[])
}

pub fn start_engine_with(sql: &str, extra: &[&str]) -> Engine {
    start_engine_in_env(sql, extra, &[])
}

/// Starts an engine with `env` variables set.
pub fn start_engine_in_env(sql: &str, extra: &[&str], env: &[(&str, &str)]) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), sql).unwrap();
    let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let (child, address, log) = spawn_engine(dir.path(), &extra, &env);
    Engine {
        child,
        address,
        dir,
        log,
        extra,
        env,
    }
}

impl Engine {
    /// Kills the run as a power cut would (SIGKILL) and starts it again in the same folder,
    /// with the same arguments (and so the same state directory, when it has one).
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.start_again();
    }

    /// Starts the run again in the same folder with the same arguments, once it has ended.
    pub fn start_again(&mut self) {
        let (child, address, log) = spawn_engine(self.dir.path(), &self.extra, &self.env);
        self.child = child;
        self.address = address;
        self.log = log;
    }
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Runs `pipeline.sql` in `dir`; returns the child, its HTTP address and its stderr so far.
fn spawn_engine(
    dir: &std::path::Path,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, String, Log) {
    let asks = |flag: &str| extra.iter().any(|arg| arg == flag);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .args(["run", "pipeline.sql", "--http", "127.0.0.1:0"])
        .args(if asks("--for") {
            &[][..]
        } else {
            &["--for", "120s"][..]
        })
        // The Postgres port only where a test asks for it: parallel runs would contend for
        // its default port.
        .args(if asks("--pg") {
            &[][..]
        } else {
            &["--pg", "off"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let served = line.split("serving http://").nth(1);
            if let Some(rest) = served.or_else(|| line.split("serving https://").nth(1)) {
                let _ = found.send(rest.split_whitespace().next().unwrap().to_string());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("the engine prints its address");
    (child, address, log)
}

pub fn create_token(file: &std::path::Path, name: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["auth", "token", "--name", name, "--role", role, "--file"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Sends statements to `POST /v1/sql`; returns the status and the JSON answer.
pub fn post_sql(engine: &Engine, sql: &str) -> (u16, serde_json::Value) {
    let output = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/sql",
            "--data-binary",
            sql,
            &format!("http://{}/v1/sql", engine.address),
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// One request with curl: `headers` as `Name: value`, `body` posted as is.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> Answer {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "--max-time",
            "3",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg(format!("http://{address}{path}"));
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}
