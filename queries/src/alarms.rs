//! `CREATE ALARM`: conditions on a view become an alarm per key, its transitions a relation.
//!
//! The statement is planned in three parts:
//! 1. A query over the watched view: its columns, then the raise and clear conditions as
//!    boolean columns. DataFusion plans and type-checks the conditions like any `WHERE`.
//! 2. The `RaiseAlarms` node: the state machine of `operators::alarm` over those rows. Its
//!    output, the transitions, is the relation named after the alarm, which can be sunk or read.
//! 3. `<alarm>_state`: a materialized view of each instance's latest transition. Dashboards
//!    subscribe to it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, SelectItem, SetExpr};
use datafusion::sql::sqlparser::parser::Parser;
use vibelux_operators::alarm::{AlarmSpec, EVENT_COLUMNS, TemplatePart, Trigger, parse_template};

use crate::context::{PlanningContext, interval_nanos};
use crate::error::{Position, SqlError, SqlResult};
use crate::parser::{CreateAlarm, parse_pipeline};
use crate::plan::{Changes, NodeKind, PlanNode};
use crate::planner::{Entry, EntryKind, Outcome, Planner};

/// Alarm severities, most urgent first (ISA-18.2 priorities).
pub const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

impl Planner {
    pub(crate) fn create_alarm(&mut self, alarm: &CreateAlarm) -> SqlResult<Outcome> {
        let name = alarm.name.value.to_ascii_lowercase();
        let name_position = Position::of(alarm.name.span.start);
        let state_name = format!("{name}_state");
        self.check_new_name(&name, name_position)?;
        self.check_new_name(&state_name, name_position)?;
        let on = alarm.on.value.to_ascii_lowercase();
        let on_position = Position::of(alarm.on.span.start);
        let entry = self
            .entries
            .get(&on)
            .ok_or_else(|| SqlError::new(on_position, format!("unknown relation `{on}`")))?;
        let watched = self.plan.nodes[entry.node].clone();
        // Readings are timed by their event time; closed windows by their end.
        let time = match watched.changes {
            Changes::AppendOnly => watched.event_time.ok_or_else(|| {
                SqlError::new(
                    on_position,
                    format!(
                        "`{on}` has no event-time column; an alarm times its delays in event time"
                    ),
                )
            })?,
            Changes::Updates { finals: true } => watched
                .window
                .and_then(|window| window.end)
                .ok_or_else(|| {
                    SqlError::new(
                        on_position,
                        format!(
                            "`{on}` is windowed but does not select window_end, which times each closed window for the alarm"
                        ),
                    )
                })?,
            Changes::Updates { finals: false } => {
                return Err(SqlError::new(
                    on_position,
                    format!(
                        "`{on}` is a view whose rows update without ever being final; an alarm watches readings, or the closed windows of a windowed view"
                    ),
                ));
            }
        };
        let view_schema = entry.schema.clone();
        let keys = alarm
            .keys
            .iter()
            .map(|key| {
                let column = key.value.to_ascii_lowercase();
                if EVENT_COLUMNS.contains(&column.as_str()) {
                    return Err(SqlError::new(
                        Position::of(key.span.start),
                        format!(
                            "an alarm's rows have a column `{column}` of their own ({}): key it by another name, e.g. `SELECT {column} AS {on}_{column}, …` in a view",
                            EVENT_COLUMNS.join(", ")
                        ),
                    ));
                }
                view_schema
                    .index_of(&column)
                    .map_err(|_| {
                        SqlError::new(
                            Position::of(key.span.start),
                            format!("`{on}` has no column `{}` to key the alarm by", key.value),
                        )
                    })
            })
            .collect::<SqlResult<Vec<usize>>>()?;

        // The view's rows with the conditions as columns.
        let mut query = Parser::new(&crate::parser::VibeluxDialect::default())
            .try_with_sql(&format!("SELECT * FROM \"{on}\""))
            .and_then(|mut parser| parser.parse_query())
            .map_err(SqlError::from_parser)?;
        let SetExpr::Select(select) = query.body.as_mut() else {
            unreachable!("a SELECT was parsed")
        };
        let mut conditions: Vec<(SqlExpr, &str)> = Vec::new();
        if let Some(raise) = &alarm.raise {
            conditions.push((raise.clone(), "__raise"));
        }
        if let Some(clear) = &alarm.clear {
            if alarm.raise.is_none() {
                return Err(SqlError::new(
                    alarm.position,
                    "a STALE alarm clears when readings return; CLEAR WHEN does not apply",
                ));
            }
            conditions.push((clear.clone(), "__clear"));
        }
        for (expr, alias) in &conditions {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::new(*alias),
            });
        }
        let (input, mut reads) = self.plan_query(&query, alarm.position)?;
        let projected = self.plan.nodes[input].schema.clone();
        let kept = view_schema.fields().len();
        for (offset, (_, alias)) in conditions.iter().enumerate() {
            let data_type = projected.field(kept + offset).data_type();
            if data_type != &DataType::Boolean {
                let which = if *alias == "__raise" {
                    "WHEN"
                } else {
                    "CLEAR WHEN"
                };
                return Err(SqlError::new(
                    alarm.position,
                    format!("the {which} condition must be true or false; it is {data_type}"),
                ));
            }
        }
        let trigger = match (&alarm.raise, &alarm.clear) {
            (Some(_), clear) => Trigger::Condition {
                raise: kept,
                clear: clear.as_ref().map(|_| kept + 1),
            },
            (None, _) => Trigger::Stale { after_nanos: None },
        };
        let context = PlanningContext {
            state: &self.state,
            tables: HashMap::new(),
        };
        let delay = |clause: &Option<(SqlExpr, Position)>| -> SqlResult<i64> {
            match clause {
                Some((expr, at)) => interval_nanos(&context, expr, *at),
                None => Ok(0),
            }
        };
        let mut on_delay_nanos = delay(&alarm.on_delay)?;
        // For a deadman, FOR is the silence that raises it.
        let trigger = match trigger {
            Trigger::Stale { .. } if on_delay_nanos > 0 => {
                let after = on_delay_nanos;
                on_delay_nanos = 0;
                Trigger::Stale {
                    after_nanos: Some(after),
                }
            }
            other => other,
        };
        let off_delay_nanos = delay(&alarm.off_delay)?;
        let severity = match &alarm.severity {
            Some((text, at)) => {
                let level = text.to_ascii_lowercase();
                if !SEVERITIES.contains(&level.as_str()) {
                    return Err(SqlError::new(
                        *at,
                        format!("unknown severity '{text}'; use {}", SEVERITIES.join(", ")),
                    ));
                }
                level
            }
            None => "medium".to_string(),
        };
        let message = match &alarm.message {
            Some((text, at)) => parse_template(text, |column| {
                view_schema.index_of(&column.to_ascii_lowercase()).ok()
            })
            .map_err(|problem| SqlError::new(*at, problem))?,
            None => {
                // "too_hot: zone z1"
                let mut parts = vec![TemplatePart::Text(name.clone())];
                for (index, key) in keys.iter().enumerate() {
                    let separator = if index == 0 { ": " } else { ", " };
                    parts.push(TemplatePart::Text(format!(
                        "{separator}{} ",
                        view_schema.field(*key).name()
                    )));
                    parts.push(TemplatePart::Column {
                        index: *key,
                        decimals: None,
                    });
                }
                parts
            }
        };
        let spec = AlarmSpec {
            name: name.clone(),
            keys: keys.clone(),
            time,
            trigger,
            on_delay_nanos,
            off_delay_nanos,
            severity,
            message,
            lateness_nanos: watched.lateness_nanos,
        };

        let zone = match view_schema.field(time).data_type() {
            DataType::Timestamp(_, zone) => zone.clone(),
            _ => None,
        };
        let mut fields: Vec<Field> = keys
            .iter()
            .map(|key| view_schema.field(*key).as_ref().clone())
            .collect();
        for column in EVENT_COLUMNS {
            let data_type = match column {
                "ts" | "active_since" => DataType::Timestamp(TimeUnit::Nanosecond, zone.clone()),
                _ => DataType::Utf8,
            };
            fields.push(Field::new(column, data_type, true));
        }
        let ts_column = keys.len() + 2;
        let label = format!(
            "RaiseAlarms {name} per [{}]",
            alarm
                .keys
                .iter()
                .map(|key| key.value.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let node = self.plan.add(PlanNode {
            kind: NodeKind::RaiseAlarms {
                input,
                spec: Arc::new(spec),
            },
            schema: Arc::new(Schema::new(fields)),
            changes: Changes::AppendOnly,
            window: None,
            event_time: Some(ts_column),
            lateness_nanos: watched.lateness_nanos,
            key: None,
            label,
        });
        let schema = self.plan.nodes[node].schema.clone();
        reads.push(on);
        reads.sort();
        reads.dedup();
        self.entries.insert(
            name.clone(),
            Entry {
                kind: EntryKind::Alarm,
                node,
                schema,
                reads,
            },
        );

        // The latest transition of each instance, for dashboards.
        let key_list: Vec<String> = keys
            .iter()
            .map(|key| format!("\"{}\"", view_schema.field(*key).name()))
            .collect();
        let keys_select = key_list
            .iter()
            .map(|key| format!("{key}, "))
            .collect::<String>();
        let group_by = if key_list.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", key_list.join(", "))
        };
        let state_sql = format!(
            "CREATE MATERIALIZED VIEW \"{state_name}\" AS SELECT {keys_select}\
             last_value(state ORDER BY ts) AS state, max(ts) AS since, \
             last_value(active_since ORDER BY ts) AS active_since, \
             last_value(severity ORDER BY ts) AS severity, \
             last_value(message ORDER BY ts) AS message FROM \"{name}\"{group_by}"
        );
        let statements = parse_pipeline(&state_sql).map_err(|error| {
            SqlError::new(alarm.position, format!("planning {state_name}: {error}"))
        })?;
        for statement in &statements {
            self.execute(statement).map_err(|error| {
                SqlError::new(alarm.position, format!("planning {state_name}: {error}"))
            })?;
        }
        if let Some(entry) = self.entries.get_mut(&state_name) {
            entry.kind = EntryKind::AlarmState;
        }
        Ok(Outcome::Done(format!(
            "created alarm {name} (transitions) and materialized view {state_name}"
        )))
    }

    /// `DROP ALARM`: the alarm and its state view.
    pub(crate) fn drop_alarm(
        &mut self,
        name: &str,
        if_exists: bool,
        position: Position,
    ) -> SqlResult<Outcome> {
        match self.entries.get(name).map(|entry| &entry.kind) {
            Some(EntryKind::Alarm) => {}
            Some(_) => return Err(SqlError::new(position, format!("`{name}` is not an alarm"))),
            None if if_exists => {
                return Ok(Outcome::Done(format!(
                    "alarm {name} does not exist; nothing dropped"
                )));
            }
            None => return Err(SqlError::new(position, format!("unknown alarm `{name}`"))),
        }
        let state_name = format!("{name}_state");
        let state_errors = format!("{state_name}_errors");
        let dependent = self
            .entries
            .iter()
            .filter(|(other, _)| **other != state_name && **other != state_errors)
            .find(|(_, entry)| {
                entry
                    .reads
                    .iter()
                    .any(|read| read == name || *read == state_name || *read == state_errors)
            })
            .map(|(other, _)| other.clone())
            .or_else(|| {
                self.plan
                    .sinks
                    .iter()
                    .find(|sink| {
                        sink.from == name || sink.from == state_name || sink.from == state_errors
                    })
                    .map(|sink| sink.name.clone())
            });
        if let Some(dependent) = dependent {
            return Err(SqlError::new(
                position,
                format!("cannot drop `{name}`: `{dependent}` depends on it; drop that first"),
            ));
        }
        self.entries.remove(&state_errors);
        self.entries.remove(&state_name);
        self.entries.remove(name);
        self.plan
            .materialized
            .retain(|(view, _)| *view != state_name);
        self.plan
            .expression_errors
            .retain(|(view, _)| *view != state_name);
        Ok(Outcome::Done(format!("dropped alarm {name}")))
    }

    pub(crate) fn show_alarms(&self) -> Outcome {
        let rows = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.kind, EntryKind::Alarm))
            .map(|(name, entry)| {
                let label = &self.plan.nodes[entry.node].label;
                let watched = entry
                    .reads
                    .iter()
                    .find(|read| !read.starts_with("__"))
                    .cloned()
                    .unwrap_or_default();
                vec![name.clone(), watched, label.clone()]
            })
            .collect();
        Outcome::Table {
            columns: ["name", "on", "dataflow"].map(String::from).to_vec(),
            rows,
        }
    }
}
