//! The dataflow plan: what SQL lowers to and what the engine builds timely operators from.
//!
//! A plan is an arena of [`PlanNode`]s (a DAG: a view read by two others is built once), the
//! sources that feed it and the sinks it drains into. Each node records whether its output is
//! append-only or updating, which columns hold window bounds, and a one-line label for `EXPLAIN`.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{SinkSpec, SourceSpec};
use vibelux_interfaces::source::SourceTiming;
use vibelux_operators::aggregate::AggregatePlan;
use vibelux_operators::alarm::AlarmSpec;
use vibelux_operators::analytic::AnalyticSpec;
use vibelux_operators::anomaly::AnomalySpec;
use vibelux_operators::arranged_join::Outer;
use vibelux_operators::as_of_join::AsOfSpec;
use vibelux_operators::calc::Calc;
use vibelux_operators::in_event_time::SeriesColumns;
use vibelux_operators::interval_join::Expiry;
use vibelux_operators::temporal_filter::TemporalFilter;
use vibelux_operators::top_n::TopNSpec;
use vibelux_operators::window::WindowKind;

pub type NodeId = usize;

#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Rows a source admitted.
    SourceRows {
        source: usize,
    },
    /// Input a source could not decode: `reason`, `raw`, `origin`.
    SourceDeadLetters {
        source: usize,
    },
    /// Rows beyond the source's allowed lateness.
    SourceLateRows {
        source: usize,
    },
    /// Rows about the input itself: a Modbus device's health.
    SourceHealth {
        source: usize,
    },
    /// Changes of a table (upserts by primary key turned into retractions and insertions).
    TableChanges {
        table: usize,
    },
    /// Input a table could not decode.
    TableDeadLetters {
        table: usize,
    },
    Calc {
        input: NodeId,
        calc: Arc<Calc>,
    },
    AssignWindows {
        input: NodeId,
        time_column: usize,
        kind: WindowKind,
    },
    /// `GROUP BY`; the input is already projected to key columns then argument columns.
    Aggregate {
        input: NodeId,
        plan: Arc<AggregatePlan>,
    },
    Union {
        inputs: Vec<NodeId>,
    },
    /// Anomaly scores per series, in arrival order; the input is projected to the view's columns,
    /// then the partition key and the scored value.
    ScoreAnomalies {
        input: NodeId,
        spec: Arc<AnomalySpec>,
    },
    /// Analytic window functions per series (`LAG`, running aggregates), in event-time order;
    /// the input is the view's input, then the partition key and the functions' values.
    Analytic {
        input: NodeId,
        spec: Arc<AnalyticSpec>,
        columns: SeriesColumns,
    },
    /// Rows of a stream while recent: `WHERE ts > now() - INTERVAL …` with `now()` the
    /// watermark; an updating relation.
    TemporalFilter {
        input: NodeId,
        filter: Arc<TemporalFilter>,
    },
    /// Alarm transitions per key; the input is the watched view's rows, then the conditions.
    RaiseAlarms {
        input: NodeId,
        spec: Arc<AlarmSpec>,
    },
    /// Rows on which a view's expressions failed (`<view>_errors`), from each of its Calcs:
    /// the expression, the error, the input row as JSON.
    ExpressionErrors {
        calcs: Vec<NodeId>,
    },
    /// The first rows of each group in an order (TOP-N), numbered or not; an updating relation.
    TopN {
        input: NodeId,
        spec: Arc<TopNSpec>,
    },
    /// Each stream row joined with the version of a versioned table in force at its event
    /// time (`FOR SYSTEM_TIME AS OF`); both inputs are projected to key columns then all their
    /// columns. Append-only.
    AsOfJoin {
        stream: NodeId,
        versions: NodeId,
        spec: AsOfSpec,
    },
    /// Equi-join; both inputs are projected to key columns then all their columns.
    Join {
        left: NodeId,
        right: NodeId,
        key_columns: usize,
        /// The unmatched rows an outer join keeps.
        outer: Outer,
        /// For two streams joined within an interval: when each side's rows leave the state.
        expiry: Option<Expiry>,
    },
}

