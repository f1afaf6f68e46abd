//! Views and sinks added to a running pipeline: each is built as its own dataflow on every
//! worker, its sources replayed from the main dataflow's taps (see `taps`).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use timely::dataflow::Scope;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vibelux_connectors::sink::SinkMetrics;
use vibelux_connectors::source::SourceStreams;
use vibelux_connectors::table::TableStreams;
use vibelux_interfaces::sink::SinkWriter;
use vibelux_operators::alarm::AlarmDesk;
use vibelux_queries::plan::{DataflowPlan, NodeId, SinkMode};

use super::{NodeControls, attach_sink, attach_view, build_nodes, demands};
use crate::live::view::LiveView;
use crate::state::StateKeys;
use crate::taps::{Tapped, Taps};
use vibelux_connectors::sink::SinkControls;

/// Builds a view or sink added while running, fed by the main dataflow's taps.
pub(super) fn build_extension(
    scope: Scope<'_, u64>,
    extension: &Extension,
    taps: &Taps,
    index: usize,
    stop: &Arc<AtomicBool>,
    alarm_desk: &Arc<AlarmDesk>,
    processes: usize,
) {
    let plan = &extension.plan;
    let root = match &extension.object {
        Added::Sink { index, .. } => plan.sinks[*index].node,
        Added::View { node, .. } => *node,
    };
    let order = plan.build_order(&[root]);
    let (changes, finals) = match &extension.object {
        Added::Sink { index, .. } if plan.sinks[*index].mode != SinkMode::Changelog => {
            (vec![], vec![root])
        }
        _ => (vec![root], vec![]),
    };
    let demand = demands(plan, &order, &changes, &finals);
    let source_streams: HashMap<usize, SourceStreams> = plan
        .sources_of(&order)
        .into_iter()
        .map(|source| {
            let streams = SourceStreams {
                rows: taps.replay_rows(scope, Tapped::SourceRows(source)),
                dead_letters: taps.replay_rows(scope, Tapped::SourceDeadLetters(source)),
                late_rows: taps.replay_rows(scope, Tapped::SourceLateRows(source)),
                status_rows: taps.replay_rows(scope, Tapped::SourceHealth(source)),
            };
            (source, streams)
        })
        .collect();
    let table_streams: HashMap<usize, TableStreams> = plan
        .tables_of(&order)
        .into_iter()
        .map(|table| {
            let streams = TableStreams {
                changes: taps.replay_updates(scope, Tapped::TableChanges(table)),
                dead_letters: taps.replay_rows(scope, Tapped::TableDeadLetters(table)),
            };
            (table, streams)
        })
        .collect();
    let built = build_nodes(
        scope,
        plan,
        &order,
        &demand,
        &source_streams,
        &table_streams,
        // Views and sinks added while running are not in the pipeline file, so a restart
        // does not bring them back: they are not checkpointed.
        &NodeControls {
            stop,
            alarms: alarm_desk,
            checkpoints: None,
            keys: &StateKeys::default(),
            processes,
        },
    );
    let finished = ProbeHandle::new();
    match &extension.object {
        Added::Sink {
            index: sink,
            writer,
            metrics,
        } => {
            let writer = if index == 0 {
                writer.lock().expect("writer lock").take()
            } else {
                None
            };
            attach_sink(
                &built[&root],
                plan.sinks[*sink].mode,
                writer,
                metrics.clone(),
                SinkControls {
                    stop: stop.clone(),
                    checkpointing: None,
                    writers: 1,
                    crosses_processes: processes > 1,
                },
                &finished,
            );
        }
        Added::View { live, .. } => {
            attach_view(
                &built[&root],
                (index == 0).then(|| live.clone()),
                None,
                &finished,
                processes,
            );
        }
    }
}

/// A view or sink added to a running pipeline.
pub enum Added {
    Sink {
        /// Its index in the extension's plan's sinks.
        index: usize,
        /// Opened before it is sent; worker 0 takes it.
        writer: Mutex<Option<Box<dyn SinkWriter>>>,
        metrics: Arc<SinkMetrics>,
    },
    View {
        node: NodeId,
        live: Arc<LiveView>,
    },
}

/// Built as its own dataflow on every worker.
pub struct Extension {
    /// The view's or sink's name.
    pub name: String,
    /// The whole plan as of the statement that added it.
    pub plan: Arc<DataflowPlan>,
    pub object: Added,
}

/// What the workers of an extensible run are told, in the same order on each.
#[derive(Clone)]
pub enum Command {
    Add(Arc<Extension>),
    /// Drop the dataflow added for this name.
    Drop(String),
}
