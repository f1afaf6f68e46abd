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

use crate::live::publish::PublishViewExt;
use crate::live::view::{LiveView, LiveViews, Retention};
use crate::taps::{Tapped, Taps};

mod extension;
use anyhow::Context as _;
use extension::build_extension;
pub use extension::{Added, Command, Extension};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{Scope, Stream};
use vibelux_connectors::sink::{SinkMetrics, WriteRowsExt, WriteUpdatesExt};
use vibelux_connectors::source::ReplayProgress;
use vibelux_connectors::source::{SourceMetrics, SourceReader, SourceStreams, read_source};
use vibelux_connectors::table::{TableStreams, read_table};
use vibelux_interfaces::connector::SourceStart;
use vibelux_interfaces::sink::SinkWriter;
use vibelux_operators::aggregate::AggregateExt;
use vibelux_operators::alarm::AlarmDesk;
use vibelux_operators::alarm::RaiseAlarmsExt;
use vibelux_operators::anomaly::ScoreAnomaliesExt;
use vibelux_operators::calc::{CalcExt, CalcUpdatesExt};
use vibelux_operators::changes::IntoUpdatesExt;
use vibelux_operators::join::JoinExt;
use vibelux_operators::row::{Row, Update};
use vibelux_operators::window::{
    AssignWindowsExt, AssignWindowsPickExt, AssignWindowsUpdatesExt, WindowKind,
};
use vibelux_queries::plan::{Changes, DataflowPlan, NodeId, NodeKind, SinkMode};

/// A node's output on one worker. Updating nodes build only the outputs something reads.
#[derive(Clone)]
enum Built<'scope> {
    Rows(Stream<'scope, u64, Vec<Row>>),
    /// Rows whose window assignment is deferred: a projection reading them fuses with it, so the
    /// wide tagged rows are only built for consumers that need them.
    Windowed {
        rows: Stream<'scope, u64, Vec<Row>>,
        time_column: usize,
        kind: WindowKind,
    },
    Updates {
        changes: Option<Stream<'scope, u64, Vec<Update>>>,
        finals: Option<Stream<'scope, u64, Vec<Row>>>,
    },
}

impl<'scope> Built<'scope> {
    /// The rows of an append-only node.
    fn rows(&self) -> Option<Stream<'scope, u64, Vec<Row>>> {
        match self {
            Built::Rows(rows) => Some(rows.clone()),
            Built::Windowed {
                rows,
                time_column,
                kind,
            } => Some(rows.clone().assign_windows(*time_column, *kind)),
            Built::Updates { .. } => None,
        }
    }

    fn changes(&self) -> Stream<'scope, u64, Vec<Update>> {
        match self {
            Built::Updates { changes, .. } => changes.clone().expect("changes were demanded"),
            appended => appended.rows().expect("append-only").into_updates(),
        }
    }

    /// Rows that are final when they appear: all rows of an append-only node, closed windows.
    fn finals(&self) -> Option<Stream<'scope, u64, Vec<Row>>> {
        match self {
            Built::Updates { finals, .. } => finals.clone(),
            appended => appended.rows(),
        }
    }
}

/// Which outputs of a node are read downstream.
#[derive(Debug, Default, Clone, Copy)]
struct Demand {
    changes: bool,
    finals: bool,
}

