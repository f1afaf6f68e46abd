//! Durable state: where a run's checkpoints are kept, what it resumes from, and which runs can
//! be checkpointed.
//!
//! The agreement on a consistent cut lives with the participants
//! (`vibelux_interfaces::checkpoint`): sources, stateful operators and sinks. This module
//! loads the newest checkpoint before a run starts (checking that it was written with the same
//! number of workers, and, for an edited pipeline, which parts carry over: `keys.rs`), hands
//! each participant its part, and runs the thread that stores new checkpoints
//! (`checkpointer.rs`) in a directory (`store.rs`).
//! `docs/architecture.md` explains the protocol and why it was chosen.

mod checkpointer;
mod keys;
mod store;
mod streamed;
pub(crate) mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vibelux_interfaces::checkpoint::Checkpoints;

pub use checkpointer::{CheckpointMetrics, Checkpointer, Storing};
pub use keys::StateKeys;
pub use store::{StateDirectory, StateLocation, Stored, StoredCheckpoint};
pub use support::unsupported;

/// Where a run keeps its checkpoints, and how often it takes one.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub location: StateLocation,
    pub interval: Duration,
    /// Identifies the pipeline (a hash of its SQL, comments and layout aside). When it differs
    /// from the checkpoint's, the pipeline was edited, and state carries over part by part.
    pub pipeline: String,
    /// Resume an edited pipeline even where its edits drop state (changed or removed views,
    /// alarms and detectors, changed sources): those start empty.
    pub rebuild_changed: bool,
}

/// What a checkpointed run starts from.
pub struct Resumed {
    pub checkpoints: Arc<Checkpoints>,
    pub store: StateDirectory,
    /// The checkpoint resumed from: its id, when it was taken, whether it was a run's last.
    pub from: Option<(u64, String, bool)>,
    /// For an edited pipeline: what carries over, to be stored at once as the edited
    /// pipeline's first checkpoint (with where its new sinks start).
    pub carried: Option<Carried>,
    /// What an edit changed, for people: state that starts empty, state dropped.
    pub notes: Vec<String>,
}

impl Resumed {
    /// The checkpoint whose state the run restores (0 for a fresh start): an edited
    /// pipeline's first checkpoint is the one it stores before running. Processes of a
    /// cluster compare it (a process that starts while another stores reads another one).
    pub fn restored_checkpoint(&self) -> u64 {
        match (&self.carried, &self.from) {
            (Some(carried), _) => carried.id,
            (None, Some((id, _, _))) => *id,
            (None, None) => 0,
        }
    }
}

/// The state an edited pipeline takes over from the checkpoint of the previous version.
pub struct Carried {
    pub id: u64,
    pub cut: Option<u64>,
    pub parts: BTreeMap<String, Vec<u8>>,
}

