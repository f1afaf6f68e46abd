//! Building the dataflow plan into timely operators on every worker, and running it.
//!
//! Each worker builds the same dataflow from the shared [`DataflowPlan`]: its partition of every
//! source, then one operator chain per plan node (in id order, so inputs exist before readers),
//! then the sinks. Data moves between workers only where an operator exchanges it (aggregates by
//! key, sinks to worker 0). The run ends when every source is exhausted (a replay) or when it is
//! stopped (Ctrl-C, `--for`); a stopped run discards windows that never closed rather than writing
//! them as if they were complete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use vibelux_connectors::source::EventClock;
use vibelux_operators::row::Update;
use vibelux_queries::plan::{DataflowPlan, NodeId};

use anyhow::Context as _;
use vibelux_interfaces::checkpoint::{Checkpoints, Role};

use crate::live::view::{LiveView, LiveViews, Retention};
use crate::state::{Checkpointer, Resumed, StateKeys, StateOptions, Storing};

mod build;
pub mod cluster;
mod cluster_link;
mod extension;
mod inputs;
mod metrics;
pub mod statements;
mod worker;

use build::{Demand, NodeControls, attach_sink, attach_view, build_nodes, demands, run_demands};
use cluster_link::{Greeting, LinkSettings};
pub use extension::{Added, Command, Extension};
use inputs::{
    OpenedSink, Restoring, StartedInputs, open_sinks, sinks_written_elsewhere, start_inputs,
};
pub use metrics::RunMetrics;
pub use statements::StatementRelay;

/// What every worker of a run reads: the plan and what was built for it before the workers
/// started, and where each worker leaves what is shared.
struct RunShared {
    plan: Arc<DataflowPlan>,
    /// The nodes to build, inputs first.
    order: Vec<NodeId>,
    /// The sources and tables that run, in the order of `metrics.sources`.
    sources: Vec<usize>,
    tables: Vec<usize>,
    demand: HashMap<NodeId, Demand>,
    metrics: Arc<RunMetrics>,
    views: LiveViews,
    /// The sinks' writers, for the workers that write.
    writers: Mutex<Vec<OpenedSink>>,
    started: Mutex<StartedInputs>,
    capture: Vec<NodeId>,
    captured: Arc<Mutex<HashMap<NodeId, Vec<Update>>>>,
    stop: Arc<AtomicBool>,
    /// Whether views and sinks may be added while running (every input is tapped).
    extensible: bool,
    /// Each worker's command receiver, taken by the worker.
    receivers: Mutex<Vec<Option<Receiver<Command>>>>,
    /// The run's checkpoints, when it is checkpointed.
    checkpoints: Option<Arc<Checkpoints>>,
    /// The key of each part in checkpoints.
    keys: StateKeys,
    /// How far the sources' event time has come, for tailed tables.
    event_clock: Arc<EventClock>,
    /// In a cluster: the link to the other processes, built before the run's dataflow.
    link: Option<LinkSettings>,
}

pub struct RunOptions {
    pub workers: usize,
    /// Set to stop the run (Ctrl-C, `--for`): sources stop, open windows are discarded.
    pub stop: Arc<AtomicBool>,
    /// Nodes whose changes are collected and returned (ad-hoc queries, tests).
    pub capture: Vec<NodeId>,
    /// History each live view keeps for resuming subscribers.
    pub retention: Retention,
    /// Accept views and sinks while running ([`Run::commands`]): every source and table runs,
    /// tapped for the dataflows added later.
    pub extensible: bool,
    /// Keep checkpoints here and resume from the newest (when the run can be checkpointed).
    pub state: Option<StateOptions>,
    /// This process's place in a timely cluster; `None` for a run in one process. `workers`
    /// is then the threads of each process.
    pub cluster: Option<cluster::Cluster>,
}