/// Walks from the roots to the sources, so that e.g. a windowed aggregate that only feeds a sink
/// does not publish every partial result.
fn demands(
    plan: &DataflowPlan,
    order: &[NodeId],
    changes: &[NodeId],
    finals: &[NodeId],
) -> HashMap<NodeId, Demand> {
    let mut demand: HashMap<NodeId, Demand> = HashMap::new();
    for node in changes {
        demand.entry(*node).or_default().changes = true;
    }
    for node in finals {
        demand.entry(*node).or_default().finals = true;
    }
    for &node in order.iter().rev() {
        let wanted = demand.get(&node).copied().unwrap_or_default();
        let inputs = plan.nodes[node].kind.inputs();
        for input in inputs {
            let entry = demand.entry(input).or_default();
            if let NodeKind::RaiseAlarms { .. } = plan.nodes[node].kind {
                // Alarms take readings, or the closed windows of a windowed view.
                entry.finals = true;
            } else if let NodeKind::Aggregate { .. }
            | NodeKind::Join { .. }
            | NodeKind::ExpressionErrors { .. } = plan.nodes[node].kind
            {
                // Aggregates and joins read their inputs' rows, or their changes when they update;
                // a view's errors come from its Calcs' rows or changes likewise.
                if plan.nodes[input].changes == Changes::AppendOnly {
                    entry.finals = true;
                } else {
                    entry.changes = true;
                }
            } else {
                entry.changes |= wanted.changes;
                entry.finals |= wanted.finals;
            }
        }
    }
    demand
}

/// What a run shares while it runs: counters (reported at its end), live views, and the desk
/// through which people acknowledge and shelve its alarms.
pub struct RunMetrics {
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
    /// The materialized views (their contents count their rows), live while the run lasts.
    pub views: LiveViews,
    pub replay: Vec<(String, Arc<ReplayProgress>)>,
    /// Seconds per worker-0 step that had work to do.
    pub step_seconds: Histogram,
    pub alarms: Arc<AlarmDesk>,
    /// Each view's Calcs, which count the rows their expressions failed on.
    pub expression_errors: Vec<(String, Vec<Arc<vibelux_operators::calc::Calc>>)>,
}

/// Each view's Calcs, by view, for counting the rows their expressions failed on.
fn calcs_by_view(plan: &DataflowPlan) -> Vec<(String, Vec<Arc<vibelux_operators::calc::Calc>>)> {
    plan.expression_errors
        .iter()
        .map(|(view, errors)| {
            let calcs = plan.nodes[*errors]
                .kind
                .inputs()
                .into_iter()
                .filter_map(|node| match &plan.nodes[node].kind {
                    NodeKind::Calc { calc, .. } => Some(calc.clone()),
                    _ => None,
                })
                .collect();
            (view.clone(), calcs)
        })
        .collect()
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

/// Each started source's readers, one per worker, for the workers to take their own; each
/// table's one reader, for worker 0.
struct StartedInputs {
    sources: HashMap<usize, Vec<Option<Box<dyn SourceReader + Send>>>>,
    tables: HashMap<usize, Option<Box<dyn SourceReader + Send>>>,
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
    let mut wants_changes: Vec<NodeId> = plan.materialized.iter().map(|(_, node)| *node).collect();
    wants_changes.extend(options.capture.iter().copied());
    wants_changes.extend(
        plan.sinks
            .iter()
            .filter(|s| s.mode == SinkMode::Changelog)
            .map(|s| s.node),
    );
    let wants_finals: Vec<NodeId> = plan
        .sinks
        .iter()
        .filter(|s| s.mode != SinkMode::Changelog)
        .map(|s| s.node)
        .collect();
    let demand = demands(&plan, &order, &wants_changes, &wants_finals);

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
    let metrics = Arc::new(RunMetrics {
        sources: sources
            .iter()
            .map(|&s| (plan.sources[s].name.clone(), Arc::default()))
            .chain(
                tables
                    .iter()
                    .map(|&t| (plan.tables[t].name.clone(), Arc::default())),
            )
            .collect(),
        sinks: plan
            .sinks
            .iter()
            .map(|sink| (sink.name.clone(), Arc::default()))
            .collect(),
        views: views.clone(),
        replay: sources
            .iter()
            .filter(|&&s| plan.sources[s].spec.reports_progress())
            .map(|&s| (plan.sources[s].name.clone(), Arc::default()))
            .collect(),
        step_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
        alarms: Arc::default(),
        expression_errors: calcs_by_view(&plan),
    });
    let worker_views = views.clone();
    // Sinks open (and create their files) before any worker starts, so a bad path fails the run
    // up front; worker 0 takes the writers.
    let mut writers = Vec::new();
    for sink in &plan.sinks {
        let schema = plan.nodes[sink.node].schema.clone();
        let writer = sink
            .target
            .open(schema, sink.mode == SinkMode::Changelog)
            .with_context(|| format!("opening sink {}", sink.name))?;
        writers.push(Some(writer));
    }
    let writers = Arc::new(Mutex::new(writers));
    // Sources and tables start before the workers (a network client, the files opened), so a
    // source that cannot start fails the run up front; each worker takes its own reader.
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
                workers: options.workers.max(1),
                metrics: metrics.sources[position].1.clone(),
                progress,
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
            })
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting table {}", table_plan.name))?;
        started.tables.insert(table, reader.into_iter().next());
    }
    let started = Arc::new(Mutex::new(started));
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

