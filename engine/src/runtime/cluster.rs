//! One process of a timely cluster: which processes there are, which one this is, and what a
//! cluster run can do yet.
//!
//! Timely is a distributed engine already: every process runs the same dataflow on its own
//! worker threads, and exchanges between workers cross the network when the workers are in
//! different processes. A cluster is timely's hosts file (`host:port` per line, one line per
//! process, the same file for all) and this process's line in it. Worker `w` of process `p` is
//! the cluster's worker `p × threads + w`, so sources split over all of them as they split over
//! one process's threads, and what gathers at worker 0 (sinks, live views) gathers in
//! process 0.

use std::path::Path;

use anyhow::{Context as _, bail};
use vibelux_queries::plan::DataflowPlan;

/// The processes of a cluster and this one's place among them.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `host:port` of every process, in process order.
    pub hosts: Vec<String>,
    /// This process's index into `hosts`.
    pub process: usize,
    /// The fingerprint of the pipeline every process must run (`state::pipeline_fingerprint`):
    /// processes check it when they connect.
    pub pipeline: String,
}

impl Cluster {
    /// Reads the hosts file at `path`; `process` (or, without it, the number that ends this
    /// machine's host name, as a StatefulSet names its pods: `vibelux-2`) says which line is
    /// this process.
    pub fn from_hosts_file(path: &Path, process: Option<usize>) -> anyhow::Result<Cluster> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the hosts file {}", path.display()))?;
        let hosts: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_string)
            .collect();
        for (line, host) in hosts.iter().enumerate() {
            if host
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                bail!(
                    "the hosts file {}: process {line} is `{host}`; each line is host:port",
                    path.display()
                );
            }
        }
        if hosts.is_empty() {
            bail!("the hosts file {} lists no process", path.display());
        }
        let process = match process {
            Some(process) => process,
            None => ordinal_of_host_name().with_context(|| {
                format!(
                    "which process of {} is this? give --process (or VIBELUX_PROCESS)",
                    path.display()
                )
            })?,
        };
        if process >= hosts.len() {
            bail!(
                "--process {process}, but the hosts file {} lists {} processes (0 to {})",
                path.display(),
                hosts.len(),
                hosts.len() - 1
            );
        }
        Ok(Cluster {
            hosts,
            process,
            pipeline: String::new(),
        })
    }

    pub fn processes(&self) -> usize {
        self.hosts.len()
    }

    /// Whether this is process 0, where sinks write and live views are kept.
    pub fn is_first(&self) -> bool {
        self.process == 0
    }

    /// Timely's configuration for this process with `threads` workers.
    pub fn timely_config(&self, threads: usize) -> timely::Config {
        timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads,
                process: self.process,
                addresses: self.hosts.clone(),
                report: false,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        }
    }

    /// Why `plan` cannot run as a cluster yet: its sources whose connectors do not divide
    /// their input among processes. (A tailed table runs: it is read on process 0, timed by
    /// every process's sources through the cluster link.)
    pub fn unsupported(plan: &DataflowPlan) -> Vec<String> {
        plan.sources
            .iter()
            .filter(|source| !source.spec.runs_in_a_cluster())
            .map(|source| {
                format!(
                    "source `{}`: {} sources do not run in a cluster yet",
                    source.name,
                    source.spec.connector(),
                )
            })
            .collect()
    }
}

/// Ends this process with one line of explanation when the cluster breaks, instead of the
/// panics timely's threads raise one after another (a network thread's, then every worker's,
/// each with a backtrace). A cluster does not carry on without one of its processes: each of
/// them stops, and started again they resume together from the cluster's last checkpoint. A
/// process that cannot run with the others (another pipeline, another checkpoint) says why and
/// stops as well.
pub fn exit_when_the_cluster_breaks(process: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("timely communication error")
            || message.starts_with("MergeQueue poisoned")
            || message.starts_with("Send thread panic")
            || message.starts_with("Recv thread panic")
        {
            eprintln!(
                "vibelux: process {process} lost its connection to another process of the \
                 cluster ({message}); stopping. Start every process again: they resume \
                 together from the cluster's last checkpoint"
            );
            std::process::exit(EXIT_CLUSTER_BROKEN);
        }
        if message.starts_with("process ") && message.contains(" of the cluster") {
            eprintln!("vibelux: {message}");
            std::process::exit(2);
        }
        previous(info);
    }));
}

/// The exit status of a process whose cluster broke: EX_TEMPFAIL, "try again".
pub const EXIT_CLUSTER_BROKEN: i32 = 75;

/// The number after the last `-` of this machine's host name (`vibelux-2` → 2).
fn ordinal_of_host_name() -> anyhow::Result<usize> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_default();
    name.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .with_context(|| format!("the host name `{name}` does not end in -N"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_lists_processes_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "# two processes\n127.0.0.1:2101\n\n127.0.0.1:2102\n").unwrap();
        let cluster = Cluster::from_hosts_file(&path, Some(1)).unwrap();
        assert_eq!(cluster.hosts, ["127.0.0.1:2101", "127.0.0.1:2102"]);
        assert!(!cluster.is_first());
        let error = Cluster::from_hosts_file(&path, Some(2)).unwrap_err();
        assert!(
            error.to_string().contains("lists 2 processes (0 to 1)"),
            "{error}"
        );
        std::fs::write(&path, "127.0.0.1:2101\nvibelux-1\n").unwrap();
        let error = Cluster::from_hosts_file(&path, Some(0)).unwrap_err();
        assert!(
            error.to_string().contains("process 1 is `vibelux-1`"),
            "{error}"
        );
    }

    #[test]
    fn a_source_whose_connector_does_not_divide_its_input_keeps_a_cluster_from_starting() {
        let plan = crate::state::support::tests::plan_with_a_forgetful_source();
        assert_eq!(
            Cluster::unsupported(&plan),
            ["source `plant`: forgetful sources do not run in a cluster yet"]
        );
    }
}