impl NodeKind {
    pub fn inputs(&self) -> Vec<NodeId> {
        match self {
            NodeKind::SourceRows { .. }
            | NodeKind::SourceDeadLetters { .. }
            | NodeKind::SourceLateRows { .. }
            | NodeKind::SourceHealth { .. }
            | NodeKind::TableChanges { .. }
            | NodeKind::TableDeadLetters { .. } => Vec::new(),
            NodeKind::ScoreAnomalies { input, .. }
            | NodeKind::Analytic { input, .. }
            | NodeKind::TemporalFilter { input, .. }
            | NodeKind::RaiseAlarms { input, .. }
            | NodeKind::Calc { input, .. }
            | NodeKind::AssignWindows { input, .. }
            | NodeKind::Aggregate { input, .. }
            | NodeKind::TopN { input, .. } => vec![*input],
            NodeKind::Union { inputs } => inputs.clone(),
            NodeKind::ExpressionErrors { calcs } => calcs.clone(),
            NodeKind::Join { left, right, .. } => vec![*left, *right],
            NodeKind::AsOfJoin {
                stream, versions, ..
            } => vec![*stream, *versions],
        }
    }
}

/// How a node's output evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// Rows are only ever added; each row is final when it appears.
    AppendOnly,
    /// Rows are updated (retracted and re-inserted). With `finals`, every row also becomes final
    /// once (a window closing) and sinks write that final row.
    Updates { finals: bool },
}

/// Which columns of a node hold the bounds of the window rows were assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowColumns {
    pub start: Option<usize>,
    pub end: Option<usize>,
    /// How rows were assigned to them: a window's end follows from its start, and a session's
    /// bounds are per row until an aggregate merges them.
    pub kind: WindowKind,
}

#[derive(Debug, Clone)]
pub struct PlanNode {
    pub kind: NodeKind,
    pub schema: SchemaRef,
    pub changes: Changes,
    pub window: Option<WindowColumns>,
    /// The column carrying the source's event time, while it passes through unchanged.
    pub event_time: Option<usize>,
    /// The largest allowed lateness of the sources feeding this node.
    pub lateness_nanos: i64,
    /// Columns that identify a row among the node's current contents (a table's primary key, an
    /// aggregate's groups, carried through projections); `None` when rows have no key, and
    /// `Some(vec![])` for a single row (a global aggregate).
    pub key: Option<Vec<usize>>,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct SourcePlan {
    pub name: String,
    /// The `CREATE SOURCE` statement as canonical text: how checkpoints recognise it.
    pub definition: String,
    /// What its connector planned from the options; the engine starts it.
    pub spec: Arc<dyn SourceSpec>,
    pub timing: SourceTiming,
}

/// A `CREATE TABLE`: reference data read by a connector that reads tables, kept by primary key.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub name: String,
    /// The `CREATE TABLE` statement as canonical text: how checkpoints recognise it.
    pub definition: String,
    pub spec: Arc<dyn SourceSpec>,
    pub key_columns: Vec<usize>,
    /// The key columns' names, for the dead letters of deletions that lack one.
    pub key_names: Vec<String>,
    /// The change-log `_op` column the reader fills after the table's own, unless the table
    /// declares a column of that name itself.
    pub op_column: Option<usize>,
}

/// What of a view a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Append-only views: every row as it appears.
    Rows,
    /// Windowed views: each row once, final, when its window closes.
    FinalRows,
    /// Updating views: inserts and deletes, marked by an `_op` column.
    Changelog,
}

#[derive(Debug, Clone)]
pub struct SinkPlan {
    pub name: String,
    /// Where and how it writes, as canonical text: how checkpoints recognise it.
    pub definition: String,
    pub from: String,
    pub node: NodeId,
    /// What its connector planned from the options; the engine opens it.
    pub target: Arc<dyn SinkSpec>,
    pub mode: SinkMode,
}

/// Everything the engine needs to build the dataflow on each worker.
#[derive(Debug, Clone, Default)]
pub struct DataflowPlan {
    pub nodes: Vec<PlanNode>,
    pub sources: Vec<SourcePlan>,
    pub tables: Vec<TablePlan>,
    pub sinks: Vec<SinkPlan>,
    /// Materialized views, maintained while the pipeline runs.
    pub materialized: Vec<(String, NodeId)>,
    /// Each view's `<view>_errors` node.
    pub expression_errors: Vec<(String, NodeId)>,
}

impl DataflowPlan {
    pub fn add(&mut self, node: PlanNode) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Nodes `roots` depend on, inputs first: the order to build them in.
    pub fn build_order(&self, roots: &[NodeId]) -> Vec<NodeId> {
        let mut needed = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(node) = stack.pop() {
            if !needed[node] {
                needed[node] = true;
                stack.extend(self.nodes[node].kind.inputs());
            }
        }
        // Inputs always have smaller ids than the nodes reading them.
        (0..self.nodes.len()).filter(|node| needed[*node]).collect()
    }

