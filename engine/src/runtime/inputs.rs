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
use crate::state::StateKeys;

/// Each started source's readers, one per worker, for the workers to take their own; each
/// table's one reader, for worker 0.
pub(super) struct StartedInputs {
    pub(super) sources: HashMap<usize, Vec<Option<Box<dyn SourceReader + Send>>>>,
    pub(super) tables: HashMap<usize, Option<Box<dyn SourceReader + Send>>>,
}

/// A sink's writers: `count` workers write (workers 0 to `count - 1`, all in process 0), and
/// each takes its own from `writers` (empty in another process).
pub(super) struct OpenedSink {
    pub(super) count: usize,
    pub(super) writers: Vec<Option<Box<dyn SinkWriter>>>,
}

/// Opens (creates) every sink's target, with as many writers as it takes (`threads` is how
/// many workers the process has). In a checkpointed run they continue from the parts its
/// writers left in the checkpoint resumed from.
pub(super) fn open_sinks(
    plan: &DataflowPlan,
    checkpoints: Option<&Checkpoints>,
    keys: &StateKeys,
    threads: usize,
) -> anyhow::Result<Vec<OpenedSink>> {
    plan.sinks
        .iter()
        .enumerate()
        .map(|(index, sink)| {
            let schema = plan.nodes[sink.node].schema.clone();
            let changelog = sink.mode == SinkMode::Changelog;
            let count = sink.target.writers(threads);
            let parts: Option<Vec<Vec<u8>>> = checkpoints.map(|checkpoints| {
                (0..)
                    .map_while(|writer| checkpoints.take_restored(&keys.sink_writer(index, writer)))
                    .collect()
            });
            let writers = sink
                .target
                .open_writers(schema, changelog, count, parts.as_deref())
                .with_context(|| format!("opening sink {}", sink.name))?;
            anyhow::ensure!(
                writers.len() == count,
                "sink {} opened {} writers instead of {count}",
                sink.name,
                writers.len()
            );
            Ok(OpenedSink {
                count,
                writers: writers.into_iter().map(Some).collect(),
            })
        })
        .collect()
}

/// The sinks of a process that writes none: their writers are in process 0.
pub(super) fn sinks_written_elsewhere(plan: &DataflowPlan, threads: usize) -> Vec<OpenedSink> {
    plan.sinks
        .iter()
        .map(|sink| OpenedSink {
            count: sink.target.writers(threads),
            writers: Vec::new(),
        })
        .collect()
}

/// Where each worker's reader of `name` was at the checkpoint resumed from (empty: afresh).
fn resume_positions(
    checkpoints: Option<&Checkpoints>,
    keys: &StateKeys,
    source: usize,
    name: &str,
    workers: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(checkpoints) = checkpoints else {
        return Ok(Vec::new());
    };
    // One position per worker of the checkpoint (another count than this run's, when the
    // source rescales).
    let checkpoint_workers = checkpoints.rescaled_from().unwrap_or(workers);
    let parts: Vec<Option<Vec<u8>>> = (0..checkpoint_workers)
        .map(|worker| checkpoints.restored_part(&keys.source(source, worker)))
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

/// What inputs resume from in a checkpointed run.
pub(super) struct Restoring<'a> {
    pub checkpoints: Option<&'a Checkpoints>,
    pub keys: &'a StateKeys,
    /// Where sources keep what they must keep on disk (the MQTT journal).
    pub state_directory: Option<&'a std::path::Path>,
}

/// Starts `sources` (a reader per worker each) and `tables` (one reader each, for worker 0).
pub(super) fn start_inputs(
    plan: &DataflowPlan,
    sources: &[usize],
    tables: &[usize],
    metrics: &RunMetrics,
    workers: usize,
    local: std::ops::Range<usize>,
    restoring: Restoring,
) -> anyhow::Result<StartedInputs> {
    let Restoring {
        checkpoints,
        keys,
        state_directory,
    } = restoring;
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
                processes: workers / local.len().max(1),
                local: local.clone(),
                metrics: metrics.sources[position].1.clone(),
                progress,
                resume: resume_positions(checkpoints, keys, source, &source_plan.name, workers)?,
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
                processes: 1,
                local: 0..1,
                metrics: metrics.sources[sources.len() + position].1.clone(),
                progress: Arc::default(),
                resume: match checkpoints.and_then(|c| c.restored_part(&keys.table(table))) {
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