/// Opens the state directory and loads the checkpoint to resume from, if there is one. A
/// checkpoint of an edited pipeline gives each part whose definition did not change (`keys`);
/// state the edit would drop is refused unless `rebuild_changed`.
/// A checkpoint of another worker count is shared out among this run's workers, unless a
/// source in `cannot_rescale` (named for people) cannot take that.
pub fn resume(
    options: &StateOptions,
    workers: usize,
    keys: &StateKeys,
    cannot_rescale: &[String],
) -> anyhow::Result<Resumed> {
    let store = StateDirectory::open_location(&options.location)?;
    let directory = &options.location;
    let Some(stored) = store.latest()? else {
        return Ok(Resumed {
            checkpoints: Arc::new(Checkpoints::new(0, BTreeMap::new())),
            store,
            from: None,
            carried: None,
            notes: Vec::new(),
        });
    };
    let mut notes = Vec::new();
    if stored.workers != workers {
        if !cannot_rescale.is_empty() {
            anyhow::bail!(
                "the checkpoint in {directory} was taken with --workers {}, and {} cannot be \
                 resumed with another worker count yet; resume it with --workers {}, or start \
                 afresh with another --state directory",
                stored.workers,
                cannot_rescale.join(", "),
                stored.workers
            );
        }
        notes.push(format!(
            "the checkpoint was taken with --workers {}: its state is shared out among {workers}",
            stored.workers
        ));
    }
    let from = Some((stored.id, stored.taken_at.clone(), stored.cut.is_none()));
    let edit = Edit::between(&stored.described, keys);
    let same_text = stored.pipeline == options.pipeline;
    if same_text && edit.dropped.is_empty() {
        let checkpoints =
            Checkpoints::new(stored.id, stored.parts).with_workers(stored.workers, workers);
        return Ok(Resumed {
            checkpoints: Arc::new(checkpoints),
            store,
            from,
            carried: None,
            notes,
        });
    }
    if !edit.dropped.is_empty() && !options.rebuild_changed {
        // The same text naming other state: the checkpoint was taken by a build that keeps
        // it in another form (an operator rewritten), which this one cannot read back.
        let what = match same_text {
            true => format!(
                "checkpoint {} in {directory} was taken by a build that keeps the state of \
                 these parts in another form, which this one cannot read back",
                stored.id
            ),
            false => format!(
                "the pipeline changed since checkpoint {} in {directory}, and the state of \
                 these parts no longer matches their definitions (or they are gone)",
                stored.id
            ),
        };
        anyhow::bail!(
            "{what}:\n{}\n\
             Resume with --rebuild-changed to start them empty (what they held is lost: \
             windows open at the restart miss the rows before it, detectors learn again), \
             restore the previous pipeline, or start afresh with another --state directory",
            bullets(&edit.dropped)
        );
    }
    notes.extend(edit.notes());
    let parts: BTreeMap<String, Vec<u8>> = stored
        .parts
        .into_iter()
        .filter(|(part, _)| keys.covers(part))
        .collect();
    let id = stored.id + 1;
    Ok(Resumed {
        checkpoints: Arc::new(
            Checkpoints::new(id, parts.clone()).with_workers(stored.workers, workers),
        ),
        store,
        from,
        carried: Some(Carried {
            id,
            cut: stored.cut,
            parts,
        }),
        notes,
    })
}

/// What an edit of a pipeline does to its state.
struct Edit {
    /// Stored state with no part in the edited pipeline, that an edit would lose.
    dropped: Vec<String>,
    /// Stateful parts of the edited pipeline with nothing stored.
    empty: Vec<String>,
}

impl Edit {
    fn between(stored: &BTreeMap<String, String>, keys: &StateKeys) -> Self {
        // Sinks and tables lose nothing: a sink continues from where its target stands, a
        // table is read again; a join's mark holds nothing (its rows are in arrangements).
        // Sources, operators, arrangements and views hold what cannot be had again.
        let holds_state = |key: &str| {
            !key.starts_with("sink/") && !key.starts_with("table/") && !key.starts_with("join/")
        };
        let dropped = stored
            .iter()
            .filter(|(key, _)| holds_state(key) && !keys.described().contains_key(*key))
            .map(|(_, what)| what.clone())
            .collect();
        let empty = keys
            .described()
            .iter()
            .filter(|(key, _)| holds_state(key) && !stored.contains_key(*key))
            .map(|(_, what)| what.clone())
            .collect();
        Edit { dropped, empty }
    }

    /// For people: what changed (dropped and started empty under the same name), what is
    /// gone, what is new.
    fn notes(&self) -> Vec<String> {
        let changed: Vec<String> = self
            .dropped
            .iter()
            .filter(|what| self.empty.contains(what))
            .cloned()
            .collect();
        let others = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|what| !changed.contains(what))
                .cloned()
                .collect()
        };
        let mut notes = Vec::new();
        for (heading, list) in [
            ("changed, so starting empty", changed.clone()),
            ("gone from the pipeline, dropped", others(&self.dropped)),
            ("new, starting empty", others(&self.empty)),
        ] {
            if !list.is_empty() {
                notes.push(format!("{heading}:\n{}", bullets(&list)));
            }
        }
        if notes.is_empty() {
            notes.push("the pipeline changed; all of its state carries over".into());
        }
        notes
    }
}