/// Whether a run is checkpointed, and from what it resumed.
#[derive(Debug, Clone)]
pub enum Durability {
    /// No state directory was given.
    Off,
    /// A state directory was given, but parts of the run cannot be checkpointed yet.
    Unsupported(Vec<String>),
    On {
        location: crate::state::StateLocation,
        interval: std::time::Duration,
        /// The checkpoint resumed from: id, when it was taken, whether it was a run's last.
        resumed: Option<(u64, String, bool)>,
        /// What edits of the pipeline since that checkpoint did to its state.
        notes: Vec<String>,
    },
}

/// A running pipeline.
pub struct Run {
    guards: timely::communication::WorkerGuards<anyhow::Result<()>>,
    pub metrics: Arc<RunMetrics>,
    /// One sender per worker, for views and sinks added while running (`extensible` runs).
    pub commands: Vec<std::sync::mpsc::Sender<Command>>,
    /// In a cluster: the statements given over the API on their way between processes.
    pub statements: Option<Arc<StatementRelay>>,
    captured: Arc<Mutex<HashMap<NodeId, Vec<Update>>>>,
    pub durability: Durability,
    checkpoints: Option<Arc<Checkpoints>>,
    checkpointer: Option<Checkpointer>,
}

impl Run {
    /// Waits for the run to end; returns the captured changes (row, time, diff) of each captured
    /// node.
    pub fn join(self) -> anyhow::Result<HashMap<NodeId, Vec<Update>>> {
        for result in self.guards.join() {
            result.map_err(|panic| anyhow::anyhow!("worker failed: {panic}"))??;
        }
        if let Some(checkpointer) = self.checkpointer {
            checkpointer.finish();
        }
        // An input that could not be read to its end fails the run: what was read is not the
        // whole input, and must not pass for it.
        for (name, source) in &self.metrics.sources {
            if let Some(failure) = source.failure() {
                anyhow::bail!("source {name} could not be read to its end: {failure}");
            }
        }
        // So does a sink that could not deliver everything it was given.
        for (name, sink) in &self.metrics.sinks {
            let undelivered = sink.undelivered.load(Ordering::Relaxed);
            let problem = sink.stalled().unwrap_or_default();
            let restart = match &self.checkpoints {
                Some(checkpoints) => format!(" ({})", resumes_from(checkpoints)),
                None => String::new(),
            };
            if undelivered > 0 {
                anyhow::bail!(
                    "sink {name} could not deliver {undelivered} rows: {problem}{restart}"
                );
            }
            if sink.gave_up.load(Ordering::Relaxed) {
                anyhow::bail!("sink {name} could not deliver everything: {problem}{restart}");
            }
            let refused = sink.write_errors.load(Ordering::Relaxed);
            if refused > 0 {
                anyhow::bail!(
                    "sink {name} could not deliver {refused} rows (their errors are logged above)"
                );
            }
        }
        if let Some(checkpoints) = &self.checkpoints
            && checkpoints.final_stored() != Some(true)
        {
            let why = checkpoints
                .failure()
                .unwrap_or_else(|| "not every part of the run ended".into());
            anyhow::bail!(
                "the run's last checkpoint could not be stored ({why}); {}",
                resumes_from(checkpoints)
            );
        }
        let captured = std::mem::take(&mut *self.captured.lock().expect("capture lock"));
        Ok(captured)
    }
}

/// What a restart of a checkpointed run that could not store its last checkpoint does.
fn resumes_from(checkpoints: &Checkpoints) -> String {
    match checkpoints.completed() {
        0 => "a restart starts afresh: no checkpoint was stored".into(),
        id => format!("a restart resumes from checkpoint {id} and produces what followed it again"),
    }
}

