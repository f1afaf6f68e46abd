//! What the end-to-end tests share: a `vibelux run` serving HTTP on a free port.
#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running engine in its own folder; killed when dropped.
pub struct Engine {
    child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.sql"), sql).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir.path())
        .args([
            "run",
            "pipeline.sql",
            "--http",
            "127.0.0.1:0",
            "--for",
            "120s",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split("serving http://").nth(1) {
                let _ = found.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("the engine prints its address");
    Engine {
        child,
        address,
        dir,
    }
}
