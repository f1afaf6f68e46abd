//! What each worker does: builds the run's dataflow from its share of the inputs (its readers,
//! worker 0's writers and views), then steps it until every dataflow ends, adding and dropping
//! the dataflows of views and sinks created while running as commands arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use timely::worker::Worker;
use vibelux_connectors::sink::SinkControls;
use vibelux_connectors::source::{
    SourceCheckpointing, SourceControls, SourceReader, SourceStreams, read_source,
};
use vibelux_connectors::table::{TableColumns, TableStreams, read_table};
use vibelux_connectors::watermark::WatermarkState;
use vibelux_interfaces::checkpoint::{Checkpoints, Participant, SourcePart, decode};
use vibelux_operators::row::Update;
use vibelux_queries::plan::NodeId;

use super::build::{NodeControls, attach_sink, attach_view, build_nodes};
use super::cluster_link::ClusterLink;
use super::extension::build_extension;
use super::{Command, RunShared};
use crate::taps::{Tapped, Taps};

/// Runs worker `worker` of the run until its dataflows end.
pub(super) fn run(worker: &mut Worker, shared: &Arc<RunShared>) -> anyhow::Result<()> {
    let index = worker.index();
    let receiver = shared.receivers.lock().expect("receivers lock")[index]
        .take()
        .expect("one receiver per worker");
    let taps = Taps::default();
    // A cluster's link comes first on every worker, so that the dataflows line up.
    let mut link = shared
        .link
        .as_ref()
        .map(|settings| ClusterLink::build(worker, settings, shared.checkpoints.clone()));
    let run_dataflow = worker.next_dataflow_index();
    worker.dataflow::<u64, _, _>(|scope: Scope<'_, u64>| build_dataflow(scope, shared, &taps));
    // Every participant of this worker is registered: checkpoints may start once all are.
    if let Some(checkpoints) = &shared.checkpoints {
        checkpoints.built();
    }
    let metrics = &shared.metrics;
    // Dataflows added while running, by the name of the view or sink they maintain.
    let mut added: HashMap<String, usize> = HashMap::new();
    // The first worker of each process times the steps that have work waiting (not the ones
    // that park), for its process's `/metrics`.
    let timer = shared
        .link
        .as_ref()
        .map_or(0, |link| link.process * link.threads);
    while worker.has_dataflows() {
        let busy =
            index == timer && worker.activations().borrow().empty_for() == Some(Duration::ZERO);
        let started = Instant::now();
        worker.step_or_park(Some(Duration::from_millis(20)));
        if let Some(link) = &mut link {
            link.pump(!worker.installed_dataflows().contains(&run_dataflow));
        }
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
                            &shared.stop,
                            &metrics.alarms,
                            shared.link.as_ref().map_or(1, |link| link.processes),
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
}

/// The run's dataflow on this worker: its readers into source and table operators, the plan's
/// nodes, and (on worker 0) the writers and views at the roots.
fn build_dataflow(scope: Scope<'_, u64>, shared: &RunShared, taps: &Taps) {
    let index = scope.index();
    let (plan, metrics, stop) = (&shared.plan, &shared.metrics, &shared.stop);
    // What every sink and view has finished: sources do not run far ahead of it.
    let finished = ProbeHandle::new();
    let mut source_streams: HashMap<usize, SourceStreams> = HashMap::new();
    for (position, &source) in shared.sources.iter().enumerate() {
        let reader: Box<dyn SourceReader> = shared
            .started
            .lock()
            .expect("started inputs lock")
            .sources
            .get_mut(&source)
            .and_then(|readers| readers.get_mut(index))
            .and_then(Option::take)
            .expect("a reader for every worker");
        // Flow control holds back a source that runs ahead of the slowest output, so a replay
        // cannot fill memory. A source paced by the clock cannot run away, and must not wait for
        // one on another clock: a 60× simulation beside a PLC polled in real time would stop
        // after ten simulated minutes.
        let paced = plan.sources[source].spec.paced_by_clock();
        let name = &plan.sources[source].name;
        let checkpointing = shared.checkpoints.as_ref().map(|checkpoints| {
            source_checkpointing(checkpoints, shared.keys.source(source, index), name)
        });
        let streams = read_source(
            scope,
            name,
            reader,
            plan.sources[source].timing.clone(),
            metrics.sources[position].1.clone(),
            SourceControls {
                stop: stop.clone(),
                flow: (!paced).then(|| finished.clone()),
                checkpointing,
                event_clock: shared.event_clock.clone(),
            },
        );
        source_streams.insert(source, streams);
    }

    let mut table_streams: HashMap<usize, TableStreams> = HashMap::new();
    for (position, &table) in shared.tables.iter().enumerate() {
        let table_plan = &plan.tables[table];
        // Reference data is small: worker 0 reads it all, joins route it by key.
        let reader: Option<Box<dyn SourceReader>> = if index == 0 {
            shared
                .started
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
            TableColumns {
                key: table_plan.key_columns.clone(),
                key_names: table_plan.key_names.clone(),
                op: table_plan.op_column,
            },
            !table_plan.spec.is_bounded(),
            metrics.sources[shared.sources.len() + position].1.clone(),
            SourceControls {
                stop: stop.clone(),
                flow: None,
                event_clock: shared.event_clock.clone(),
                // Worker 0 reads the table: its part is the table's.
                checkpointing: shared.checkpoints.as_ref().filter(|_| index == 0).map(
                    |checkpoints| {
                        let key = shared.keys.table(table);
                        checkpoints.register(&key, true);
                        SourceCheckpointing {
                            checkpoints: checkpoints.clone(),
                            key,
                            restored: None,
                        }
                    },
                ),
            },
        );
        table_streams.insert(table, streams);
    }

    if shared.extensible {
        tap_inputs(taps, &source_streams, &table_streams);
    }
    let processes = shared.link.as_ref().map_or(1, |link| link.processes);
    let built = build_nodes(
        scope,
        plan,
        &shared.order,
        &shared.demand,
        &source_streams,
        &table_streams,
        &NodeControls {
            stop,
            alarms: &metrics.alarms,
            checkpoints: shared.checkpoints.as_ref(),
            keys: &shared.keys,
            processes,
        },
    );

    let mut writers = shared.writers.lock().expect("writers lock");
    for sink_index in 0..plan.sinks.len() {
        let sink = &plan.sinks[sink_index];
        let opened = &mut writers[sink_index];
        let writer = opened.writers.get_mut(index).and_then(Option::take);
        let checkpointing = shared
            .checkpoints
            .as_ref()
            .filter(|_| writer.is_some())
            .map(|checkpoints| {
                Participant::register(checkpoints, shared.keys.sink_writer(sink_index, index))
            });
        attach_sink(
            &built[&sink.node],
            sink.mode,
            writer,
            metrics.sinks[sink_index].1.clone(),
            SinkControls {
                stop: stop.clone(),
                checkpointing,
                writers: opened.count,
                crosses_processes: processes > 1,
            },
            &finished,
        );
    }
    for (name, node) in &plan.materialized {
        let view = (index == 0).then(|| shared.views.get(name).expect("made at start"));
        let checkpointing = shared
            .checkpoints
            .as_ref()
            .filter(|_| index == 0)
            .map(|checkpoints| Participant::register(checkpoints, shared.keys.view(name)));
        attach_view(&built[node], view, checkpointing, &finished, processes);
    }
    for node in &shared.capture {
        collect_changes(
            built[node].changes().probe_with(&finished),
            *node,
            shared.captured.clone(),
        );
    }
}

/// Registers a source's part on this worker and finds the watermark it resumes with.
fn source_checkpointing(
    checkpoints: &Arc<Checkpoints>,
    key: String,
    name: &str,
) -> SourceCheckpointing {
    checkpoints.register(&key, true);
    // Its own part's watermark, or, when the worker count changed, the old workers' merged.
    let watermarks: Vec<WatermarkState> = checkpoints
        .restored_parts(&key)
        .iter()
        .map(|part| {
            let part: SourcePart = decode(&format!("position of source {name}"), part)
                .unwrap_or_else(|error| panic!("{error}"));
            decode::<WatermarkState>(&format!("watermark of source {name}"), &part.state)
                .unwrap_or_else(|error| panic!("{error}"))
        })
        .collect();
    let restored = WatermarkState::merged(watermarks);
    SourceCheckpointing {
        checkpoints: checkpoints.clone(),
        key,
        restored,
    }
}

/// Keeps every input's streams for the dataflows of views and sinks added while running.
fn tap_inputs(
    taps: &Taps,
    source_streams: &HashMap<usize, SourceStreams>,
    table_streams: &HashMap<usize, TableStreams>,
) {
    for (&source, streams) in source_streams {
        taps.tap_rows(streams.rows.clone(), Tapped::SourceRows(source));
        taps.tap_rows(
            streams.dead_letters.clone(),
            Tapped::SourceDeadLetters(source),
        );
        taps.tap_rows(streams.late_rows.clone(), Tapped::SourceLateRows(source));
        taps.tap_rows(streams.status_rows.clone(), Tapped::SourceHealth(source));
    }
    for (&table, streams) in table_streams {
        taps.tap_updates(streams.changes.clone(), Tapped::TableChanges(table));
        taps.tap_rows(
            streams.dead_letters.clone(),
            Tapped::TableDeadLetters(table),
        );
    }
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
