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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::Scope;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vibelux_connectors::source::{SourceReader, SourceStreams, read_source};
use vibelux_connectors::table::{TableStreams, read_table};
use vibelux_operators::row::Update;
use vibelux_queries::plan::{DataflowPlan, NodeId};

use crate::live::view::{LiveView, LiveViews, Retention};
use crate::taps::{Tapped, Taps};

mod build;
mod extension;
mod inputs;
mod metrics;

use build::{NodeControls, attach_sink, attach_view, build_nodes, demands, run_demands};
use extension::build_extension;
pub use extension::{Added, Command, Extension};
use inputs::{open_sinks, start_inputs};
pub use metrics::RunMetrics;

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
}

/// A running pipeline.
pub struct Run {
    guards: timely::communication::WorkerGuards<anyhow::Result<()>>,
    pub metrics: Arc<RunMetrics>,
    /// One sender per worker, for views and sinks added while running (`extensible` runs).
    pub commands: Vec<std::sync::mpsc::Sender<Command>>,
    captured: Arc<Mutex<HashMap<NodeId, Vec<Update>>>>,
}

impl Run {
    /// Waits for the run to end; returns the captured changes (row, time, diff) of each captured
    /// node.
    pub fn join(self) -> anyhow::Result<HashMap<NodeId, Vec<Update>>> {
        for result in self.guards.join() {
            result.map_err(|panic| anyhow::anyhow!("worker failed: {panic}"))??;
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
            if undelivered > 0 {
                anyhow::bail!("sink {name} could not deliver {undelivered} rows: {problem}");
            }
            if sink.gave_up.load(Ordering::Relaxed) {
                anyhow::bail!("sink {name} could not deliver everything: {problem}");
            }
            let refused = sink.write_errors.load(Ordering::Relaxed);
            if refused > 0 {
                anyhow::bail!(
                    "sink {name} could not deliver {refused} rows (their errors are logged above)"
                );
            }
        }
        let captured = std::mem::take(&mut *self.captured.lock().expect("capture lock"));
        Ok(captured)
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
    let metrics = Arc::new(RunMetrics::new(&plan, &sources, &tables, views.clone()));
    // Sinks open and sources start before any worker does (files created, network clients
    // started), so a bad path or an unreachable broker fails the run up front.
    let writers = Arc::new(Mutex::new(open_sinks(&plan)?));
    let started = Arc::new(Mutex::new(start_inputs(
        &plan,
        &sources,
        &tables,
        &metrics,
        options.workers.max(1),
    )?));
    let worker_views = views.clone();
    let captured: Arc<Mutex<HashMap<NodeId, Vec<Update>>>> = Arc::default();

    let (commands, receivers): (Vec<_>, Vec<_>) = (0..options.workers.max(1))
        .map(|_| std::sync::mpsc::channel::<Command>())
        .map(|(sender, receiver)| (sender, Some(receiver)))
        .unzip();
    let receivers = Arc::new(Mutex::new(receivers));
    let extensible = options.extensible;
    let worker_metrics = metrics.clone();
    let worker_captured = captured.clone();
    let stop = options.stop.clone();
    let capture = options.capture.clone();
    let config = timely::Config::process(options.workers.max(1));
    let guards = timely::execute(config, move |worker| -> anyhow::Result<()> {
        let index = worker.index();
        let plan = plan.clone();
        let metrics = worker_metrics.clone();
        let receiver = receivers.lock().expect("receivers lock")[index]
            .take()
            .expect("one receiver per worker");
        let taps = Taps::default();
        worker.dataflow::<u64, _, _>(|scope: Scope<'_, u64>| {
            // What every sink and view has finished: sources do not run far ahead of it.
            let finished = ProbeHandle::new();
            let mut source_streams: HashMap<usize, SourceStreams> = HashMap::new();
            for (position, &source) in sources.iter().enumerate() {
                let reader: Box<dyn SourceReader> = started
                    .lock()
                    .expect("started inputs lock")
                    .sources
                    .get_mut(&source)
                    .and_then(|readers| readers.get_mut(index))
                    .and_then(Option::take)
                    .expect("a reader for every worker");
                // Flow control holds back a source that runs ahead of the slowest output, so a
                // replay cannot fill memory. A source paced by the clock cannot run away, and
                // must not wait for one on another clock: a 60× simulation beside a PLC polled
                // in real time would stop after ten simulated minutes.
                let paced = plan.sources[source].spec.paced_by_clock();
                let streams = read_source(
                    scope,
                    &plan.sources[source].name,
                    reader,
                    plan.sources[source].timing.clone(),
                    metrics.sources[position].1.clone(),
                    stop.clone(),
                    (!paced).then(|| finished.clone()),
                );
                source_streams.insert(source, streams);
            }

            let mut table_streams: HashMap<usize, TableStreams> = HashMap::new();
            for (position, &table) in tables.iter().enumerate() {
                let table_plan = &plan.tables[table];
                let reader: Option<Box<dyn SourceReader>> = if index == 0 {
                    started
                        .lock()
                        .expect("started inputs lock")
                        .tables
                        .get_mut(&table)
                        .and_then(Option::take)
                        .map(|reader| reader as Box<dyn SourceReader>)
                } else {
                    None
                };
                let streams = read_table(
                    scope,
                    &table_plan.name,
                    reader,
                    table_plan.key_columns.clone(),
                    !table_plan.spec.is_bounded(),
                    metrics.sources[sources.len() + position].1.clone(),
                    stop.clone(),
                );
                table_streams.insert(table, streams);
            }

            if extensible {
                for (&source, streams) in &source_streams {
                    taps.tap_rows(streams.rows.clone(), Tapped::SourceRows(source));
                    taps.tap_rows(
                        streams.dead_letters.clone(),
                        Tapped::SourceDeadLetters(source),
                    );
                    taps.tap_rows(streams.late_rows.clone(), Tapped::SourceLateRows(source));
                    taps.tap_rows(streams.status_rows.clone(), Tapped::SourceHealth(source));
                }
                for (&table, streams) in &table_streams {
                    taps.tap_updates(streams.changes.clone(), Tapped::TableChanges(table));
                    taps.tap_rows(
                        streams.dead_letters.clone(),
                        Tapped::TableDeadLetters(table),
                    );
                }
            }
            let built = build_nodes(
                scope,
                &plan,
                &order,
                &demand,
                &source_streams,
                &table_streams,
                &NodeControls {
                    stop: &stop,
                    alarms: &metrics.alarms,
                },
            );

            let mut writers = writers.lock().expect("writers lock");
            for (sink_index, sink) in plan.sinks.iter().enumerate() {
                let writer = if index == 0 {
                    writers[sink_index].take()
                } else {
                    None
                };
                attach_sink(
                    &built[&sink.node],
                    sink.mode,
                    writer,
                    metrics.sinks[sink_index].1.clone(),
                    &stop,
                    &finished,
                );
            }
            for (name, node) in &plan.materialized {
                let view = (index == 0).then(|| worker_views.get(name).expect("made above"));
                attach_view(&built[node], view, &finished);
            }
            for node in &capture {
                collect_changes(
                    built[node].changes().probe_with(&finished),
                    *node,
                    worker_captured.clone(),
                );
            }
        });
        // Dataflows added while running, by the name of the view or sink they maintain.
        let mut added: HashMap<String, usize> = HashMap::new();
        while worker.has_dataflows() {
            // Worker 0 times the steps that have work waiting (not the ones that park).
            let busy =
                index == 0 && worker.activations().borrow().empty_for() == Some(Duration::ZERO);
            let started = Instant::now();
            worker.step_or_park(Some(Duration::from_millis(20)));
            if busy {
                metrics
                    .step_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            while let Ok(command) = receiver.try_recv() {
                match command {
                    Command::Add(extension) => {
                        let id = worker.next_dataflow_index();
                        worker.dataflow::<u64, _, _>(|scope: Scope<'_, u64>| {
                            build_extension(
                                scope,
                                &extension,
                                &taps,
                                index,
                                &stop,
                                &metrics.alarms,
                            );
                        });
                        added.insert(extension.name.clone(), id);
                    }
                    Command::Drop(name) => {
                        if let Some(id) = added.remove(&name) {
                            worker.drop_dataflow(id);
                        }
                    }
                }
            }
        }
        Ok(())
    })
    .map_err(|error| anyhow::anyhow!("starting workers: {error}"))?;
    Ok(Run {
        guards,
        metrics,
        commands,
        captured,
    })
}

fn collect_changes(
    changes: Stream<'_, u64, Vec<Update>>,
    node: NodeId,
    into: Arc<Mutex<HashMap<NodeId, Vec<Update>>>>,
) {
    changes.sink(Pipeline, "Capture", move |(input, _)| {
        input.for_each(|_, data| {
            let mut captured = into.lock().expect("capture lock");
            captured.entry(node).or_default().append(data);
        });
    });
}