/// Starts the plan's sinks and materialized views (and captured nodes) on `options.workers` threads.
pub fn start(plan: Arc<DataflowPlan>, options: RunOptions) -> anyhow::Result<Run> {
    let mut roots: Vec<NodeId> = plan.sinks.iter().map(|sink| sink.node).collect();
    roots.extend(plan.materialized.iter().map(|(_, node)| *node));
    roots.extend(options.capture.iter().copied());
    let order = plan.build_order(&roots);
    let (sources, tables) = if options.extensible {
        (
            (0..plan.sources.len()).collect(),
            (0..plan.tables.len()).collect(),
        )
    } else {
        (plan.sources_of(&order), plan.tables_of(&order))
    };
    let demand = run_demands(&plan, &order, &options.capture);

    let views = LiveViews::new(
        plan.materialized
            .iter()
            .map(|(name, node)| {
                let node = &plan.nodes[*node];
                Arc::new(LiveView::new(
                    name.clone(),
                    node.schema.clone(),
                    node.key.clone(),
                    options.retention,
                ))
            })
            .collect(),
    );
    // A cluster's workers are numbered across its processes: readers split over all of them.
    let threads = options.workers.max(1);
    let processes = options
        .cluster
        .as_ref()
        .map_or(1, cluster::Cluster::processes);
    let workers = threads * processes;
    let keys = StateKeys::new(&plan, &order, &sources, &tables);
    let (durability, resumed) = durability(&plan, &sources, &tables, &options, workers, &keys)?;
    let checkpoints = resumed.as_ref().map(|resumed| resumed.checkpoints.clone());
    // In a cluster, process 0 decides on checkpoints and stores them; the others follow.
    let role = match &options.cluster {
        None => Role::Alone,
        Some(cluster) if cluster.is_first() => Role::Leader,
        Some(_) => Role::Follower,
    };
    if let Some(checkpoints) = &checkpoints {
        checkpoints.set_groups(keys.groups());
        checkpoints.set_role(role, processes);
    }
    let stores_checkpoints = role != Role::Follower;
    let checkpoint_metrics = checkpoints
        .as_ref()
        .filter(|_| stores_checkpoints)
        .map(|_| Arc::default());
    let metrics = Arc::new(RunMetrics::new(
        &plan,
        &sources,
        &tables,
        views.clone(),
        checkpoint_metrics.clone(),
    ));
    // Sinks open and sources start before any worker does (files created, network clients
    // started), so a bad path or an unreachable broker fails the run up front.
    // Sinks write in process 0, where their rows gather: another process opens none (a file
    // sink would otherwise truncate the same path from two processes).
    let mut opened = match &options.cluster {
        Some(cluster) if !cluster.is_first() => sinks_written_elsewhere(&plan, threads),
        _ => open_sinks(&plan, checkpoints.as_deref(), &keys, threads)?,
    };
    if let (Some(resumed), Some(state), true) = (&resumed, &options.state, stores_checkpoints) {
        // A state directory's first run, or an edited pipeline's: store where the outputs
        // stand before it writes anything, with what carries over from the previous version.
        let initial = match (&resumed.from, &resumed.carried) {
            (None, _) => Some(((0, Some(0)), std::collections::BTreeMap::new())),
            (Some(_), Some(carried)) => Some(((carried.id, carried.cut), carried.parts.clone())),
            (Some(_), None) => None,
        };
        if let Some((id_and_cut, mut parts)) = initial {
            for (sink, opened) in opened.iter_mut().enumerate() {
                for (number, writer) in opened.writers.iter_mut().enumerate() {
                    let key = keys.sink_writer(sink, number);
                    if let Some(writer) = writer
                        && !parts.contains_key(&key)
                    {
                        let part = writer.checkpoint(id_and_cut.0).with_context(|| {
                            format!("recording where sink {} starts", plan.sinks[sink].name)
                        })?;
                        parts.insert(key, part);
                    }
                }
            }
            crate::state::store_initial(&resumed.store, state, workers, &keys, id_and_cut, parts)?;
        }
    }
    if let (Some(resumed), true) = (&resumed, stores_checkpoints) {
        // Large parts are encoded straight into the store, not held whole until stored.
        resumed
            .checkpoints
            .set_chunk_store(resumed.store.chunk_writer()?);
    }
    let writers = Mutex::new(opened);
    let started = Mutex::new(start_inputs(
        &plan,
        &sources,
        &tables,
        &metrics,
        workers,
        // This process's workers.
        options.cluster.as_ref().map_or(0..workers, |cluster| {
            cluster.process * threads..(cluster.process + 1) * threads
        }),
        Restoring {
            checkpoints: checkpoints.as_deref(),
            keys: &keys,
            state_directory: resumed.as_ref().map(|resumed| resumed.store.path()),
        },
    )?);
    let captured: Arc<Mutex<HashMap<NodeId, Vec<Update>>>> = Arc::default();
    let (commands, receivers): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| std::sync::mpsc::channel::<Command>())
        .map(|(sender, receiver)| (sender, Some(receiver)))
        .unzip();
    // Advanced by this process's sources (and, on process 0 of a cluster, by what the other
    // processes' sources reached); read by tailed tables.
    let event_clock: Arc<EventClock> = Arc::default();
    let statements: Arc<StatementRelay> = Arc::default();
    let shared = Arc::new(RunShared {
        plan,
        order,
        sources,
        tables,
        demand,
        metrics: metrics.clone(),
        views,
        writers,
        started,
        capture: options.capture.clone(),
        captured: captured.clone(),
        stop: options.stop.clone(),
        event_clock: event_clock.clone(),
        extensible: options.extensible,
        receivers: Mutex::new(receivers),
        checkpoints: checkpoints.clone(),
        keys: keys.clone(),
        link: options.cluster.as_ref().map(|cluster| LinkSettings {
            process: cluster.process,
            processes: cluster.processes(),
            threads,
            greeting: Greeting {
                pipeline: cluster.pipeline.clone(),
                resumed: resumed.as_ref().map(Resumed::restored_checkpoint),
                extensible: options.extensible,
            },
            stop: options.stop.clone(),
            alarms: {
                metrics.alarms.forward_to_other_processes();
                metrics.alarms.clone()
            },
            event_clock: event_clock.clone(),
            statements: statements.clone(),
        }),
    });
    let config = match &options.cluster {
        Some(cluster) => cluster.timely_config(threads),
        None => timely::Config::process(threads),
    };
    let guards = timely::execute(config, move |worker| worker::run(worker, &shared))
        .map_err(|error| anyhow::anyhow!("starting workers: {error}"))?;
    let checkpointer = match (resumed, &options.state, checkpoint_metrics) {
        (Some(resumed), Some(state), Some(checkpoint_metrics)) if stores_checkpoints => {
            Some(Checkpointer::spawn(
                resumed.checkpoints,
                Storing {
                    store: resumed.store,
                    pipeline: state.pipeline.clone(),
                    described: keys.described().clone(),
                    workers,
                    interval: state.interval,
                },
                checkpoint_metrics,
            ))
        }
        _ => None,
    };
    Ok(Run {
        guards,
        metrics,
        commands,
        statements: options.cluster.as_ref().map(|_| statements),
        captured,
        durability,
        checkpoints,
        checkpointer,
    })
}

/// Whether the run is checkpointed; if it is, what it resumes from.
fn durability(
    plan: &DataflowPlan,
    sources: &[usize],
    tables: &[usize],
    options: &RunOptions,
    workers: usize,
    keys: &StateKeys,
) -> anyhow::Result<(Durability, Option<Resumed>)> {
    let Some(state) = &options.state else {
        return Ok((Durability::Off, None));
    };
    let mut reasons = crate::state::unsupported(plan, sources, tables);
    if !options.capture.is_empty() {
        reasons.push("queries are not checkpointed".into());
    }
    if !reasons.is_empty() {
        return Ok((Durability::Unsupported(reasons), None));
    }
    let cannot_rescale: Vec<String> = sources
        .iter()
        .map(|&source| &plan.sources[source])
        .filter(|source| !source.spec.rescales())
        .map(|source| format!("source {} ({})", source.name, source.spec.connector()))
        .collect();
    let resumed = crate::state::resume(state, workers, keys, &cannot_rescale)?;
    let durability = Durability::On {
        location: state.location.clone(),
        interval: state.interval,
        resumed: resumed.from.clone(),
        notes: resumed.notes.clone(),
    };
    Ok((durability, Some(resumed)))
}
