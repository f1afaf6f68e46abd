//! Changing a running pipeline: statements posted to `POST /v1/sql`.
//!
//! The statements are planned against a copy of the running catalog; only if every one of them
//! plans, and every new sink opens, does the copy replace the catalog. Each materialized view or
//! sink they add becomes its own dataflow on every worker (see `runtime::Extension` and
//! `taps`), so dropping it later drops exactly that dataflow. What the pipeline file defined is
//! compiled into the main dataflow and cannot be dropped or replaced while running.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use vibelux_connectors::sink::SinkMetrics;
use vibelux_queries::error::{Position, SqlError};
use vibelux_queries::parser::{Statement, parse_pipeline};
use vibelux_queries::plan::SinkMode;
use vibelux_queries::planner::{Outcome, Planner};

use crate::confinement::ApiLimits;
use crate::diagnostics::render;
use crate::live::view::{LiveView, LiveViews, Retention};
use crate::runtime::{Added, Command, Extension, StatementRelay};

/// Why statements were not applied.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A statement is wrong: rendered with its line and column.
    #[error("{0}")]
    Sql(String),
    /// The pipeline cannot take changes (it has finished, or an input could not be opened).
    #[error("{0}")]
    Unavailable(String),
    /// The caller's role does not cover a statement (a sink that writes to equipment).
    #[error("{0}")]
    Forbidden(String),
}

/// Sinks added while running, for metrics and the final report.
#[derive(Default)]
pub struct AddedSinks {
    pub sinks: Mutex<Vec<(String, Arc<SinkMetrics>)>>,
}

pub struct Control {
    planner: Mutex<Planner>,
    /// Names the pipeline file defined.
    defined_by_file: HashSet<String>,
    commands: Mutex<Vec<std::sync::mpsc::Sender<Command>>>,
    views: LiveViews,
    retention: Retention,
    pub added_sinks: Arc<AddedSinks>,
    /// What added sinks may reach, and how many views and sinks may be added.
    limits: ApiLimits,
    /// Whether added sinks are opened here: not on a process of a cluster other than 0, which
    /// builds their dataflows but sends their rows to process 0.
    opens_sinks: bool,
    /// On process 0 of a cluster: where what is applied goes, to be applied by the others.
    forward_to: Option<Arc<StatementRelay>>,
}

fn names(planner: &Planner) -> HashSet<String> {
    let mut names: HashSet<String> = planner
        .relation_names()
        .into_iter()
        .chain(planner.plan.sinks.iter().map(|sink| sink.name.clone()))
        .collect();
    names.retain(|name| !name.is_empty());
    names
}

impl Control {
    pub fn new(
        planner: Planner,
        commands: Vec<std::sync::mpsc::Sender<Command>>,
        views: LiveViews,
        retention: Retention,
    ) -> Self {
        Control {
            defined_by_file: names(&planner),
            planner: Mutex::new(planner),
            commands: Mutex::new(commands),
            views,
            retention,
            added_sinks: Arc::default(),
            limits: ApiLimits::here(),
            opens_sinks: true,
            forward_to: None,
        }
    }

