//! Durable state: where a run's checkpoints are kept, what it resumes from, and which runs can
//! be checkpointed.
//!
//! The agreement on a consistent cut lives with the participants
//! (`vibelux_interfaces::checkpoint`): sources, stateful operators and sinks. This module
//! loads the newest checkpoint before a run starts (checking that it was written by the same
//! pipeline with the same number of workers), hands each participant its part, and runs the
//! thread that stores new checkpoints (`checkpointer.rs`) in a directory (`store.rs`).
//! `docs/architecture.md` explains the protocol and why it was chosen.

mod checkpointer;
mod store;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vibelux_interfaces::checkpoint::Checkpoints;

pub use checkpointer::{CheckpointMetrics, Checkpointer, Storing};
pub use store::{StateDirectory, StoredCheckpoint};
pub use support::unsupported;

/// Where a run keeps its checkpoints, and how often it takes one.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub directory: PathBuf,
    pub interval: Duration,
    /// Identifies the pipeline (a hash of its SQL, comments and layout aside): a checkpoint is
    /// resumed only by the pipeline that wrote it.
    pub pipeline: String,
}

/// What a checkpointed run starts from.
pub struct Resumed {
    pub checkpoints: Arc<Checkpoints>,
    pub store: StateDirectory,
    /// The checkpoint resumed from: its id, when it was taken, whether it was a run's last.
    pub from: Option<(u64, String, bool)>,
}

/// Opens the state directory and loads the checkpoint to resume from, if there is one.
pub fn resume(options: &StateOptions, workers: usize) -> anyhow::Result<Resumed> {
    let store = StateDirectory::open(&options.directory)?;
    let latest = store.latest()?;
    let directory = options.directory.display();
    let (last_id, parts, from) = match latest {
        None => (0, BTreeMap::new(), None),
        Some(stored) => {
            if stored.pipeline != options.pipeline {
                anyhow::bail!(
                    "the checkpoint in {directory} was taken by another version of this pipeline \
                     (the file changed since); resuming an edited pipeline is not supported yet. \
                     Restore the pipeline, or start afresh with another --state directory (or \
                     remove {directory})"
                );
            }
            if stored.workers != workers {
                anyhow::bail!(
                    "the checkpoint in {directory} was taken with --workers {}; resume it with \
                     --workers {} (changing the worker count of a checkpointed run is not \
                     supported yet), or start afresh with another --state directory",
                    stored.workers,
                    stored.workers
                );
            }
            let from = Some((stored.id, stored.taken_at.clone(), stored.cut.is_none()));
            (stored.id, stored.parts, from)
        }
    };
    Ok(Resumed {
        checkpoints: Arc::new(Checkpoints::new(last_id, parts)),
        store,
        from,
    })
}

/// Stores checkpoint 0 of a state directory that has none: where each sink's output stood
/// before the first run wrote anything (a file's length; a warehouse's next epoch). A crash
/// before the first real checkpoint then restores this, and the rows the crashed run wrote are
/// cut away before they are produced again, instead of being kept twice.
pub fn store_baseline(
    store: &StateDirectory,
    options: &StateOptions,
    workers: usize,
    sinks: BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    store.store(&StoredCheckpoint {
        format: store::FORMAT,
        id: 0,
        pipeline: options.pipeline.clone(),
        workers,
        taken_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        cut: Some(0),
        parts: sinks,
    })?;
    Ok(())
}

/// The fingerprint of a pipeline: a hash of its SQL tokens, so that comments, blank lines and
/// indentation can change without making its checkpoints someone else's.
pub fn pipeline_fingerprint(text: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let canonical = match Tokenizer::new(&GenericDialect {}, text).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .filter(|token| !matches!(token, Token::Whitespace(_)))
            .map(|token| token.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        // Not SQL the planner would take either: the text as it is.
        Err(_) => text.to_string(),
    };
    // xxHash64 is specified, so the fingerprint stays the same across builds and versions.
    let hash = twox_hash::XxHash64::oneshot(0, canonical.as_bytes());
    format!("{hash:016x}-{}", canonical.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_layout_do_not_change_a_pipelines_fingerprint_but_its_sql_does() {
        let sql = "CREATE VIEW v AS SELECT zone, count(*) AS n FROM r GROUP BY zone;";
        let commented = "-- per zone\nCREATE VIEW v AS\n  SELECT zone, count(*) AS n  /* all */\n  FROM r GROUP BY zone;\n";
        assert_eq!(pipeline_fingerprint(sql), pipeline_fingerprint(commented));
        let edited = sql.replace("count(*)", "sum(1)");
        assert_ne!(pipeline_fingerprint(sql), pipeline_fingerprint(&edited));
    }
}
