//! The catalog and statement execution: a pipeline file, statement by statement.
//!
//! Each `CREATE` checks its input and extends the [`DataflowPlan`]: sources register themselves
//! and their dead-letter (`<source>_errors`) and late (`<source>_late`) relations; views are
//! planned by DataFusion and lowered to nodes; sinks attach to a view. `DROP`, `SHOW` and
//! `EXPLAIN` read or edit the catalog. Nothing runs here: the engine builds the plan afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::SessionState;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use vibelux_interfaces::connector::{DeclaredSink, Registry};
use vibelux_interfaces::options::connector_kind;
use vibelux_models::onnx::ModelRegistry;
use vibelux_operators::local_time::TimeZone;
use vibelux_operators::window::WindowKind;

use crate::as_of::rewrite_as_of_reads;
use crate::context::{PlanningContext, interval_nanos, located, session_state};
use crate::error::{Position, SqlError, SqlResult};
use crate::lowering::{AsOfTarget, Lowering};
use crate::options::options_of;
use crate::parser::{CreateSink, CreateView, Located, ObjectKind, Statement};
use crate::plan::{
    Changes, DataflowPlan, NodeId, NodeKind, PlanNode, SinkMode, SinkPlan, WindowColumns,
};
use crate::window_functions::{WindowFunction, rewrite_window_calls};

#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    Source {
        index: usize,
        /// A versioned table (`CREATE TABLE` with a `WATERMARK`): a source of its keys'
        /// versions, read plainly as the latest of each.
        versioned: Option<Versioned>,
    },
    Table,
    /// A relation kept beside another: `<source>_errors`, `<source>_late`, `<view>_errors`.
    SourceOutput,
    View {
        materialized: bool,
    },
    /// An alarm's transitions.
    Alarm,
    /// `<alarm>_state`, the materialized view of an alarm's instances.
    AlarmState,
}

/// Where a versioned table's versions flow, and its key.
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub(crate) versions: NodeId,
    pub(crate) key_columns: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) kind: EntryKind,
    pub(crate) node: NodeId,
    pub(crate) schema: SchemaRef,
    /// Relations this one reads.
    pub(crate) reads: Vec<String>,
}

/// What executing a statement produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A catalog change, described for the user.
    Done(String),
    /// A result table (`SHOW`).
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// Text (`EXPLAIN`).
    Text(String),
    /// An ad-hoc query, to be run by the engine: the node holding its result.
    Query { node: NodeId },
}

/// The catalog and the plan being built.
#[derive(Clone)]
pub struct Planner {
    pub(crate) state: SessionState,
    pub plan: DataflowPlan,
    pub(crate) entries: BTreeMap<String, Entry>,
    window_relations: usize,
    /// The pipeline's ONNX models: shared by every copy of the planner and by the running
    /// views, so a version installed while the pipeline runs scores their next batch.
    pub models: Arc<ModelRegistry>,
    /// The models each view calls, so a model in use is not dropped.
    pub(crate) model_users: BTreeMap<String, Vec<String>>,
    /// The connectors statements may name.
    pub(crate) connectors: Registry,
    /// The zone windows lay their days out in when they name none (`SET TIME ZONE`).
    time_zone: Option<TimeZone>,
}

impl Planner {
    /// A planner whose statements may name the connectors of `connectors`.
    pub fn new(connectors: Registry) -> Self {
        let models = Arc::new(ModelRegistry::default());
        Planner {
            connectors,
            state: session_state(&models),
            models,
            model_users: BTreeMap::new(),
            plan: DataflowPlan::default(),
            entries: BTreeMap::new(),
            window_relations: 0,
            time_zone: None,
        }
    }

    /// Plans every statement of a pipeline file, stopping at the first error.
    pub fn plan_pipeline(sql: &str, connectors: Registry) -> SqlResult<(Planner, Vec<Outcome>)> {
        let mut planner = Planner::new(connectors);
        let mut outcomes = Vec::new();
        for statement in crate::parser::parse_pipeline(sql)? {
            outcomes.push(planner.execute(&statement)?);
        }
        Ok((planner, outcomes))
    }