    /// In a cluster: process 0 (`first`) passes each request it applies on to the others
    /// through `relay`; another process applies what arrives there, building the same
    /// dataflows in the same order, and opens no sink.
    pub fn in_cluster(mut self, relay: &Arc<StatementRelay>, first: bool) -> Self {
        self.opens_sinks = first;
        self.forward_to = first.then(|| relay.clone());
        self
    }

    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Why `next` may not replace `current`: a new sink reaching beyond the limits, or more
    /// views and sinks than the API may add.
    fn refusal(
        &self,
        current: &Planner,
        next: &Planner,
        may_actuate: bool,
    ) -> Option<ControlError> {
        let new_sinks = next.plan.sinks.iter().filter(|sink| {
            !current
                .plan
                .sinks
                .iter()
                .any(|s| s.name == sink.name && s.definition == sink.definition)
        });
        for sink in new_sinks {
            let actuates = sink.target.actuates();
            if actuates && !may_actuate {
                return Some(ControlError::Forbidden(format!(
                    "sink `{}` writes to equipment ({}): only an admin token may create one",
                    sink.name,
                    sink.target.describe()
                )));
            }
            if let Some(why) = self
                .limits
                .refusal(&sink.name, &sink.target.reach(), actuates)
            {
                return Some(ControlError::Forbidden(why));
            }
        }
        let added = next
            .plan
            .sinks
            .iter()
            .map(|sink| &sink.name)
            .chain(next.plan.materialized.iter().map(|(name, _)| name))
            .filter(|name| !self.defined_by_file.contains(name.as_str()))
            .count();
        (added > self.limits.max_objects).then(|| {
            ControlError::Forbidden(format!(
                "the API may add at most {} views and sinks (--max-api-objects); {added} would exist: drop some first",
                self.limits.max_objects
            ))
        })
    }

    fn refuse(sql: &str, position: Position, message: String) -> ControlError {
        ControlError::Sql(render("request", sql, &SqlError::new(position, message)))
    }

    /// Applies `sql`; only a caller that `may_actuate` may add sinks that act on equipment.
    /// Returns what each statement did, as JSON.
    pub fn execute(&self, sql: &str, may_actuate: bool) -> Result<Vec<Value>, ControlError> {
        Ok(self
            .apply_statements(sql, may_actuate)?
            .into_iter()
            .map(|(text, outcome)| match outcome {
                Outcome::Done(message) => json!({ "statement": text, "done": message }),
                Outcome::Table { columns, rows } => {
                    json!({ "statement": text, "columns": columns, "rows": rows })
                }
                Outcome::Text(output) => json!({ "statement": text, "text": output }),
                Outcome::Query { .. } => unreachable!("refused by apply_statements"),
            })
            .collect())
    }

    /// The tables of the warehouse the pipeline writes (its Parquet sinks, including those
    /// added while running): name (the folder's) and folder.
    pub fn warehouse_tables(&self) -> Vec<(String, std::path::PathBuf)> {
        let planner = self.planner.lock().unwrap_or_else(|p| p.into_inner());
        planner
            .plan
            .sinks
            .iter()
            .filter_map(|sink| sink.target.warehouse_table())
            .filter_map(|folder| {
                let name = folder.file_name()?.to_string_lossy().to_string();
                Some((name, folder))
            })
            .collect()
    }

    /// Plans and applies `sql`; returns each statement's text and outcome.
    pub fn apply_statements(
        &self,
        sql: &str,
        may_actuate: bool,
    ) -> Result<Vec<(String, Outcome)>, ControlError> {
        let statements = parse_pipeline(sql)
            .map_err(|error| ControlError::Sql(render("request", sql, &error)))?;
        let mut planner = self.planner.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = planner.clone();
        let mut results = Vec::new();
        for located in &statements {
            let touched = match &located.statement {
                Statement::CreateSource(source) => {
                    return Err(Self::refuse(
                        sql,
                        located.position,
                        format!(
                            "`{}`: sources and tables cannot be added while the pipeline runs; add them to the pipeline file",
                            source.name.value
                        ),
                    ));
                }
                Statement::Query(_) => {
                    return Err(Self::refuse(
                        sql,
                        located.position,
                        "ad-hoc queries are not run here: read a materialized view (GET /v1/views/NAME) or query the warehouse (vibelux query)".into(),
                    ));
                }
                Statement::CreateView(view) if view.or_replace => {
                    Some(view.name.value.to_ascii_lowercase())
                }
                Statement::Drop { name, .. } => Some(name.value.to_ascii_lowercase()),
                _ => None,
            };
            if let Some(name) = touched
                && self.defined_by_file.contains(&name)
            {
                return Err(Self::refuse(
                    sql,
                    located.position,
                    format!(
                        "`{name}` is defined in the pipeline file and runs in its dataflow; change it there and restart"
                    ),
                ));
            }
            let outcome = next
                .execute(located)
                .map_err(|error| ControlError::Sql(render("request", sql, &error)))?;
            results.push((located.text.clone(), outcome));
        }
        if let Some(refusal) = self.refusal(&planner, &next, may_actuate) {
            return Err(refusal);
        }
        self.apply(&planner, &next)?;
        *planner = next;
        // Sent on while the planner is held, so the other processes apply requests in this
        // order.
        if let Some(relay) = &self.forward_to {
            relay.forward(sql);
        }
        Ok(results)
    }