    /// Tables read by the given nodes.
    pub fn tables_of(&self, nodes: &[NodeId]) -> Vec<usize> {
        let mut tables: Vec<usize> = nodes
            .iter()
            .filter_map(|node| match self.nodes[*node].kind {
                NodeKind::TableChanges { table } | NodeKind::TableDeadLetters { table } => {
                    Some(table)
                }
                _ => None,
            })
            .collect();
        tables.sort_unstable();
        tables.dedup();
        tables
    }

    /// Sources read by the given nodes.
    pub fn sources_of(&self, nodes: &[NodeId]) -> Vec<usize> {
        let mut sources: Vec<usize> = nodes
            .iter()
            .filter_map(|node| match self.nodes[*node].kind {
                NodeKind::SourceRows { source }
                | NodeKind::SourceDeadLetters { source }
                | NodeKind::SourceLateRows { source }
                | NodeKind::SourceHealth { source } => Some(source),
                _ => None,
            })
            .collect();
        sources.sort_unstable();
        sources.dedup();
        sources
    }

    /// What `node` computes, apart from its inputs, as text that is the same from run to run
    /// and machine to machine. Checkpoints key a node's state by this text and its inputs'
    /// (`vibelux_engine::state`), so an edit elsewhere in the pipeline leaves it recognisable.
    pub fn node_definition(&self, node: NodeId) -> String {
        let plan_node = &self.nodes[node];
        let kind = match &plan_node.kind {
            NodeKind::SourceRows { source } => {
                format!("rows of {}", self.sources[*source].definition)
            }
            NodeKind::SourceDeadLetters { source } => {
                format!("dead letters of {}", self.sources[*source].definition)
            }
            NodeKind::SourceLateRows { source } => {
                format!("late rows of {}", self.sources[*source].definition)
            }
            NodeKind::SourceHealth { source } => {
                format!("health of {}", self.sources[*source].definition)
            }
            NodeKind::TableChanges { table } => {
                format!("changes of {}", self.tables[*table].definition)
            }
            NodeKind::TableDeadLetters { table } => {
                format!("dead letters of {}", self.tables[*table].definition)
            }
            NodeKind::Calc { calc, .. } => format!("calc {}", calc.identity()),
            NodeKind::AssignWindows {
                time_column, kind, ..
            } => format!("windows {kind:?} on {time_column}"),
            NodeKind::Aggregate { plan, .. } => format!("aggregate {plan:?}"),
            NodeKind::Union { inputs } => format!("union of {}", inputs.len()),
            NodeKind::ScoreAnomalies { spec, .. } => format!("anomalies {spec:?}"),
            NodeKind::Analytic { spec, columns, .. } => format!("analytic {spec:?} {columns:?}"),
            NodeKind::TemporalFilter { filter, .. } => format!("temporal filter {filter:?}"),
            NodeKind::RaiseAlarms { spec, .. } => format!("alarms {spec:?}"),
            NodeKind::ExpressionErrors { calcs } => format!("errors of {}", calcs.len()),
            NodeKind::TopN { spec, .. } => format!("top-n {spec:?}"),
            NodeKind::AsOfJoin { spec, .. } => format!("as-of join {spec:?}"),
            NodeKind::Join {
                key_columns,
                expiry: Some(expiry),
                ..
            } => format!("interval join on {key_columns} expiring {expiry:?}"),
            NodeKind::Join {
                key_columns, outer, ..
            } if *outer == Outer::default() => format!("arranged join on {key_columns}"),
            NodeKind::Join {
                key_columns, outer, ..
            } => format!("arranged join on {key_columns} keeping {outer:?}"),
        };
        let columns: Vec<String> = plan_node
            .schema
            .fields()
            .iter()
            .map(|field| format!("{}:{}", field.name(), field.data_type()))
            .collect();
        format!(
            "{kind} -> ({}) {:?} window {:?} time {:?} late {} key {:?}",
            columns.join(", "),
            plan_node.changes,
            plan_node.window,
            plan_node.event_time,
            plan_node.lateness_nanos,
            plan_node.key
        )
    }

    /// The tree of nodes under `root`, one per line, for `EXPLAIN`.
    pub fn explain(&self, root: NodeId) -> String {
        let mut out = String::new();
        self.explain_into(root, 0, &mut out);
        out
    }

    fn explain_into(&self, node: NodeId, depth: usize, out: &mut String) {
        let plan_node = &self.nodes[node];
        let changes = match plan_node.changes {
            Changes::AppendOnly => "append-only",
            Changes::Updates { finals: true } => "updates, final per window",
            Changes::Updates { finals: false } => "updates",
        };
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        out.push_str(&format!("{indent}{} [{changes}]\n", plan_node.label));
        for input in plan_node.kind.inputs() {
            self.explain_into(input, depth + 1, out);
        }
    }
}
