//! From plan nodes to timely operators on one worker: which outputs each node must build (the
//! demand walked back from sinks and views), the operator chain for each node, and attaching
//! sinks and live views at the roots.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{Scope, Stream};
use vibelux_connectors::sink::{SinkControls, SinkMetrics, WriteRowsExt, WriteUpdatesExt};
use vibelux_connectors::source::SourceStreams;
use vibelux_connectors::table::TableStreams;
use vibelux_interfaces::checkpoint::{Checkpoints, Participant};
use vibelux_interfaces::sink::SinkWriter;
use vibelux_operators::aggregate::{AggregateExt, AggregateSettings};
use vibelux_operators::alarm::{AlarmControls, AlarmDesk, RaiseAlarmsExt};
use vibelux_operators::analytic::AnalyticExt;
use vibelux_operators::anomaly::ScoreAnomaliesExt;
use vibelux_operators::arranged_join::{ArrangedRows, arrange_rows, join_arranged};
use vibelux_operators::as_of_join::AsOfJoinExt;
use vibelux_operators::calc::{CalcExt, CalcUpdatesExt};
use vibelux_operators::changes::IntoUpdatesExt;
use vibelux_operators::interval_join::IntervalJoinExt;
use vibelux_operators::row::{Row, Update};
use vibelux_operators::temporal_filter::TemporalFilterExt;
use vibelux_operators::top_n::TopNExt;
use vibelux_operators::window::{
    AssignWindowsExt, AssignWindowsPickExt, AssignWindowsUpdatesExt, WindowKind,
};
use vibelux_queries::plan::{Changes, DataflowPlan, NodeId, NodeKind, SinkMode};

use crate::live::publish::PublishViewExt;
use crate::live::view::LiveView;
use crate::state::StateKeys;

/// A node's output on one worker. Updating nodes build only the outputs something reads.
#[derive(Clone)]
pub(super) enum Built<'scope> {
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

    pub(super) fn changes(&self) -> Stream<'scope, u64, Vec<Update>> {
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
pub(super) struct Demand {
    changes: bool,
    finals: bool,
}

/// What a whole run demands: views and captured nodes want changes; sinks want a changelog or
/// final rows.
pub(super) fn run_demands(
    plan: &DataflowPlan,
    order: &[NodeId],
    captured: &[NodeId],
) -> HashMap<NodeId, Demand> {
    let mut changes: Vec<NodeId> = plan.materialized.iter().map(|(_, node)| *node).collect();
    changes.extend(captured.iter().copied());
    changes.extend(
        plan.sinks
            .iter()
            .filter(|sink| sink.mode == SinkMode::Changelog)
            .map(|sink| sink.node),
    );
    let finals: Vec<NodeId> = plan
        .sinks
        .iter()
        .filter(|sink| sink.mode != SinkMode::Changelog)
        .map(|sink| sink.node)
        .collect();
    demands(plan, order, &changes, &finals)
}

/// Walks from the roots to the sources, so that e.g. a windowed aggregate that only feeds a sink
/// does not publish every partial result.
pub(super) fn demands(
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
            | NodeKind::AsOfJoin { .. }
            | NodeKind::TopN { .. }
            | NodeKind::TemporalFilter { .. }
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

/// What operators take from the run: the stop flag, and the desk people's alarm commands
/// arrive on.
#[derive(Clone, Copy)]
pub(super) struct NodeControls<'a> {
    pub stop: &'a Arc<AtomicBool>,
    pub alarms: &'a Arc<AlarmDesk>,
    /// The run's checkpoints, which stateful operators take part in.
    pub checkpoints: Option<&'a Arc<Checkpoints>>,
    pub keys: &'a StateKeys,
    /// The processes of the cluster the run is part of (1 for a run alone).
    pub processes: usize,
}

