//! What a sink added over the API may reach: files inside the data directory, hosts on the
//! allowlist, PLC registers with limits, and a bounded number of added views and sinks.
//!
//! A pipeline file is written by whoever deploys the engine; a statement posted to the API is
//! written by whoever holds an engineer's token. The second must not be able to truncate
//! `/etc/passwd` through a file sink, reach the plant network's other hosts through a webhook,
//! write a register with no bounds, or grow the dataflow until every step takes 200 ms. The
//! checks read each sink's [`Reach`], which its connector fills in: the engine knows no
//! connector by name.

use std::path::{Component, Path, PathBuf};

use vibelux_interfaces::connector::Reach;

/// The limits on what the API may add.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Files written by API-created sinks stay inside it (canonical).
    pub data_dir: PathBuf,
    /// `host` or `host:port` entries that API-created sinks may connect to.
    pub outbound: Vec<String>,
    /// Views and sinks that may exist at once beyond the pipeline file's.
    pub max_objects: usize,
}

impl ApiLimits {
    /// The working directory as data directory, no outbound host, 100 objects.
    pub fn here() -> ApiLimits {
        ApiLimits {
            data_dir: std::env::current_dir()
                .and_then(|dir| dir.canonicalize())
                .unwrap_or_else(|_| PathBuf::from(".")),
            outbound: Vec::new(),
            max_objects: DEFAULT_MAX_API_OBJECTS,
        }
    }

    /// Why a sink named `sink` that reaches `reach` (acting on equipment or not) may not be
    /// added, if it may not.
    pub fn refusal(&self, sink: &str, reach: &Reach, actuates: bool) -> Option<String> {
        for path in reach.paths.iter().chain(&reach.reads) {
            if let Err(why) = self.inside(path) {
                return Some(format!(
                    "sink `{sink}` may not use {}: {why}; sinks added over the API keep to the data directory {} (--data-dir)",
                    path.display(),
                    self.data_dir.display()
                ));
            }
        }
        for host in &reach.hosts {
            if !self.allows_host(host) {
                return Some(format!(
                    "sink `{sink}` may not connect to {host}: sinks added over the API reach only hosts allowed with --allow-outbound HOST[:PORT]"
                ));
            }
        }
        if actuates {
            if reach.limits_inline {
                return Some(format!(
                    "sink `{sink}` writes to a PLC with a tag map given inline: one added over the API takes its tag map (and the limits in it) from a file"
                ));
            }
            if !reach.unbounded.is_empty() {
                return Some(format!(
                    "sink `{sink}` could write {} with no `min` and `max`: a PLC sink added over the API needs both on every register it may write",
                    reach.unbounded.join(", ")
                ));
            }
        }
        None
    }

    fn inside(&self, path: &Path) -> Result<(), String> {
        if path.components().any(|c| c == Component::ParentDir) {
            return Err("`..` is not allowed in its path".into());
        }
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|error| format!("the working directory: {error}"))?
                .join(path)
        };
        // The deepest part of the path that exists, resolved through symlinks: a link inside
        // the data directory that points out of it leads out. A dangling link counts as
        // existing, and cannot be resolved.
        let mut existing = absolute.as_path();
        while existing.symlink_metadata().is_err() {
            existing = existing
                .parent()
                .ok_or_else(|| "no part of it exists".to_string())?;
        }
        let resolved = existing
            .canonicalize()
            .map_err(|error| format!("cannot resolve {}: {error}", existing.display()))?;
        if resolved.starts_with(&self.data_dir) {
            Ok(())
        } else {
            Err(format!("it leads to {}", resolved.display()))
        }
    }

    fn allows_host(&self, host_port: &str) -> bool {
        let host_port = host_port.to_ascii_lowercase();
        let host = match host_port.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => host_port.as_str(),
        };
        self.outbound.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            allowed == host_port || allowed == host
        })
    }
}

pub const DEFAULT_MAX_API_OBJECTS: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: &Path) -> ApiLimits {
        ApiLimits {
            data_dir: dir.canonicalize().unwrap(),
            outbound: vec!["broker.plant".into(), "127.0.0.1:9000".into()],
            max_objects: 10,
        }
    }

    fn writing(path: PathBuf) -> Reach {
        Reach {
            paths: vec![path],
            ..Reach::default()
        }
    }

    #[test]
    fn files_stay_inside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let limits = limits(dir.path());
        let ok = |path: PathBuf| limits.refusal("s", &writing(path), false);
        assert_eq!(ok(dir.path().join("out/new/alarms.jsonl")), None);
        assert!(
            ok(dir.path().join("../escape.jsonl"))
                .unwrap()
                .contains("`..`")
        );
        assert!(
            ok(PathBuf::from("/etc/passwd"))
                .unwrap()
                .contains("leads to /etc/passwd")
        );
        // A symlink inside pointing out, to a folder or to a file not there yet.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert!(
            ok(dir.path().join("link/x.jsonl"))
                .unwrap()
                .contains("leads to")
        );
        std::os::unix::fs::symlink(outside.path().join("nothing"), dir.path().join("dangling"))
            .unwrap();
        assert!(
            ok(dir.path().join("dangling"))
                .unwrap()
                .contains("cannot resolve")
        );
    }

    #[test]
    fn hosts_come_from_the_allowlist_by_name_or_with_their_port() {
        let dir = tempfile::tempdir().unwrap();
        let limits = limits(dir.path());
        let connecting = |host: &str| {
            limits.refusal(
                "s",
                &Reach {
                    hosts: vec![host.into()],
                    ..Reach::default()
                },
                false,
            )
        };
        assert_eq!(connecting("broker.plant:1883"), None);
        assert_eq!(connecting("127.0.0.1:9000"), None);
        assert!(
            connecting("127.0.0.1:22")
                .unwrap()
                .contains("--allow-outbound")
        );
        assert!(connecting("10.0.0.9:502").is_some());
    }

    #[test]
    fn a_plc_sink_needs_limits_on_every_register_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ApiLimits {
            outbound: vec!["127.0.0.1".into()],
            ..super::tests::limits(dir.path())
        };
        let plc = Reach {
            hosts: vec!["127.0.0.1:502".into()],
            unbounded: vec!["supply_setpoint".into()],
            ..Reach::default()
        };
        assert!(
            limits
                .refusal("plc", &plc, true)
                .unwrap()
                .contains("supply_setpoint")
        );
        // In shadow (acting on nothing), the limits are not needed.
        assert_eq!(limits.refusal("plc", &plc, false), None);
        let inline = Reach {
            limits_inline: true,
            unbounded: vec![],
            ..plc
        };
        assert!(
            limits
                .refusal("plc", &inline, true)
                .unwrap()
                .contains("inline")
        );
    }
}