fn bullets(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| format!("  - {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stores a checkpoint before the run starts: checkpoint 0 of a new state directory, or an
/// edited pipeline's first, which carries over the previous version's state. Either records
/// where each sink's output stands before the run writes anything (a file's length; a
/// warehouse's next epoch), so that a crash before the next checkpoint cuts away what the
/// crashed run wrote before it is produced again, instead of keeping it twice.
pub fn store_initial(
    store: &StateDirectory,
    options: &StateOptions,
    workers: usize,
    keys: &StateKeys,
    (id, cut): (u64, Option<u64>),
    parts: BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    store.store(&StoredCheckpoint {
        format: store::FORMAT,
        id,
        pipeline: options.pipeline.clone(),
        workers,
        taken_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        cut,
        described: keys.described().clone(),
        parts: parts
            .into_iter()
            .map(|(key, part)| (key, part.into()))
            .collect(),
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

    /// Options for the pipeline "p" checkpointed in `dir` (checkpoint 3, cut at 30) by a run
    /// of `workers` with `keys`.
    fn checkpointed_in(dir: &std::path::Path, workers: usize, keys: &StateKeys) -> StateOptions {
        let options = StateOptions {
            location: StateLocation::Directory(dir.to_path_buf()),
            interval: Duration::from_secs(10),
            pipeline: "p".into(),
            rebuild_changed: false,
        };
        let store = StateDirectory::open(dir).unwrap();
        store_initial(
            &store,
            &options,
            workers,
            keys,
            (3, Some(30)),
            BTreeMap::new(),
        )
        .unwrap();
        options
    }

    #[test]
    fn another_worker_count_is_refused_only_for_sources_that_cannot_share_out_positions() {
        let dir = tempfile::tempdir().unwrap();
        let keys = StateKeys::default();
        let options = checkpointed_in(dir.path(), 2, &keys);
        let refused = resume(&options, 3, &keys, &["source plant (mqtt)".into()])
            .err()
            .unwrap();
        let message = format!("{refused:#}");
        assert!(
            message.contains("--workers 2") && message.contains("source plant (mqtt)"),
            "{message}"
        );
        let resumed = resume(&options, 3, &keys, &[]).unwrap();
        assert_eq!(resumed.checkpoints.rescaled_from(), Some(2));
        assert!(
            resumed.notes[0].contains("shared out among 3"),
            "{:?}",
            resumed.notes
        );
        let same = resume(&options, 2, &keys, &["source plant (mqtt)".into()]).unwrap();
        assert_eq!(same.checkpoints.rescaled_from(), None);
    }

    #[test]
    fn state_this_build_names_otherwise_is_refused_though_the_pipeline_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier build kept a join's rows under a part this build does not have.
        let earlier =
            StateKeys::default().with_part("node/0123456789abcdef", "the join state of sink out");
        let options = checkpointed_in(dir.path(), 1, &earlier);
        let now = StateKeys::default();
        let refused = resume(&options, 1, &now, &[]).err().unwrap();
        let message = format!("{refused:#}");
        assert!(
            message
                .contains("taken by a build that keeps the state of these parts in another form")
                && message.contains("the join state of sink out"),
            "{message}"
        );
        let rebuilding = StateOptions {
            rebuild_changed: true,
            ..options.clone()
        };
        assert!(resume(&rebuilding, 1, &now, &[]).is_ok());
        // The same build, the same text: resumed as it was.
        assert!(resume(&options, 1, &earlier, &[]).is_ok());
    }

    #[test]
    fn comments_and_layout_do_not_change_a_pipelines_fingerprint_but_its_sql_does() {
        let sql = "CREATE VIEW v AS SELECT zone, count(*) AS n FROM r GROUP BY zone;";
        let commented = "-- per zone\nCREATE VIEW v AS\n  SELECT zone, count(*) AS n  /* all */\n  FROM r GROUP BY zone;\n";
        assert_eq!(pipeline_fingerprint(sql), pipeline_fingerprint(commented));
        let edited = sql.replace("count(*)", "sum(1)");
        assert_ne!(pipeline_fingerprint(sql), pipeline_fingerprint(&edited));
    }
}
