//! The audit trail: one JSON line for every change made over the API and every refusal.
//!
//! Who changed the pipeline, who acknowledged an alarm, who was turned away and from where:
//! a site that lets people act on its equipment over a network must be able to answer these
//! after the fact. The trail is a file of JSON lines, appended as things happen (a line is
//! written whole, before the answer is sent, so a `kill -9` loses nothing a caller was told
//! of). The pipeline reads it back as a relation with `CREATE SOURCE audit WITH (connector =
//! 'audit')`, whose columns are the fields written here (`vibelux_connectors::audit`), to
//! sink, window or alarm on (`docs/security.md`).
//!
//! Reads (views, metrics) are not recorded, only a token's first use in a run: a dashboard
//! polling every second would bury the changes among its reads.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use crate::auth::Role;

/// The longest target kept whole: a posted body may be a megabyte, the trail keeps its start.
const TARGET_CHARS: usize = 4096;

fn shortened(target: &str) -> String {
    match target.char_indices().nth(TARGET_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &target[..cut], target.len()),
        None => target.to_string(),
    }
}

/// `greenhouse.sql` keeps its trail in `greenhouse.audit.jsonl` in the working directory.
pub fn default_audit_path(pipeline: &Path) -> PathBuf {
    let stem = pipeline.file_stem().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("{stem}.audit.jsonl"))
}

/// Where a request came from, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// One thing that happened.
pub struct AuditEntry<'a> {
    /// The token's name, or `local` without tokens, or `anonymous` for a request that gave none.
    pub actor: &'a str,
    pub role: Option<Role>,
    /// `sql`, `alarm`, `subscribe`, `token`, `refused`.
    pub action: &'a str,
    /// What it was done to: the statements, `alarm/action`, a view, a path.
    pub target: &'a str,
    /// `ok`, or `refused`/`failed`.
    pub outcome: &'a str,
    /// The answer's reason, when not ok.
    pub detail: &'a str,
    pub peer: Option<Peer>,
}

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// Tokens seen in this run, so a first use is recorded once.
    seen: Mutex<HashSet<String>>,
}

impl AuditLog {
    /// Opens (creating, appending) the trail at `path`.
    pub fn open(path: &Path) -> anyhow::Result<AuditLog> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| {
                anyhow::anyhow!("cannot open the audit log {}: {error}", path.display())
            })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            seen: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, entry: AuditEntry<'_>) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // Timed under the lock: lines are in time order, which the relation's watermark needs.
        let line = json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "actor": entry.actor,
            "role": entry.role.map(Role::name),
            "action": entry.action,
            "target": shortened(entry.target),
            "outcome": entry.outcome,
            "detail": entry.detail,
            "peer": entry.peer.map(|peer| peer.0.to_string()),
        })
        .to_string();
        // One write per line: appends from one process land whole.
        if let Err(error) = file.write_all(format!("{line}\n").as_bytes()) {
            tracing::error!(
                "cannot write the audit log {}: {error}; lost: {line}",
                self.path.display()
            );
        }
    }

    /// Whether `token` is used for the first time in this run.
    pub fn first_use(&self, token: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string())
    }
}
