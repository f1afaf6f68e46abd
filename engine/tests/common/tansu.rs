//! A real Kafka-compatible broker (Tansu) on a free loopback port, keeping its topics, messages
//! and committed offsets in SQLite (so a restart loses nothing), and the Python Kafka peer.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    pub port: u16,
    child: Option<Child>,
    /// Where the broker keeps its data (`tansu.db`).
    dir: tempfile::TempDir,
}

/// The broker binary: `$VIBELUX_TANSU` (scripts/test.sh installs it and sets this), else `tansu`.
fn binary() -> String {
    std::env::var("VIBELUX_TANSU").unwrap_or_else(|_| "tansu".to_string())
}

impl Tansu {
    pub fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Tansu {
        let mut broker = Tansu {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        broker.launch();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (scripts/test.sh installs it and sets VIBELUX_TANSU)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (as a crash would) and starts it again on the same port and data after
    /// `down`.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.launch();
    }

    /// Runs the confluent-kafka peer (`tests/peers/kafka_peer.py`) with `args`; returns stdout.
    pub fn peer(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/kafka_peer.py");
        let output = Command::new("python3")
            .arg(script)
            .arg(self.bootstrap())
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "kafka peer {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
