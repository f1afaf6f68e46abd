//! Running a cluster of `vibelux run` processes on loopback, for the cluster tests: the
//! command, a hosts file, starting and waiting for the processes, and their logs.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::tansu::free_port;

/// `vibelux run pipeline.sql` in `dir` without HTTP (and without checkpoints unless `args`
/// give `--state`).
pub fn vibelux(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vibelux"));
    command
        .current_dir(dir)
        .args(["run", "pipeline.sql", "--http", "off"])
        .args(args);
    if !args.contains(&"--state") {
        command.arg("--no-state");
    }
    command
}

/// A hosts file of `processes` free loopback ports in `dir`.
pub fn write_hosts(dir: &Path, processes: usize) {
    let hosts: Vec<String> = (0..processes)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    std::fs::write(dir.join("hosts"), hosts.join("\n")).unwrap();
}

/// The last lines of both processes' logs (`name-P.log` in `dir`).
pub fn logs_of(dir: &Path, name: &str) -> String {
    (0..2)
        .map(|process| {
            let log = std::fs::read_to_string(dir.join(format!("{name}-{process}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("-- process {process}:\n{tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The processes of a checkpointed cluster, started in `dir` with stderr to `name-P.log`.
pub fn start_checkpointed_cluster(dir: &Path, name: &str) -> Vec<Child> {
    write_hosts(dir, 2);
    (0..2)
        .map(|process| {
            let log = std::fs::File::create(dir.join(format!("{name}-{process}.log"))).unwrap();
            vibelux(dir, &["--state", "state", "--checkpoint-interval", "300ms"])
                .args(["--hosts", "hosts", "--process", &process.to_string()])
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect()
}

/// A cluster's processes, killed if a test fails while they run (they would otherwise outlive
/// it and hold its output pipes open).
pub struct Processes(pub Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits up to a minute for every process of a cluster to end; returns how each ended. A
/// process still running then fails the test with `what` and the processes' logs in `dir`.
pub fn exit_statuses(
    children: &mut [Child],
    what: &str,
    dir: &Path,
    name: &str,
) -> Vec<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    children
        .iter_mut()
        .map(|child| {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "{what}:\n{}", logs_of(dir, name));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

/// Whether every process ended well.
pub fn all_succeeded(statuses: &[ExitStatus]) -> bool {
    statuses.iter().all(ExitStatus::success)
}

/// Two processes of `pipeline.sql` in `dir` for `run_for`, each serving HTTP on a port of its
/// own (returned) and no Postgres port; stderr to `LOG-P.log` when a log name is given.
pub fn start_serving_cluster(
    dir: &Path,
    run_for: &str,
    log: Option<&str>,
) -> (Vec<u16>, Vec<Child>) {
    let hosts = format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port());
    std::fs::write(dir.join("hosts"), hosts).unwrap();
    let http: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let children = (0..2)
        .map(|process| {
            let stderr = match log {
                Some(name) => Stdio::from(
                    std::fs::File::create(dir.join(format!("{name}-{process}.log"))).unwrap(),
                ),
                None => Stdio::null(),
            };
            Command::new(env!("CARGO_BIN_EXE_vibelux"))
                .current_dir(dir)
                .args([
                    "run",
                    "pipeline.sql",
                    "--no-state",
                    "--for",
                    run_for,
                    "--pg",
                    "off",
                ])
                .args(["--http", &format!("127.0.0.1:{}", http[process])])
                .args(["--hosts", "hosts", "--process", &process.to_string()])
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap()
        })
        .collect();
    (http, children)
}

/// Waits (a minute at most) until `ready` holds, then kills process `victim` of the cluster run
/// `name`: the other process stops by itself, and neither ends well.
pub fn kill_once(
    dir: &Path,
    name: &str,
    children: &mut Processes,
    victim: usize,
    ready: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{name} never got there:\n{}",
            logs_of(dir, name)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    children.0[victim].kill().unwrap();
    let statuses = exit_statuses(&mut children.0, "a process kept running", dir, name);
    assert!(!all_succeeded(&statuses));
}

/// Stops the cluster run `name` as Ctrl-C on process `process` does (the others follow) and
/// checks that every process ended well.
pub fn stop_cleanly(dir: &Path, name: &str, children: &mut Processes, process: usize) {
    Command::new("kill")
        .args(["-INT", &children.0[process].id().to_string()])
        .status()
        .unwrap();
    let statuses = exit_statuses(&mut children.0, "a process did not stop", dir, name);
    assert!(all_succeeded(&statuses), "{}", logs_of(dir, name));
}
