//! `CREATE SOURCE` and `CREATE TABLE`: the declared columns and watermark, the plan of the
//! connector the statement names, and the relations a source defines beside its rows
//! (`<source>_errors`, `<source>_late`, `<source>_health`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{BinaryOperator, ColumnOption, Expr as SqlExpr};
use vibelux_interfaces::connector::{DeclaredSource, SOURCE_OPTIONS, SourceConnector};
use vibelux_interfaces::metadata::{
    CHANGELOG_OP, CHANGELOG_OP_NAME, EXTENSION_NAME, JSON_EXTENSION, UNIT as UNIT_METADATA,
};
use vibelux_interfaces::options::{Options, connector_kind, nanos, parse_duration};
use vibelux_interfaces::source::SourceTiming;

use crate::context::{PlanningContext, column_type, interval_nanos};
use crate::error::{Position, SqlError, SqlResult};
use crate::lowering::carried_schema;
use crate::options::options_of;
use crate::parser::CreateSource;
use crate::plan::{Changes, NodeKind, PlanNode, SourcePlan, TablePlan};
use crate::planner::{Entry, EntryKind, Outcome, Planner, Versioned};
use vibelux_operators::top_n::{SortKey, TopNSpec};

/// Columns as declared: a source's, with its event time and watermark delay, or a table's.
enum Declared {
    Source {
        schema: SchemaRef,
        event_time: usize,
        delay: i64,
    },
    Table(SchemaRef),
}

