//! End-to-end: sinks on a disk that fills up. A small tmpfs (mounted by the test, as root) is
//! filled to the last byte; the sink must hold its rows, say so on `/healthz`, hold the source
//! back, and deliver every row once space comes back — or, stopped before that, fail the run
//! saying how many rows it could not deliver.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READINGS: usize = 20_000;

/// A tmpfs of a few MiB at `path`, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.write_all(&[0u8; 1]);
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// An engine replaying `READINGS` readings into `sink_options`, serving HTTP on a free port.
struct Engine {
    child: Child,
    log: PathBuf,
    address: String,
}

impl Engine {
    fn start(dir: &Path, sink_options: &str) -> Engine {
        let mut lines = Vec::new();
        for index in 0..READINGS {
            lines.extend_from_slice(
                format!(
                    "{{\"sensor_id\":\"s{index}\",\"ts\":{},\"temp_c\":21.5}}\n",
                    1_780_272_000_000u64 + index as u64 * 1000
                )
                .as_bytes(),
            );
        }
        std::fs::write(dir.join("in.jsonl"), lines).unwrap();
        std::fs::write(
            dir.join("pipeline.sql"),
            format!(
                "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
                   WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
                 WITH (connector = 'file', path = 'in.jsonl');
                 CREATE SINK out FROM readings WITH ({sink_options});"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = dir.join("engine.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
            .current_dir(dir)
            .args(["run", "pipeline.sql", "--http", &address])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Engine {
            child,
            log,
            address,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "waited for {text:?} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path`: the status and the body.
    fn get(&self, path: &str) -> (String, String) {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.address))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    }

    /// Waits for the run to end; whether it succeeded, and what it printed.
    fn wait(&mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), self.log());
            }
            assert!(Instant::now() < deadline, "the run did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks that the stalled sink shows on `/healthz` and in `/metrics`, and that the source
    /// was held back rather than read to its end.
    fn check_stalled(&self) {
        let (status, body) = self.get("/healthz");
        assert_eq!(status, "503", "{body}");
        assert!(
            body.contains("\"degraded\"") && body.contains("No space left on device"),
            "{body}"
        );
        let (_, metrics) = self.get("/metrics");
        assert!(
            metrics.contains("vibelux_sink_stalled{sink=\"out\"} 1"),
            "{metrics}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let rows_read = metrics
            .lines()
            .find_map(|line| line.strip_prefix("vibelux_source_rows_total{source=\"readings\"} "))
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap();
        assert!(
            rows_read < READINGS,
            "flow control should hold the source back, but it read {rows_read} rows"
        );
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sinks_on_a_full_disk_hold_their_rows_and_deliver_them_all_when_space_returns() {
    if !running_as_root() {
        eprintln!("skipped: mounting the small tmpfs this test fills needs root (CI runs as root)");
        return;
    }
    for (kind, options) in [
        ("file", "connector = 'file', path = 'disk/rows.jsonl'"),
        (
            "parquet",
            "connector = 'parquet', path = 'disk/warehouse', rollover_rows = '1000'",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let disk = SmallDisk::mount(&dir.path().join("disk"));
        disk.fill();
        let mut engine = Engine::start(dir.path(), options);
        engine.wait_for_log("the sink cannot deliver");
        engine.check_stalled();
        disk.free();
        let (succeeded, log) = engine.wait();
        assert!(succeeded, "{kind}: {log}");
        assert!(log.contains("the sink delivers again"), "{kind}: {log}");
        assert!(
            log.contains(&format!("out: {READINGS} written")),
            "{kind}: {log}"
        );
        assert_eq!(
            log.matches("the sink cannot deliver").count(),
            1,
            "{kind}: logged once, not once per retry:\n{log}"
        );
        let delivered = match kind {
            "file" => std::fs::read_to_string(dir.path().join("disk/rows.jsonl"))
                .unwrap()
                .lines()
                .count(),
            _ => committed_rows(&dir.path().join("disk/warehouse")),
        };
        assert_eq!(delivered, READINGS, "{kind}");
    }
}

#[test]
fn a_run_stopped_while_its_sink_cannot_deliver_fails_and_says_how_many_rows() {
    if !running_as_root() {
        eprintln!("skipped: mounting the small tmpfs this test fills needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"));
    disk.fill();
    let mut engine = Engine::start(dir.path(), "connector = 'file', path = 'disk/rows.jsonl'");
    engine.wait_for_log("the sink cannot deliver");
    Command::new("kill")
        .args(["-INT", &engine.child.id().to_string()])
        .status()
        .unwrap();
    let (succeeded, log) = engine.wait();
    assert!(!succeeded, "{log}");
    assert!(
        log.contains("sink out could not deliver") && log.contains("No space left on device"),
        "{log}"
    );
}

/// Rows the warehouse's manifests say were committed.
fn committed_rows(warehouse: &Path) -> usize {
    let mut rows = 0;
    for entry in std::fs::read_dir(warehouse.join("_manifests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            for file in manifest["files"].as_array().unwrap() {
                rows += file["rows"].as_u64().unwrap() as usize;
                assert!(warehouse.join(file["file"].as_str().unwrap()).exists());
            }
        }
    }
    rows
}