    /// Starts what `next` adds over `current` and stops what it removes.
    fn apply(&self, current: &Planner, next: &Planner) -> Result<(), ControlError> {
        let before = &current.plan;
        let after = &next.plan;
        let plan = Arc::new(after.clone());
        let same_sink = |name: &str| {
            let old = before.sinks.iter().find(|s| s.name == name);
            let new = after.sinks.iter().find(|s| s.name == name);
            matches!((old, new), (Some(a), Some(b)) if a.node == b.node)
        };
        let same_view = |name: &str| {
            let old = before.materialized.iter().find(|(n, _)| n == name);
            let new = after.materialized.iter().find(|(n, _)| n == name);
            matches!((old, new), (Some(a), Some(b)) if a.1 == b.1)
        };
        let mut commands = Vec::new();
        // Removed or replaced: drop their dataflows.
        for sink in &before.sinks {
            if !same_sink(&sink.name) {
                commands.push(Command::Drop(sink.name.clone()));
                self.added_sinks
                    .sinks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(name, _)| name != &sink.name);
            }
        }
        let mut removed_views = Vec::new();
        for (name, _) in &before.materialized {
            if !same_view(name) {
                commands.push(Command::Drop(name.clone()));
                removed_views.push(name.clone());
            }
        }
        // Added: open sinks first, so a bad path fails the request before anything changes.
        let mut added_views = Vec::new();
        for (index, sink) in after.sinks.iter().enumerate() {
            if same_sink(&sink.name) {
                continue;
            }
            let schema = after.nodes[sink.node].schema.clone();
            let writer = match self.opens_sinks {
                true => Some(
                    sink.target
                        .open(schema, sink.mode == SinkMode::Changelog)
                        .map_err(|error| {
                            ControlError::Sql(format!(
                                "request: opening sink {}: {error}",
                                sink.name
                            ))
                        })?,
                ),
                false => None,
            };
            let metrics = Arc::new(SinkMetrics::default());
            self.added_sinks
                .sinks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((sink.name.clone(), metrics.clone()));
            commands.push(Command::Add(Arc::new(Extension {
                name: sink.name.clone(),
                plan: plan.clone(),
                object: Added::Sink {
                    index,
                    writer: Mutex::new(writer),
                    metrics,
                },
            })));
        }
        for (name, node) in &after.materialized {
            if same_view(name) {
                continue;
            }
            let spec = &after.nodes[*node];
            let live = Arc::new(LiveView::new(
                name.clone(),
                spec.schema.clone(),
                spec.key.clone(),
                self.retention,
            ));
            added_views.push(live.clone());
            commands.push(Command::Add(Arc::new(Extension {
                name: name.clone(),
                plan: plan.clone(),
                object: Added::View { node: *node, live },
            })));
        }
        let senders = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        for command in commands {
            for sender in senders.iter() {
                sender.send(command.clone()).map_err(|_| {
                    ControlError::Unavailable(
                        "the pipeline has finished: its workers take no more changes".into(),
                    )
                })?;
            }
        }
        for name in removed_views {
            self.views.remove(&name);
        }
        for view in added_views {
            self.views.add(view);
        }
        Ok(())
    }
}