    pub fn execute(&mut self, located: &Located) -> SqlResult<Outcome> {
        let position = located.position;
        match &located.statement {
            Statement::CreateSource(source) => self.create_source(source, position),
            Statement::CreateView(view) => self.create_view(view, position),
            Statement::CreateSink(sink) => self.create_sink(sink, position),
            Statement::CreateModel(model) => self.create_model(model, position),
            Statement::CreateAlarm(alarm) => self.create_alarm(alarm),
            Statement::Drop {
                kind: ObjectKind::Alarm,
                name,
                if_exists,
            } => self.drop_alarm(
                &name.value.to_ascii_lowercase(),
                *if_exists,
                Position::of(name.span.start),
            ),
            Statement::Show(ObjectKind::Alarm) => Ok(self.show_alarms()),
            Statement::Drop {
                kind: ObjectKind::Model,
                name,
                if_exists,
            } => self.drop_model(
                &name.value.to_ascii_lowercase(),
                *if_exists,
                Position::of(name.span.start),
            ),
            Statement::Show(ObjectKind::Model) => Ok(self.show_models()),
            Statement::Drop {
                kind,
                name,
                if_exists,
            } => self.drop(
                *kind,
                &name.value,
                *if_exists,
                Position::of(name.span.start),
            ),
            Statement::Show(kind) => Ok(self.show(*kind)),
            Statement::Explain(inner) => self.explain(inner),
            Statement::SetTimeZone { zone, position } => {
                let parsed = zone
                    .parse::<TimeZone>()
                    .map_err(|message| SqlError::new(*position, message))?;
                // UTC is no zone at all: windows on the UTC clock, as without the setting.
                self.time_zone = (!zone.eq_ignore_ascii_case("UTC")).then_some(parsed);
                Ok(Outcome::Done(format!(
                    "windows planned from here lay their days out in {zone}"
                )))
            }
            Statement::Query(query) => {
                let node = self.plan_query(query, position)?.0;
                Ok(Outcome::Query { node })
            }
        }
    }

    /// The node a relation name refers to.
    /// Every source, table, view and derived relation in the catalog.
    pub fn relation_names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    pub fn relation(&self, name: &str) -> Option<(NodeId, SchemaRef)> {
        self.entries
            .get(&name.to_ascii_lowercase())
            .map(|entry| (entry.node, entry.schema.clone()))
    }

    pub(crate) fn check_new_name(&self, name: &str, position: Position) -> SqlResult<()> {
        if self.entries.contains_key(name) || self.plan.sinks.iter().any(|sink| sink.name == name) {
            return Err(SqlError::new(position, format!("`{name}` already exists")));
        }
        if name.starts_with("__") {
            return Err(SqlError::new(
                position,
                "names starting with `__` are reserved",
            ));
        }
        Ok(())
    }

