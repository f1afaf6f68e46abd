//! Statements that read or edit the catalog rather than extend the plan: `DROP`, `SHOW`,
//! `EXPLAIN`.

use crate::error::{Position, SqlError, SqlResult};
use crate::parser::{Located, ObjectKind, Statement};
use crate::plan::Changes;
use crate::planner::{EntryKind, Outcome, Planner};

impl Planner {
    pub(crate) fn drop(
        &mut self,
        kind: ObjectKind,
        name: &str,
        if_exists: bool,
        position: Position,
    ) -> SqlResult<Outcome> {
        let name = name.to_ascii_lowercase();
        if kind == ObjectKind::Sink {
            let before = self.plan.sinks.len();
            self.plan.sinks.retain(|sink| sink.name != name);
            return match (before != self.plan.sinks.len(), if_exists) {
                (true, _) => Ok(Outcome::Done(format!("dropped sink {name}"))),
                (false, true) => Ok(Outcome::Done(format!(
                    "sink {name} does not exist; nothing dropped"
                ))),
                (false, false) => Err(SqlError::new(position, format!("unknown sink `{name}`"))),
            };
        }
        let Some(entry) = self.entries.get(&name) else {
            return if if_exists {
                Ok(Outcome::Done(format!(
                    "{} {name} does not exist; nothing dropped",
                    kind.name()
                )))
            } else {
                Err(SqlError::new(
                    position,
                    format!("unknown {} `{name}`", kind.name()),
                ))
            };
        };
        let matches_kind = matches!(
            (&entry.kind, kind),
            (
                EntryKind::Source {
                    versioned: None,
                    ..
                },
                ObjectKind::Source
            ) | (
                EntryKind::Source {
                    versioned: Some(_),
                    ..
                },
                ObjectKind::Table
            ) | (EntryKind::Table, ObjectKind::Table)
                | (EntryKind::View { .. }, ObjectKind::View)
        );
        if !matches_kind {
            let hint = match entry.kind {
                EntryKind::Alarm => format!("; it is an alarm: DROP ALARM {name}"),
                EntryKind::AlarmState => format!(
                    "; it is the state of alarm `{}`: DROP ALARM {}",
                    name.trim_end_matches("_state"),
                    name.trim_end_matches("_state")
                ),
                _ => String::new(),
            };
            return Err(SqlError::new(
                position,
                format!("`{name}` is not a {}{hint}", kind.name()),
            ));
        }
        let mut removed = vec![name.clone()];
        match entry.kind {
            EntryKind::Source { .. } => {
                removed.push(format!("{name}_errors"));
                removed.push(format!("{name}_late"));
                removed.push(format!("{name}_health"));
            }
            EntryKind::Table | EntryKind::View { .. } => removed.push(format!("{name}_errors")),
            _ => {}
        }
        let dependents: Vec<&String> = self
            .entries
            .iter()
            .filter(|(other, e)| {
                !removed.contains(other) && e.reads.iter().any(|read| removed.contains(read))
            })
            .map(|(other, _)| other)
            .chain(
                self.plan
                    .sinks
                    .iter()
                    .filter(|sink| removed.contains(&sink.from))
                    .map(|sink| &sink.name),
            )
            .collect();
        if let Some(dependent) = dependents.first() {
            return Err(SqlError::new(
                position,
                format!("cannot drop `{name}`: `{dependent}` depends on it; drop that first"),
            ));
        }
        for relation in &removed {
            self.entries.remove(relation);
        }
        self.plan.materialized.retain(|(view, _)| view != &name);
        self.plan
            .expression_errors
            .retain(|(view, _)| view != &name);
        Ok(Outcome::Done(format!("dropped {} {name}", kind.name())))
    }

    pub(crate) fn show(&self, kind: ObjectKind) -> Outcome {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match kind {
            ObjectKind::Source | ObjectKind::Table => Outcome::Table {
                columns: strings(&["name", "connector", "columns"]),
                rows: self
                    .entries
                    .iter()
                    .filter_map(|(name, entry)| match &entry.kind {
                        EntryKind::Source { index, versioned }
                            if (kind == ObjectKind::Table) == versioned.is_some() =>
                        {
                            let columns: Vec<String> = entry
                                .schema
                                .fields()
                                .iter()
                                .map(|f| f.name().clone())
                                .collect();
                            Some(vec![
                                name.clone(),
                                self.plan.sources[*index].spec.connector().to_string(),
                                columns.join(", "),
                            ])
                        }
                        EntryKind::Table if kind == ObjectKind::Table => {
                            let columns: Vec<String> = entry
                                .schema
                                .fields()
                                .iter()
                                .map(|f| f.name().clone())
                                .collect();
                            Some(vec![name.clone(), "file".to_string(), columns.join(", ")])
                        }
                        _ => None,
                    })
                    .collect(),
            },
            ObjectKind::View => Outcome::Table {
                columns: strings(&["name", "materialized", "changes"]),
                rows: self
                    .entries
                    .iter()
                    .filter_map(|(name, entry)| match entry.kind {
                        EntryKind::View { materialized } => {
                            let changes = match self.plan.nodes[entry.node].changes {
                                Changes::AppendOnly => "append-only",
                                Changes::Updates { finals: true } => "windowed",
                                Changes::Updates { finals: false } => "updating",
                            };
                            Some(vec![
                                name.clone(),
                                materialized.to_string(),
                                changes.to_string(),
                            ])
                        }
                        _ => None,
                    })
                    .collect(),
            },
            ObjectKind::Model => self.show_models(),
            ObjectKind::Alarm => self.show_alarms(),
            ObjectKind::Sink => Outcome::Table {
                columns: strings(&["name", "from", "target"]),
                rows: self
                    .plan
                    .sinks
                    .iter()
                    .map(|sink| {
                        let target = sink.target.describe();
                        vec![sink.name.clone(), sink.from.clone(), target]
                    })
                    .collect(),
            },
        }
    }

    /// Plans the statement in a scratch copy of the catalog and shows the dataflow it becomes.
    pub(crate) fn explain(&self, inner: &Located) -> SqlResult<Outcome> {
        let mut scratch = self.clone();
        let outcome = scratch.execute(inner)?;
        let node = match (&inner.statement, outcome) {
            (_, Outcome::Query { node }) => node,
            (Statement::CreateView(view), _) => {
                scratch.entries[&view.name.value.to_ascii_lowercase()].node
            }
            (Statement::CreateSink(sink), _) => {
                scratch
                    .plan
                    .sinks
                    .iter()
                    .find(|s| s.name == sink.name.value.to_ascii_lowercase())
                    .expect("sink just created")
                    .node
            }
            (Statement::CreateSource(source), _) => {
                scratch.entries[&source.name.value.to_ascii_lowercase()].node
            }
            _ => {
                return Err(SqlError::new(
                    inner.position,
                    "EXPLAIN applies to queries, views, sinks and sources",
                ));
            }
        };
        Ok(Outcome::Text(scratch.plan.explain(node)))
    }

    /// One `EXPLAIN` tree per materialized view and sink: what `vibelux explain` prints.
    pub fn explain_pipeline(&self) -> String {
        let mut out = String::new();
        for (name, node) in &self.plan.materialized {
            out.push_str(&format!(
                "materialized view {name}:\n{}\n",
                self.plan.explain(*node)
            ));
        }
        for sink in &self.plan.sinks {
            out.push_str(&format!(
                "sink {} ({:?}):\n{}\n",
                sink.name,
                sink.mode,
                self.plan.explain(sink.node)
            ));
        }
        out
    }
}
