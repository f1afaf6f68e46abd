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
use datafusion::optimizer::Analyzer;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::ast::{BinaryOperator, ColumnOption, Expr as SqlExpr};
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Registry, SOURCE_OPTIONS, SourceConnector,
};
use vibelux_interfaces::metadata::UNIT as UNIT_METADATA;
use vibelux_interfaces::options::{Options, connector_kind, nanos, parse_duration};
use vibelux_interfaces::source::SourceTiming;
use vibelux_models::onnx::ModelRegistry;
use vibelux_operators::window::WindowKind;

use crate::context::{PlanningContext, column_type, interval_nanos, located, session_state};
use crate::error::{Position, SqlError, SqlResult};
use crate::lowering::{Lowering, carried_schema};
use crate::options::options_of;
use crate::parser::{CreateSink, CreateSource, CreateView, Located, ObjectKind, Statement};
use crate::plan::{
    Changes, DataflowPlan, NodeId, NodeKind, PlanNode, SinkMode, SinkPlan, SourcePlan, TablePlan,
    WindowColumns,
};
use crate::window_functions::{WindowFunction, rewrite_window_calls};

/// How far ahead of the wall clock a source's event times may be, unless `max_future` says.
const DEFAULT_MAX_FUTURE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    Source {
        index: usize,
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

    fn create_source(&mut self, source: &CreateSource, position: Position) -> SqlResult<Outcome> {
        let name = source.name.value.to_ascii_lowercase();
        let name_position = Position::of(source.name.span.start);
        self.check_new_name(&name, name_position)?;
        for suffix in ["_errors", "_late", "_health"] {
            self.check_new_name(&format!("{name}{suffix}"), name_position)?;
        }
        let mut options = options_of(&source.options, position)?;
        let (connector_name, connector_position) = options.required("connector", "a source")?;
        let connector = self
            .connectors
            .find_source(&connector_name)
            .cloned()
            .ok_or_else(|| {
                SqlError::new(
                    connector_position.into(),
                    format!(
                        "unknown source connector '{}'; available: {}",
                        connector_name.to_ascii_lowercase(),
                        self.connectors.source_names()
                    ),
                )
            })?;
        let mut fields = Vec::new();
        for column in &source.columns {
            let column_position = Position::of(column.name.span.start);
            let data_type = column_type(&column.data_type, column_position)?;
            let required = column
                .options
                .iter()
                .any(|option| matches!(option.option, ColumnOption::NotNull));
            let column_name = column.name.value.to_ascii_lowercase();
            if fields.iter().any(|f: &Field| f.name() == &column_name) {
                return Err(SqlError::new(
                    column_position,
                    format!("column `{column_name}` is declared twice"),
                ));
            }
            let mut field = Field::new(column_name.clone(), data_type, !required);
            let declared = source.units.iter().find(|(c, _)| c == &column.name);
            let unit = match declared {
                Some((_, unit)) => Some(unit.clone()),
                None => connector.column_unit(&column_name).map(str::to_string),
            };
            if let Some(unit) = unit {
                field = field.with_metadata([(UNIT_METADATA.to_string(), unit)].into());
            }
            fields.push(field);
        }
        if fields.is_empty() {
            return Err(SqlError::new(
                position,
                format!("source `{name}` declares no columns"),
            ));
        }
        let schema = Arc::new(Schema::new(fields));
        if source.is_table {
            return self.create_table(source, name, schema, position, connector, options);
        }

        let watermark = source.watermark.as_ref().ok_or_else(|| {
            SqlError::new(position, format!("source `{name}` needs an event-time column: add WATERMARK FOR ts AS ts - INTERVAL '5 seconds'"))
        })?;
        let time_name = watermark.column.value.to_ascii_lowercase();
        let time_position = Position::of(watermark.column.span.start);
        let event_time_column = schema.index_of(&time_name).map_err(|_| {
            SqlError::new(
                time_position,
                format!("the watermark column `{time_name}` is not a declared column"),
            )
        })?;
        if !matches!(
            schema.field(event_time_column).data_type(),
            DataType::Timestamp(..)
        ) {
            return Err(SqlError::new(
                time_position,
                format!("the watermark column `{time_name}` must be a TIMESTAMP"),
            ));
        }
        let delay = self.watermark_delay(&watermark.expression, &time_name, watermark.position)?;

        // A device whose clock jumped ahead must not move the watermark on for good.
        let max_future_nanos = match options.take("max_future") {
            None => Some(nanos(DEFAULT_MAX_FUTURE)),
            Some((text, _))
                if ["none", "off"].contains(&text.trim().to_ascii_lowercase().as_str()) =>
            {
                None
            }
            Some((text, position)) => Some(nanos(parse_duration(&text).map_err(|problem| {
                SqlError::new(
                    position.into(),
                    format!("option `max_future`: {problem}, or 'none'"),
                )
            })?)),
        };
        let declared = DeclaredSource {
            name: name.clone(),
            schema: schema.clone(),
            event_time: Some(event_time_column),
            max_future_nanos,
        };
        let spec = connector.plan(&declared, &mut options)?;
        let lateness = options
            .duration("allowed_lateness")?
            .map(nanos)
            .unwrap_or(0);
        let idle_timeout = options
            .duration("idle_timeout")?
            .unwrap_or(std::time::Duration::from_secs(10));
        let batch_size = options.count("batch_size")?.unwrap_or(1024).max(1);
        options.finish(
            &connector_kind(connector.name(), "source"),
            connector.options(),
        )?;
        let health_schema = spec.health_schema();
        let described = format!("Source {name} ({}: {})", spec.connector(), spec.describe());

        let index = self.plan.sources.len();
        self.plan.sources.push(SourcePlan {
            name: name.clone(),
            spec,
            timing: SourceTiming {
                watermark_delay_nanos: delay,
                allowed_lateness_nanos: lateness,
                idle_timeout,
                batch_size,
            },
        });
        let node_schema =
            carried_schema(&schema).map_err(|message| SqlError::new(position, message))?;
        let rows = self.plan.add(PlanNode {
            kind: NodeKind::SourceRows { source: index },
            schema: node_schema.clone(),
            changes: Changes::AppendOnly,
            window: None,
            event_time: Some(event_time_column),
            lateness_nanos: lateness,
            key: None,
            label: described,
        });
        self.entries.insert(
            name.clone(),
            Entry {
                kind: EntryKind::Source { index },
                node: rows,
                schema: node_schema.clone(),
                reads: Vec::new(),
            },
        );

        let errors_schema = dead_letter_schema();
        let errors = self.plan.add(PlanNode {
            kind: NodeKind::SourceDeadLetters { source: index },
            schema: errors_schema.clone(),
            changes: Changes::AppendOnly,
            window: None,
            event_time: None,
            lateness_nanos: 0,
            key: None,
            label: format!("Dead letters of {name}"),
        });
        let late = self.plan.add(PlanNode {
            kind: NodeKind::SourceLateRows { source: index },
            schema: node_schema.clone(),
            changes: Changes::AppendOnly,
            window: None,
            event_time: Some(event_time_column),
            lateness_nanos: 0,
            key: None,
            label: format!("Late rows of {name}"),
        });
        let output = |node, schema| Entry {
            kind: EntryKind::SourceOutput,
            node,
            schema,
            reads: vec![name.clone()],
        };
        self.entries
            .insert(format!("{name}_errors"), output(errors, errors_schema));
        self.entries
            .insert(format!("{name}_late"), output(late, node_schema));
        if let Some(health_schema) = health_schema {
            let health = self.plan.add(PlanNode {
                kind: NodeKind::SourceHealth { source: index },
                schema: health_schema.clone(),
                changes: Changes::AppendOnly,
                window: None,
                event_time: Some(1),
                lateness_nanos: 0,
                key: None,
                label: format!("Health of {name}"),
            });
            self.entries
                .insert(format!("{name}_health"), output(health, health_schema));
            return Ok(Outcome::Done(format!(
                "created source {name} (dead letters in {name}_errors, late rows in {name}_late, device health in {name}_health)"
            )));
        }
        Ok(Outcome::Done(format!(
            "created source {name} (dead letters in {name}_errors, late rows in {name}_late)"
        )))
    }

    /// `CREATE TABLE`: reference data from a file, one row per primary key.
    fn create_table(
        &mut self,
        table: &CreateSource,
        name: String,
        schema: SchemaRef,
        position: Position,
        connector: Arc<dyn SourceConnector>,
        mut options: Options,
    ) -> SqlResult<Outcome> {
        if let Some(watermark) = &table.watermark {
            return Err(SqlError::new(
                watermark.position,
                "a table has no event time: remove WATERMARK, or declare a SOURCE",
            ));
        }
        if table.primary_key.is_empty() {
            return Err(SqlError::new(
                position,
                format!("table `{name}` needs a PRIMARY KEY: its rows are upserted by key"),
            ));
        }
        let key_columns = table
            .primary_key
            .iter()
            .map(|column| {
                schema
                    .index_of(&column.value.to_ascii_lowercase())
                    .map_err(|_| {
                        SqlError::new(
                            Position::of(column.span.start),
                            format!(
                                "the primary key column `{}` is not a declared column",
                                column.value
                            ),
                        )
                    })
            })
            .collect::<SqlResult<Vec<_>>>()?;
        // Key columns are required in every row.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                field
                    .as_ref()
                    .clone()
                    .with_nullable(field.is_nullable() && !key_columns.contains(&index))
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        if !connector.reads_tables() {
            return Err(SqlError::new(
                position,
                format!(
                    "tables are not read with connector = '{}'; read them with connector = 'file'",
                    connector.name()
                ),
            ));
        }
        let declared = DeclaredSource {
            name: name.clone(),
            schema: schema.clone(),
            event_time: None,
            max_future_nanos: None,
        };
        let spec = connector.plan(&declared, &mut options)?;
        let known: Vec<&str> = connector
            .options()
            .iter()
            .copied()
            .filter(|option| *option == "connector" || !SOURCE_OPTIONS.contains(option))
            .collect();
        options.finish("a table", &known)?;
        let index = self.plan.tables.len();
        self.plan.tables.push(TablePlan {
            name: name.clone(),
            spec,
            key_columns: key_columns.clone(),
        });
        let node_schema =
            carried_schema(&schema).map_err(|message| SqlError::new(position, message))?;
        let keys: Vec<&str> = key_columns
            .iter()
            .map(|&k| schema.field(k).name().as_str())
            .collect();
        let node = self.plan.add(PlanNode {
            kind: NodeKind::TableChanges { table: index },
            schema: node_schema.clone(),
            changes: Changes::Updates { finals: false },
            window: None,
            event_time: None,
            lateness_nanos: 0,
            key: Some(key_columns.clone()),
            label: format!("Table {name} (key {})", keys.join(", ")),
        });
        self.entries.insert(
            name.clone(),
            Entry {
                kind: EntryKind::Table,
                node,
                schema: node_schema,
                reads: Vec::new(),
            },
        );
        let errors = self.plan.add(PlanNode {
            kind: NodeKind::TableDeadLetters { table: index },
            schema: dead_letter_schema(),
            changes: Changes::AppendOnly,
            window: None,
            event_time: None,
            lateness_nanos: 0,
            key: None,
            label: format!("Dead letters of {name}"),
        });
        self.entries.insert(
            format!("{name}_errors"),
            Entry {
                kind: EntryKind::SourceOutput,
                node: errors,
                schema: dead_letter_schema(),
                reads: vec![name.clone()],
            },
        );
        Ok(Outcome::Done(format!(
            "created table {name} (dead letters in {name}_errors)"
        )))
    }

    /// The delay of `WATERMARK FOR ts AS ts - INTERVAL '…'` (or `AS ts` for none).
    fn watermark_delay(
        &self,
        expression: &SqlExpr,
        column: &str,
        position: Position,
    ) -> SqlResult<i64> {
        let names_column = |expr: &SqlExpr| matches!(expr, SqlExpr::Identifier(ident) if ident.value.eq_ignore_ascii_case(column));
        match expression {
            expr if names_column(expr) => Ok(0),
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if names_column(left) => {
                let context = PlanningContext {
                    state: &self.state,
                    tables: HashMap::new(),
                };
                interval_nanos(&context, right, position)
            }
            SqlExpr::Nested(inner) => self.watermark_delay(inner, column, position),
            _ => Err(SqlError::new(
                position,
                format!("expected WATERMARK FOR {column} AS {column} - INTERVAL '…'"),
            )),
        }
    }

    /// Plans a query: window calls, DataFusion planning and type checking, lowering.
    pub(crate) fn plan_query(
        &mut self,
        query: &datafusion::sql::sqlparser::ast::Query,
        position: Position,
    ) -> SqlResult<(NodeId, Vec<String>)> {
        let mut query = query.clone();
        let calls = rewrite_window_calls(&mut query, &mut self.window_relations)?;
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
            let kind = match (call.function, &lengths[..]) {
                (WindowFunction::Tumble, &[size]) => WindowKind::Tumble { size },
                (WindowFunction::Hop, &[slide, size]) => WindowKind::Hop { slide, size },
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
                WindowKind::Tumble { size } => {
                    format!("AssignWindows TUMBLE({time_name}, {})", show_nanos(size))
                }
                WindowKind::Hop { slide, size } => format!(
                    "AssignWindows HOP({time_name}, slide {}, size {})",
                    show_nanos(slide),
                    show_nanos(size)
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
                    size_nanos: kind.size(),
                    session: matches!(kind, WindowKind::Session { .. }),
                }),
                event_time: Some(time_column),
                lateness_nanos: input.lateness_nanos,
                key: input.key.clone(),
                label,
            });
            tables.insert(call.relation.clone(), schema);
            relations.insert(call.relation.clone(), node);
        }

        let context = PlanningContext {
            state: &self.state,
            tables,
        };
        let logical = context
            .sql_to_rel()
            .sql_statement_to_plan(SqlStatement::Query(Box::new(query)))
            .map_err(|error| located(error, position))?;
        let logical = Analyzer::new()
            .execute_and_check(logical, self.state.config_options(), |_, _| {})
            .map_err(|error| located(error, position))?;
        let mut lowering = Lowering::new(&mut self.plan, &relations, &self.models, position);
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

/// The columns of `<source>_errors`: why, the raw input, where it came from.
fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("reason", DataType::Utf8, true),
        Field::new("raw", DataType::Utf8, true),
        Field::new("origin", DataType::Utf8, true),
    ]))
}

fn show_nanos(nanos: i64) -> String {
    humantime::format_duration(std::time::Duration::from_nanos(nanos.max(0) as u64)).to_string()
}