    /// Plans a query: window calls, DataFusion planning and type checking, lowering.
    pub(crate) fn plan_query(
        &mut self,
        query: &datafusion::sql::sqlparser::ast::Query,
        position: Position,
    ) -> SqlResult<(NodeId, Vec<String>)> {
        let mut query = query.clone();
        let calls = rewrite_window_calls(&mut query, &mut self.window_relations)?;
        let as_of_reads = rewrite_as_of_reads(&mut query, &mut self.window_relations)?;
        let mut tables: HashMap<String, SchemaRef> = self
            .entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.schema.clone()))
            .collect();
        let mut relations: HashMap<String, NodeId> = self
            .entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.node))
            .collect();
        let mut reads = Vec::new();
        for call in &calls {
            let entry = self.entries.get(&call.input).ok_or_else(|| {
                SqlError::new(
                    call.position,
                    format!("unknown relation `{}` in a window function", call.input),
                )
            })?;
            reads.push(call.input.clone());
            let input = &self.plan.nodes[entry.node];
            let time_name = call.time_column.value.to_ascii_lowercase();
            let time_position = Position::of(call.time_column.span.start);
            let time_column = entry.schema.index_of(&time_name).map_err(|_| {
                SqlError::new(
                    time_position,
                    format!("`{}` has no column `{time_name}`", call.input),
                )
            })?;
            let time_type = entry.schema.field(time_column).data_type().clone();
            let DataType::Timestamp(_, zone) = &time_type else {
                return Err(SqlError::new(
                    time_position,
                    format!(
                        "the window time column `{time_name}` must be a TIMESTAMP, it is {time_type}"
                    ),
                ));
            };
            if input.event_time != Some(time_column) {
                return Err(SqlError::new(
                    time_position,
                    format!(
                        "windows must be on the event-time column of `{}` (the WATERMARK column), not `{time_name}`",
                        call.input
                    ),
                ));
            }
            let context = PlanningContext {
                state: &self.state,
                tables: HashMap::new(),
            };
            let lengths = call
                .intervals
                .iter()
                .map(|interval| interval_nanos(&context, interval, call.position))
                .collect::<SqlResult<Vec<_>>>()?;
            let time_zone = call
                .zone
                .as_ref()
                .map(|(name, at)| {
                    name.parse::<TimeZone>()
                        .map_err(|message| SqlError::new(*at, message))
                })
                .transpose()?
                .or(self.time_zone);
            let kind = match (call.function, &lengths[..]) {
                (WindowFunction::Tumble, &[size]) => WindowKind::Tumble {
                    size,
                    offset: 0,
                    zone: time_zone,
                },
                (WindowFunction::Tumble, &[size, offset]) => {
                    shorter_offset(offset, size, "size", call.position)?;
                    WindowKind::Tumble {
                        size,
                        offset,
                        zone: time_zone,
                    }
                }
                (WindowFunction::Hop, &[slide, size]) => WindowKind::Hop {
                    slide,
                    size,
                    offset: 0,
                    zone: time_zone,
                },
                (WindowFunction::Hop, &[slide, size, offset]) => {
                    shorter_offset(offset, slide, "slide", call.position)?;
                    WindowKind::Hop {
                        slide,
                        size,
                        offset,
                        zone: time_zone,
                    }
                }
                (WindowFunction::Session, &[gap]) => WindowKind::Session { gap },
                _ => unreachable!("argument count checked when rewriting"),
            };
            let bound = DataType::Timestamp(TimeUnit::Nanosecond, zone.clone());
            let mut fields: Vec<Field> = entry
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            for bound_name in ["window_start", "window_end"] {
                if fields.iter().any(|f| f.name() == bound_name) {
                    return Err(SqlError::new(
                        call.position,
                        format!("`{}` already has a column `{bound_name}`", call.input),
                    ));
                }
                fields.push(Field::new(bound_name, bound.clone(), true));
            }
            let width = fields.len();
            let schema = Arc::new(Schema::new(fields));
            let label = match kind {
                WindowKind::Tumble { size, offset, zone } => format!(
                    "AssignWindows TUMBLE({time_name}, {}{}{})",
                    show_nanos(size),
                    show_offset(offset),
                    show_zone(zone)
                ),
                WindowKind::Hop {
                    slide,
                    size,
                    offset,
                    zone,
                } => format!(
                    "AssignWindows HOP({time_name}, slide {}, size {}{}{})",
                    show_nanos(slide),
                    show_nanos(size),
                    show_offset(offset),
                    show_zone(zone)
                ),
                WindowKind::Session { gap } => {
                    format!(
                        "AssignWindows SESSION({time_name}, gap {})",
                        show_nanos(gap)
                    )
                }
            };
            let node = self.plan.add(PlanNode {
                kind: NodeKind::AssignWindows {
                    input: entry.node,
                    time_column,
                    kind,
                },
                schema: schema.clone(),
                changes: input.changes,
                window: Some(WindowColumns {
                    start: Some(width - 2),
                    end: Some(width - 1),
                    kind,
                }),
                event_time: Some(time_column),
                lateness_nanos: input.lateness_nanos,
                key: input.key.clone(),
                label,
            });
            tables.insert(call.relation.clone(), schema);
            relations.insert(call.relation.clone(), node);
        }

        let mut as_of = HashMap::new();
        for read in as_of_reads {
            let versioned = match self.entries.get(&read.table) {
                Some(Entry {
                    kind:
                        EntryKind::Source {
                            versioned: Some(versioned),
                            ..
                        },
                    schema,
                    ..
                }) => (versioned, schema),
                Some(_) => {
                    return Err(SqlError::new(
                        read.position,
                        format!(
                            "`{}` is not a versioned table: FOR SYSTEM_TIME AS OF reads a TABLE declared with a PRIMARY KEY and a WATERMARK on the time each version starts",
                            read.table
                        ),
                    ));
                }
                None => {
                    return Err(SqlError::new(
                        read.position,
                        format!("unknown relation `{}`", read.table),
                    ));
                }
            };
            let (versioned, schema) = versioned;
            reads.push(read.table.clone());
            tables.insert(read.relation.clone(), schema.clone());
            relations.insert(read.relation.clone(), versioned.versions);
            as_of.insert(
                read.relation,
                AsOfTarget {
                    table: read.table,
                    key_columns: versioned.key_columns.clone(),
                    time: read.time,
                    position: read.position,
                },
            );
        }

        let context = PlanningContext {
            state: &self.state,
            tables,
        };
        let logical = context
            .sql_to_rel()
            .sql_statement_to_plan(SqlStatement::Query(Box::new(query)))
            .map_err(|error| located(error, position))?;
        // The session's analyzer: DataFusion's rules and the functions' rewrites.
        let logical = self
            .state
            .analyzer()
            .execute_and_check(logical, self.state.config_options(), |_, _| {})
            .map_err(|error| located(error, position))?;
        let logical = subqueries_as_joins(logical).map_err(|error| located(error, position))?;
        let logical = columns_joins_read(logical).map_err(|error| located(error, position))?;
        let mut lowering =
            Lowering::new(&mut self.plan, &relations, &self.models, position).with_as_of(as_of);
        let node = lowering.lower(&logical)?;
        reads.extend(lowering.reads);
        reads.sort();
        reads.dedup();
        Ok((node, reads))
    }

    fn create_view(&mut self, view: &CreateView, position: Position) -> SqlResult<Outcome> {
        let name = view.name.value.to_ascii_lowercase();
        let name_position = Position::of(view.name.span.start);
        if view.or_replace
            && self
                .entries
                .get(&name)
                .is_some_and(|e| matches!(e.kind, EntryKind::View { .. }))
        {
            self.drop(ObjectKind::View, &name, false, name_position)?;
        }
        self.check_new_name(&name, name_position)?;
        let errors_name = format!("{name}_errors");
        self.check_new_name(&errors_name, name_position)?;
        let first_new_node = self.plan.nodes.len();
        let (node, reads) = self.plan_query(&view.query, position)?;
        let schema = self.plan.nodes[node].schema.clone();
        let mut seen = std::collections::HashSet::new();
        for field in schema.fields() {
            if !seen.insert(field.name().clone()) {
                return Err(SqlError::new(
                    position,
                    format!(
                        "view `{name}` has two columns named `{}`; give one an alias with AS",
                        field.name()
                    ),
                ));
            }
        }
        self.entries.insert(
            name.clone(),
            Entry {
                kind: EntryKind::View {
                    materialized: view.materialized,
                },
                node,
                schema,
                reads,
            },
        );
        let errors = self.expression_errors(&name, first_new_node);
        self.entries.insert(
            errors_name.clone(),
            Entry {
                kind: EntryKind::SourceOutput,
                node: errors,
                schema: self.plan.nodes[errors].schema.clone(),
                reads: vec![name.clone()],
            },
        );
        self.plan.expression_errors.push((name.clone(), errors));
        self.model_users
            .insert(name.clone(), crate::models::models_called(&view.query));
        if view.materialized {
            self.plan.materialized.push((name.clone(), node));
            Ok(Outcome::Done(format!("created materialized view {name}")))
        } else {
            Ok(Outcome::Done(format!("created view {name}")))
        }
    }

    /// The `<view>_errors` node of view `name`, whose own nodes start at `first_new_node`: the
    /// rows on which any of its Calcs failed. Names the view in those Calcs for their logs.
    fn expression_errors(&mut self, name: &str, first_new_node: NodeId) -> NodeId {
        let mut calcs = Vec::new();
        for node in first_new_node..self.plan.nodes.len() {
            if let NodeKind::Calc { calc, .. } = &mut self.plan.nodes[node].kind {
                if let Some(calc) = Arc::get_mut(calc) {
                    calc.set_view(name);
                }
                calcs.push(node);
            }
        }
        self.plan.add(PlanNode {
            kind: NodeKind::ExpressionErrors { calcs },
            schema: expression_error_schema(),
            changes: Changes::AppendOnly,
            window: None,
            event_time: None,
            lateness_nanos: 0,
            key: None,
            label: format!("ExpressionErrors of {name}"),
        })
    }

    fn create_sink(&mut self, sink: &CreateSink, position: Position) -> SqlResult<Outcome> {
        let name = sink.name.value.to_ascii_lowercase();
        self.check_new_name(&name, Position::of(sink.name.span.start))?;
        let from = sink.from.to_string().to_ascii_lowercase();
        let entry = self
            .entries
            .get(&from)
            .ok_or_else(|| SqlError::new(position, format!("unknown relation `{from}` to sink")))?;
        let mut options = options_of(&sink.options, position)?;
        let (connector_name, connector_position) = options.required("connector", "a sink")?;
        let connector = self.connectors.find_sink(&connector_name).ok_or_else(|| {
            SqlError::new(
                connector_position.into(),
                format!(
                    "unknown sink connector '{}'; available: {}",
                    connector_name.to_ascii_lowercase(),
                    self.connectors.sink_names()
                ),
            )
        })?;
        let declared = DeclaredSink {
            name: name.clone(),
            schema: entry.schema.clone(),
        };
        let target = connector.plan(&declared, &mut options)?;
        options.finish(
            &connector_kind(connector.name(), "sink"),
            connector.options(),
        )?;
        let mode = match self.plan.nodes[entry.node].changes {
            Changes::AppendOnly => SinkMode::Rows,
            Changes::Updates { finals: true } => SinkMode::FinalRows,
            Changes::Updates { finals: false } => SinkMode::Changelog,
        };
        if mode == SinkMode::Changelog && !target.takes_changelogs() {
            return Err(SqlError::new(
                position,
                format!(
                    "`{from}` updates its rows, and the warehouse holds rows written once; sink a windowed or append-only view (GROUP BY a window), or write the changelog with connector = 'file'"
                ),
            ));
        }
        let node = entry.node;
        let where_to = target.describe();
        self.plan.sinks.push(SinkPlan {
            name: name.clone(),
            definition: sink.definition(),
            from: from.clone(),
            node,
            target,
            mode,
        });
        let what = match mode {
            SinkMode::Rows => "rows as they arrive",
            SinkMode::FinalRows => "each window once, when it closes",
            SinkMode::Changelog => "a changelog of inserts and deletes",
        };
        Ok(Outcome::Done(format!(
            "created sink {name}: {from} → {where_to} ({what})"
        )))
    }
}