/// Builds the plan nodes in `order` on one worker, from the sources' and tables' streams.
pub(super) fn build_nodes<'scope>(
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
        checkpoints,
        keys,
        processes,
    } = *controls;
    let worker = scope.index();
    let mut built: HashMap<NodeId, Built> = HashMap::new();
    // Join inputs by key (`StateKeys::arrangement`): built once, read by every join on them.
    let mut arrangements: HashMap<String, ArrangedRows<'scope>> = HashMap::new();
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
                    .score_anomalies(
                        spec.clone(),
                        stop.clone(),
                        participant(checkpoints, keys, node, worker),
                    ),
            ),
            NodeKind::Analytic {
                input,
                spec,
                columns,
            } => {
                let rows = built[input].rows().expect("planned over append-only rows");
                let checkpointing = participant(checkpoints, keys, node, worker);
                if spec.looks_ahead() {
                    Built::Updates {
                        changes: Some(rows.analytic_updates(
                            spec.clone(),
                            columns.clone(),
                            stop.clone(),
                            checkpointing,
                        )),
                        finals: None,
                    }
                } else {
                    Built::Rows(rows.analytic(
                        spec.clone(),
                        columns.clone(),
                        stop.clone(),
                        checkpointing,
                    ))
                }
            }
            NodeKind::TemporalFilter { input, filter } => {
                let checkpointing = participant(checkpoints, keys, node, worker);
                // Readings as they come, or the changes of a windowed view's windows.
                let changes = match built[input].rows() {
                    Some(rows) => rows.temporal_filter(filter.clone(), stop.clone(), checkpointing),
                    None => built[input].changes().temporal_filter(
                        filter.clone(),
                        stop.clone(),
                        checkpointing,
                    ),
                };
                Built::Updates {
                    changes: Some(changes),
                    finals: None,
                }
            }
            NodeKind::RaiseAlarms { input, spec } => Built::Rows(
                built[input]
                    .finals()
                    .expect("planned over readings or closed windows")
                    .raise_alarms(
                        spec.clone(),
                        alarm_desk.clone(),
                        AlarmControls {
                            stop: stop.clone(),
                            checkpointing: participant(checkpoints, keys, node, worker),
                        },
                    ),
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
                left: left_node,
                right: right_node,
                key_columns,
                outer,
                expiry,
            } => {
                let (left, right) = (built[left_node].changes(), built[right_node].changes());
                let participant = expiry
                    .is_some()
                    .then(|| participant(checkpoints, keys, node, worker))
                    .flatten();
                let changes = match expiry {
                    // Two streams within an interval: state that leaves as the watermark passes.
                    Some(expiry) => {
                        left.join_within(right, *key_columns, *expiry, *outer, participant)
                    }
                    None => {
                        let mut arranged =
                            |input: &NodeId, updates: &Stream<'scope, u64, Vec<Update>>| {
                                let key = keys.arrangement(
                                    *input,
                                    *key_columns,
                                    outer.nulls_match,
                                    worker,
                                );
                                arrangements
                                    .entry(key.clone())
                                    .or_insert_with(|| {
                                        let participant = checkpoints.map(|checkpoints| {
                                            Participant::register(checkpoints, key)
                                        });
                                        arrange_rows(
                                            updates.clone(),
                                            *key_columns,
                                            outer.nulls_match,
                                            participant,
                                        )
                                    })
                                    .clone()
                            };
                        let (left_rows, right_rows) =
                            (arranged(left_node, &left), arranged(right_node, &right));
                        let mark = checkpoints.map(|checkpoints| {
                            Participant::register(checkpoints, keys.join_mark(node, worker))
                        });
                        join_arranged(
                            (left, &left_rows),
                            (right, &right_rows),
                            *key_columns,
                            *outer,
                            mark,
                        )
                    }
                };
                Built::Updates {
                    changes: Some(changes),
                    finals: None,
                }
            }
            NodeKind::AsOfJoin {
                stream,
                versions,
                spec,
            } => Built::Rows(
                built[stream].rows().expect("a stream").join_as_of(
                    built[versions]
                        .rows()
                        .expect("a versioned table's versions"),
                    *spec,
                    participant(checkpoints, keys, node, worker),
                ),
            ),
            NodeKind::TopN { input, spec } => Built::Updates {
                changes: Some(built[input].changes().top_n(
                    (**spec).clone(),
                    participant(checkpoints, keys, node, worker),
                )),
                finals: None,
            },
            NodeKind::Aggregate {
                input,
                plan: aggregate,
            } => {
                let emit_changes = demand.get(&node).is_some_and(|d| d.changes);
                let (changes, finals) = built[input].changes().aggregate(
                    aggregate.clone(),
                    AggregateSettings {
                        emit_changes,
                        discard_open_windows: stop.clone(),
                        checkpointing: participant(checkpoints, keys, node, worker),
                        combine_before_exchange: processes > 1,
                    },
                );
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

/// Registers a stateful node's part on this worker, when the run checkpoints.
fn participant(
    checkpoints: Option<&Arc<Checkpoints>>,
    keys: &StateKeys,
    node: NodeId,
    worker: usize,
) -> Option<Participant> {
    checkpoints.map(|checkpoints| Participant::register(checkpoints, keys.node(node, worker)))
}

/// Attaches a sink; flow control watches what it has delivered, so a sink that cannot write
/// holds the sources back.
pub(super) fn attach_sink(
    output: &Built<'_>,
    mode: SinkMode,
    writer: Option<Box<dyn SinkWriter>>,
    metrics: Arc<SinkMetrics>,
    controls: SinkControls,
    finished: &ProbeHandle<u64>,
) {
    let delivered = match mode {
        SinkMode::Rows | SinkMode::FinalRows => output
            .finals()
            .expect("planned as final")
            .write_rows(writer, metrics, controls),
        SinkMode::Changelog => output.changes().write_updates(writer, metrics, controls),
    };
    delivered.probe_with(finished);
}

pub(super) fn attach_view(
    output: &Built<'_>,
    view: Option<Arc<LiveView>>,
    checkpointing: Option<Participant>,
    finished: &ProbeHandle<u64>,
    processes: usize,
) {
    output
        .changes()
        .probe_with(finished)
        .publish_view(view, checkpointing, processes > 1);
}
