//! A real Mosquitto broker on a free loopback port, with persistence, for the MQTT tests.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
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