/// The columns of `<view>_errors`: the expression as written, its error, the input row as JSON.
fn expression_error_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("expression", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("row", DataType::Utf8, false),
    ]))
}

pub(crate) fn show_nanos(nanos: i64) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(nanos.max(0) as u64)).to_string()
}

/// `, offset 6h` in a window's label, nothing without one.
fn show_offset(offset: i64) -> String {
    match offset {
        0 => String::new(),
        offset => format!(", offset {}", show_nanos(offset)),
    }
}

/// `IN (subquery)` and `EXISTS (subquery)` as the semi and anti joins they are (DataFusion's
/// own rewrite; the rest of its optimizer is not run, so plans keep the shape written).
fn subqueries_as_joins(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
    use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
    use datafusion::optimizer::{Optimizer, OptimizerContext};
    // Uncorrelated scalar subqueries too: DataFusion would otherwise leave them to its own
    // executor, which a streaming plan does not have.
    let mut options = datafusion::config::ConfigOptions::new();
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    let context =
        OptimizerContext::new_with_config_options(Arc::new(options)).with_skip_failing_rules(false);
    Optimizer::with_rules(vec![
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ScalarSubqueryToJoin::new()),
    ])
    .optimize(plan, &context, |_, _| {})
}

/// A join keeps its inputs' rows (arranged by key), so they carry only the columns the view
/// reads above the join: DataFusion's projection pruning, run only on plans with a join, so
/// that every other view keeps the shape (and the checkpoint names) it was written with.
fn columns_joins_read(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::optimizer::optimize_projections::OptimizeProjections;
    use datafusion::optimizer::{Optimizer, OptimizerContext};
    let has_join = plan.exists(|node| Ok(matches!(node, LogicalPlan::Join(_))))?;
    let synthetic = plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::TableScan(scan) if scan.table_name.table().starts_with("__")))
    })?;
    if !has_join || synthetic {
        return Ok(plan);
    }
    let context = OptimizerContext::new().with_skip_failing_rules(false);
    Optimizer::with_rules(vec![Arc::new(OptimizeProjections::new())]).optimize(
        plan,
        &context,
        |_, _| {},
    )
}

fn show_zone(zone: Option<TimeZone>) -> String {
    zone.map_or_else(String::new, |zone| format!(", on {zone}'s clock"))
}

/// A window's offset must be shorter than the step its windows repeat at (`what`): a longer
/// one names the same windows as a shorter one, and is most likely a mistake.
fn shorter_offset(offset: i64, step: i64, what: &str, position: Position) -> SqlResult<()> {
    if offset < step {
        return Ok(());
    }
    Err(SqlError::new(
        position,
        format!(
            "the window's offset ({}) must be shorter than its {what} ({})",
            show_nanos(offset),
            show_nanos(step)
        ),
    ))
}
