//! Opening a run's sinks and starting its sources and tables, before any worker runs: a bad
//! path or an unreachable broker fails the run up front, and the workers take what is theirs.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use vibelux_interfaces::checkpoint::{Checkpoints, SourcePart, decode};
use vibelux_interfaces::connector::SourceStart;
use vibelux_interfaces::sink::SinkWriter;
use vibelux_interfaces::source::SourceReader;
use vibelux_queries::plan::{DataflowPlan, SinkMode};

use super::RunMetrics;

/// Each started source's readers, one per worker, for the workers to take their own; each
/// table's one reader, for worker 0.
pub(super) struct StartedInputs {
    pub(super) sources: HashMap<usize, Vec<Option<Box<dyn SourceReader + Send>>>>,
    pub(super) tables: HashMap<usize, Option<Box<dyn SourceReader + Send>>>,
}

/// The key of a sink's part in checkpoints.
pub(super) fn sink_key(name: &str) -> String {
    format!("sink/{name}")
}

/// The key of a table's part (worker 0 reads it).
pub(super) fn table_key(name: &str) -> String {
    format!("table/{name}")
}

/// The key of a source's part, per worker.
pub(super) fn source_key(name: &str, worker: usize) -> String {
    format!("source/{name}/{worker}")
}

/// Opens (creates) every sink's target; worker 0 takes the writers. In a checkpointed run each
/// continues from its part of the checkpoint resumed from.
pub(super) fn open_sinks(
    plan: &DataflowPlan,
    checkpoints: Option<&Checkpoints>,
) -> anyhow::Result<Vec<Option<Box<dyn SinkWriter>>>> {
    plan.sinks
        .iter()
        .map(|sink| {
            let schema = plan.nodes[sink.node].schema.clone();
            let changelog = sink.mode == SinkMode::Changelog;
            match checkpoints {
                Some(checkpoints) => {
                    let part = checkpoints.take_restored(&sink_key(&sink.name));
                    sink.target
                        .open_resuming(schema, changelog, part.as_deref())
                }
                None => sink.target.open(schema, changelog),
            }
            .map(Some)
            .with_context(|| format!("opening sink {}", sink.name))
        })
        .collect()
}

/// Where each worker's reader of `name` was at the checkpoint resumed from (empty: afresh).
fn resume_positions(
    checkpoints: Option<&Checkpoints>,
    name: &str,
    workers: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(checkpoints) = checkpoints else {
        return Ok(Vec::new());
    };
    let parts: Vec<Option<Vec<u8>>> = (0..workers)
        .map(|worker| checkpoints.restored_part(&source_key(name, worker)))
        .collect();
    if parts.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(worker, part)| {
            let part = part.with_context(|| {
                format!("the checkpoint has no position for worker {worker} of source {name}")
            })?;
            let part: SourcePart =
                decode(&format!("position of source {name}"), &part).map_err(anyhow::Error::msg)?;
            Ok(part.position)
        })
        .collect()
}

/// Starts `sources` (a reader per worker each) and `tables` (one reader each, for worker 0).
pub(super) fn start_inputs(
    plan: &DataflowPlan,
    sources: &[usize],
    tables: &[usize],
    metrics: &RunMetrics,
    workers: usize,
    checkpoints: Option<&Checkpoints>,
    state_directory: Option<&std::path::Path>,
) -> anyhow::Result<StartedInputs> {
    let mut started = StartedInputs {
        sources: HashMap::new(),
        tables: HashMap::new(),
    };
    for (position, &source) in sources.iter().enumerate() {
        let source_plan = &plan.sources[source];
        let progress = metrics
            .replay
            .iter()
            .find(|(name, _)| name == &source_plan.name)
            .map(|(_, progress)| progress.clone())
            .unwrap_or_default();
        let readers = source_plan
            .spec
            .start(&SourceStart {
                name: source_plan.name.clone(),
                workers,
                metrics: metrics.sources[position].1.clone(),
                progress,
                resume: resume_positions(checkpoints, &source_plan.name, workers)?,
                checkpointed: checkpoints.is_some(),
                durable_directory: state_directory
                    .filter(|_| checkpoints.is_some())
                    .map(|directory| directory.join("sources").join(&source_plan.name)),
            })
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting source {}", source_plan.name))?;
        started
            .sources
            .insert(source, readers.into_iter().map(Some).collect());
    }
    for (position, &table) in tables.iter().enumerate() {
        let table_plan = &plan.tables[table];
        // Reference data is small: worker 0 reads it all, joins route it by key.
        let reader = table_plan
            .spec
            .start(&SourceStart {
                name: table_plan.name.clone(),
                workers: 1,
                metrics: metrics.sources[sources.len() + position].1.clone(),
                progress: Arc::default(),
                resume: match checkpoints
                    .and_then(|c| c.restored_part(&table_key(&table_plan.name)))
                {
                    Some(part) => {
                        let part: SourcePart = decode(&format!("table {}", table_plan.name), &part)
                            .map_err(anyhow::Error::msg)?;
                        vec![part.position]
                    }
                    None => Vec::new(),
                },
                checkpointed: checkpoints.is_some(),
                durable_directory: None,
            })
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting table {}", table_plan.name))?;
        started.tables.insert(table, reader.into_iter().next());
    }
    Ok(started)
}