/// How far ahead of the wall clock a source's event times may be, unless `max_future` says.
const DEFAULT_MAX_FUTURE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl Planner {
    pub(crate) fn create_source(
        &mut self,
        source: &CreateSource,
        position: Position,
    ) -> SqlResult<Outcome> {
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
            if crate::context::is_json_type(&column.data_type) {
                let mut metadata = field.metadata().clone();
                metadata.insert(EXTENSION_NAME.to_string(), JSON_EXTENSION.to_string());
                field = field.with_metadata(metadata);
            }
            fields.push(field);
        }
        let defined = connector
            .defined_columns()
            .filter(|_| !source.is_table && fields.is_empty() && source.watermark.is_none());
        let (schema, event_time_column, delay) = match defined {
            Some(defined) => (
                defined.schema,
                defined.event_time,
                defined.watermark_delay_nanos,
            ),
            None => {
                let declared = self.declared_columns(source, &name, position, fields)?;
                match declared {
                    Declared::Source {
                        schema,
                        event_time,
                        delay,
                    } => (schema, event_time, delay),
                    Declared::Table(schema) => {
                        return self
                            .create_table(source, name, schema, position, connector, options);
                    }
                }
            }
        };

        // A versioned table's rows are its keys' versions: a key is required in each.
        let versioned_keys = match source.is_table {
            true => Some(primary_key(source, &name, &schema, position)?),
            false => None,
        };
        let schema = match &versioned_keys {
            Some(keys) => with_keys_required(&schema, keys),
            None => schema,
        };

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
            .or(spec.idle_timeout())
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
            definition: source.definition(),
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
        // Read plainly, a versioned table is its latest version of each key.
        let (node, versioned) = match versioned_keys {
            None => (rows, None),
            Some(key_columns) => {
                let keys: Vec<&str> = key_columns
                    .iter()
                    .map(|&k| schema.field(k).name().as_str())
                    .collect();
                let latest = self.plan.add(PlanNode {
                    kind: NodeKind::TopN {
                        input: rows,
                        spec: Arc::new(TopNSpec {
                            partition: key_columns.clone(),
                            order: vec![SortKey {
                                column: event_time_column,
                                descending: true,
                                nulls_first: false,
                            }],
                            limit: 1,
                            numbered: false,
                            retracting: false,
                        }),
                    },
                    schema: node_schema.clone(),
                    changes: Changes::Updates { finals: false },
                    window: None,
                    event_time: None,
                    lateness_nanos: 0,
                    key: Some(key_columns.clone()),
                    label: format!(
                        "Latest version of {name} (key {}, by {})",
                        keys.join(", "),
                        schema.field(event_time_column).name()
                    ),
                });
                let versioned = Versioned {
                    versions: rows,
                    key_columns,
                };
                (latest, Some(versioned))
            }
        };
        let is_versioned = versioned.is_some();
        self.entries.insert(
            name.clone(),
            Entry {
                kind: EntryKind::Source { index, versioned },
                node,
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
        if is_versioned {
            return Ok(Outcome::Done(format!(
                "created versioned table {name} (its latest version of each key; as of a time with FOR SYSTEM_TIME AS OF; dead letters in {name}_errors, late versions in {name}_late)"
            )));
        }
        Ok(Outcome::Done(format!(
            "created source {name} (dead letters in {name}_errors, late rows in {name}_late)"
        )))
    }

    /// The declared columns of a source and its watermark, checked; a table's columns.
    fn declared_columns(
        &self,
        source: &CreateSource,
        name: &str,
        position: Position,
        fields: Vec<Field>,
    ) -> SqlResult<Declared> {
        if fields.is_empty() {
            return Err(SqlError::new(
                position,
                format!(
                    "source `{name}` declares no columns: list them, e.g. `CREATE SOURCE {name} (ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts) WITH (…)`"
                ),
            ));
        }
        let schema = Arc::new(Schema::new(fields));
        // A table with a watermark is versioned: its rows are versions in event time.
        if source.is_table && source.watermark.is_none() {
            return Ok(Declared::Table(schema));
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
        Ok(Declared::Source {
            schema,
            event_time: event_time_column,
            delay,
        })
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
        let key_columns = primary_key(table, &name, &schema, position)?;
        let schema = with_keys_required(&schema, &key_columns);
        if !connector.reads_tables() {
            return Err(SqlError::new(
                position,
                format!(
                    "tables are not read with connector = '{}'; read them with one of {}",
                    connector.name(),
                    self.connectors.table_source_names()
                ),
            ));
        }
        // A change log's rows say whether they are inserted or deleted (`_op`): the reader
        // fills that after the table's columns.
        let op_column = (!schema
            .fields()
            .iter()
            .any(|field| field.name().eq_ignore_ascii_case(CHANGELOG_OP_NAME)))
        .then_some(schema.fields().len());
        let read = match op_column {
            Some(_) => with_changelog_op(&schema),
            None => schema.clone(),
        };
        let declared = DeclaredSource {
            name: name.clone(),
            schema: read,
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
            definition: table.definition(),
            spec,
            key_columns: key_columns.clone(),
            key_names: key_columns
                .iter()
                .map(|&k| schema.field(k).name().clone())
                .collect(),
            op_column,
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
}

/// The columns of `<source>_errors`: why, the raw input, where it came from.
fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("reason", DataType::Utf8, true),
        Field::new("raw", DataType::Utf8, true),
        Field::new("origin", DataType::Utf8, true),
    ]))
}

/// The columns of a table's primary key.
fn primary_key(
    table: &CreateSource,
    name: &str,
    schema: &Schema,
    position: Position,
) -> SqlResult<Vec<usize>> {
    if table.primary_key.is_empty() {
        return Err(SqlError::new(
            position,
            format!("table `{name}` needs a PRIMARY KEY: its rows are upserted by key"),
        ));
    }
    table
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
        .collect()
}

/// The schema with its key columns required in every row.
/// `schema` and the change-log column a table's reader fills.
fn with_changelog_op(schema: &Schema) -> SchemaRef {
    let op = Field::new(CHANGELOG_OP_NAME, DataType::Utf8, true).with_metadata(
        [(CHANGELOG_OP.to_string(), "true".to_string())]
            .into_iter()
            .collect(),
    );
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .chain([op])
        .collect();
    Arc::new(Schema::new(fields))
}

fn with_keys_required(schema: &Schema, key_columns: &[usize]) -> SchemaRef {
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
    Arc::new(Schema::new(fields))
}