/// What operators take from the run: the stop flag, and the desk people's alarm commands
/// arrive on.
#[derive(Clone, Copy)]
pub(super) struct NodeControls<'a> {
    pub stop: &'a Arc<AtomicBool>,
    pub alarms: &'a Arc<AlarmDesk>,
}

/// Builds the plan nodes in `order` on one worker, from the sources' and tables' streams.
fn build_nodes<'scope>(
    scope: Scope<'scope, u64>,
    plan: &DataflowPlan,
    order: &[NodeId],
    demand: &HashMap<NodeId, Demand>,
    source_streams: &HashMap<usize, SourceStreams<'scope>>,
    table_streams: &HashMap<usize, TableStreams<'scope>>,
    controls: &NodeControls,
) -> HashMap<NodeId, Built<'scope>> {
    let NodeControls {
        stop,
        alarms: alarm_desk,
    } = *controls;
    let mut built: HashMap<NodeId, Built> = HashMap::new();
    // Each Calc's rows on which an expression failed, for its view's `<view>_errors`.
    let mut calc_errors: HashMap<NodeId, Stream<'scope, u64, Vec<Row>>> = HashMap::new();
    for &node in order {
        let output = match &plan.nodes[node].kind {
            NodeKind::SourceRows { source } => Built::Rows(source_streams[source].rows.clone()),
            NodeKind::SourceDeadLetters { source } => {
                Built::Rows(source_streams[source].dead_letters.clone())
            }
            NodeKind::SourceLateRows { source } => {
                Built::Rows(source_streams[source].late_rows.clone())
            }
            NodeKind::SourceHealth { source } => {
                Built::Rows(source_streams[source].status_rows.clone())
            }
            NodeKind::ScoreAnomalies { input, spec } => Built::Rows(
                built[input]
                    .rows()
                    .expect("planned over append-only rows")
                    .score_anomalies(spec.clone()),
            ),
            NodeKind::RaiseAlarms { input, spec } => Built::Rows(
                built[input]
                    .finals()
                    .expect("planned over readings or closed windows")
                    .raise_alarms(spec.clone(), alarm_desk.clone()),
            ),
            NodeKind::Calc { input, calc } => match &built[input] {
                Built::Windowed {
                    rows,
                    time_column,
                    kind,
                } if calc.column_picks().is_some() => {
                    // Picking columns cannot fail: there are no errors to report.
                    let picks = calc.column_picks().expect("checked").to_vec();
                    Built::Rows(
                        rows.clone()
                            .assign_windows_picking(*time_column, *kind, picks),
                    )
                }
                appended @ (Built::Rows(_) | Built::Windowed { .. }) => {
                    let (rows, errors) = appended
                        .rows()
                        .expect("append-only")
                        .calc_rows_reporting(calc.clone());
                    calc_errors.insert(node, errors);
                    Built::Rows(rows)
                }
                Built::Updates { changes, finals } => {
                    // Final rows are among the changes: report failures from one of the two.
                    let changes = changes.clone().map(|changes| {
                        let (changes, errors) = changes.calc_updates(calc.clone());
                        calc_errors.insert(node, errors);
                        changes
                    });
                    let finals = finals.clone().map(|finals| {
                        if changes.is_some() {
                            finals.calc_rows(calc.clone())
                        } else {
                            let (finals, errors) = finals.calc_rows_reporting(calc.clone());
                            calc_errors.insert(node, errors);
                            finals
                        }
                    });
                    Built::Updates { changes, finals }
                }
            },
            NodeKind::ExpressionErrors { calcs } => Built::Rows(
                scope.concatenate(
                    calcs
                        .iter()
                        .filter_map(|calc| calc_errors.get(calc).cloned()),
                ),
            ),
            NodeKind::AssignWindows {
                input,
                time_column,
                kind,
            } => match &built[input] {
                appended @ (Built::Rows(_) | Built::Windowed { .. }) => Built::Windowed {
                    rows: appended.rows().expect("append-only"),
                    time_column: *time_column,
                    kind: *kind,
                },
                Built::Updates { changes, finals } => Built::Updates {
                    changes: changes
                        .clone()
                        .map(|changes| changes.assign_windows_to_updates(*time_column, *kind)),
                    finals: finals
                        .clone()
                        .map(|finals| finals.assign_windows(*time_column, *kind)),
                },
            },
            NodeKind::TableChanges { table } => Built::Updates {
                changes: Some(table_streams[table].changes.clone()),
                finals: None,
            },
            NodeKind::TableDeadLetters { table } => {
                Built::Rows(table_streams[table].dead_letters.clone())
            }
            NodeKind::Join {
                left,
                right,
                key_columns,
            } => Built::Updates {
                changes: Some(
                    built[left]
                        .changes()
                        .join_updates(built[right].changes(), *key_columns),
                ),
                finals: None,
            },
            NodeKind::Aggregate {
                input,
                plan: aggregate,
            } => {
                let emit_changes = demand.get(&node).is_some_and(|d| d.changes);
                let (changes, finals) =
                    built[input]
                        .changes()
                        .aggregate(aggregate.clone(), emit_changes, stop.clone());
                Built::Updates {
                    changes: (emit_changes || aggregate.window.is_none()).then_some(changes),
                    finals: aggregate.window.as_ref().map(|_| finals),
                }
            }
            NodeKind::Union { inputs } => {
                let parts: Vec<&Built> = inputs.iter().map(|input| &built[input]).collect();
                if parts
                    .iter()
                    .all(|part| !matches!(part, Built::Updates { .. }))
                {
                    Built::Rows(scope.concatenate(parts.iter().filter_map(|part| part.finals())))
                } else {
                    let wanted = demand.get(&node).copied().unwrap_or_default();
                    let finals: Option<Vec<_>> = parts.iter().map(|part| part.finals()).collect();
                    Built::Updates {
                        changes: wanted
                            .changes
                            .then(|| scope.concatenate(parts.iter().map(|part| part.changes()))),
                        finals: finals
                            .filter(|_| wanted.finals)
                            .map(|finals| scope.concatenate(finals)),
                    }
                }
            }
        };
        built.insert(node, output);
    }
    built
}

/// Attaches a sink; flow control watches what it has delivered, so a sink that cannot write
/// holds the sources back.
fn attach_sink(
    output: &Built<'_>,
    mode: SinkMode,
    writer: Option<Box<dyn SinkWriter>>,
    metrics: Arc<SinkMetrics>,
    stop: &Arc<AtomicBool>,
    finished: &ProbeHandle<u64>,
) {
    let delivered = match mode {
        SinkMode::Rows | SinkMode::FinalRows => output
            .finals()
            .expect("planned as final")
            .write_rows(writer, metrics, stop.clone()),
        SinkMode::Changelog => output
            .changes()
            .write_updates(writer, metrics, stop.clone()),
    };
    delivered.probe_with(finished);
}

fn attach_view(output: &Built<'_>, view: Option<Arc<LiveView>>, finished: &ProbeHandle<u64>) {
    output.changes().probe_with(finished).publish_view(view);
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
