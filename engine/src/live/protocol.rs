//! The messages of the live-view protocol (docs/live-views.md), as JSON text.
//!
//! Rows are objects keyed by column name; `ts` is dataflow time, milliseconds since the epoch:
//! a message at `ts` holds exactly the changes at that timestamp, and `progress` at `ts` promises
//! that nothing earlier than `ts` will follow.

use serde_json::{Map, Value, json};
use vibelux_operators::row::{Datum, Row, format_timestamp};

use super::view::LiveView;
use crate::live::publish::consolidate_diffs;

/// How changes are presented to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Every change as a row with diff +1 or −1 (an update is −1 old, +1 new).
    Diff,
    /// One entry per changed key: its new row, or `null` once deleted.
    Upsert,
}

pub fn datum_json(datum: &Datum) -> Value {
    match datum {
        Datum::Null => Value::Null,
        Datum::Boolean(v) => Value::Bool(*v),
        Datum::Int64(v) => json!(v),
        Datum::Float64(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
        Datum::Utf8(v) => Value::String(v.to_string()),
        Datum::Timestamp(v) => Value::String(format_timestamp(*v)),
    }
}

pub fn row_json(view: &LiveView, row: &Row) -> Value {
    let mut object = Map::with_capacity(row.len());
    for (field, datum) in view.schema.fields().iter().zip(row) {
        object.insert(field.name().clone(), datum_json(datum));
    }
    Value::Object(object)
}

fn key_json(view: &LiveView, row: &Row) -> Value {
    let mut object = Map::new();
    for &column in view.key.as_deref().unwrap_or_default() {
        object.insert(
            view.schema.field(column).name().clone(),
            datum_json(&row[column]),
        );
    }
    Value::Object(object)
}

/// Column names and types, the key, and units where known.
pub fn columns_json(view: &LiveView) -> Value {
    let columns: Vec<Value> = view
        .schema
        .fields()
        .iter()
        .map(|field| {
            let mut column = json!({
                "name": field.name(),
                "type": crate::format::type_name(field.data_type()),
            });
            if let Some(unit) = field.metadata().get("unit") {
                column["unit"] = json!(unit);
            }
            column
        })
        .collect();
    Value::Array(columns)
}

pub fn key_names(view: &LiveView) -> Value {
    match &view.key {
        Some(key) => json!(
            key.iter()
                .map(|&c| view.schema.field(c).name().clone())
                .collect::<Vec<_>>()
        ),
        None => Value::Null,
    }
}

pub fn schema_message(view: &LiveView, envelope: Envelope) -> String {
    json!({
        "type": "schema",
        "view": view.name,
        "columns": columns_json(view),
        "key": key_names(view),
        "envelope": match envelope { Envelope::Diff => "diff", Envelope::Upsert => "upsert" },
    })
    .to_string()
}

fn diff_entries(view: &LiveView, updates: &[(Row, i64)]) -> Vec<Value> {
    // Retractions first, so a client applying them in order never holds both versions.
    let retractions = updates.iter().filter(|(_, diff)| *diff < 0);
    let insertions = updates.iter().filter(|(_, diff)| *diff > 0);
    retractions
        .chain(insertions)
        .map(|(row, diff)| json!({ "row": row_json(view, row), "diff": diff }))
        .collect()
}

fn entries(view: &LiveView, updates: &[(Row, i64)], envelope: Envelope) -> Vec<Value> {
    match envelope {
        Envelope::Diff => diff_entries(view, updates),
        Envelope::Upsert => upserts(view, updates),
    }
}

/// Upserts: per changed key, the row that remains after the changes, or `null` when none does.
fn upserts(view: &LiveView, updates: &[(Row, i64)]) -> Vec<Value> {
    let key = view.key.as_deref().unwrap_or_default();
    let key_of = |row: &Row| -> Row { key.iter().map(|&c| row[c].clone()).collect() };
    let mut by_key: std::collections::BTreeMap<Row, (&Row, bool)> = Default::default();
    for (row, diff) in updates {
        let entry = by_key.entry(key_of(row)).or_insert((row, false));
        if *diff > 0 {
            *entry = (row, true);
        }
    }
    by_key
        .into_values()
        .map(|(row, present)| {
            if present {
                json!({ "key": key_json(view, row), "row": row_json(view, row) })
            } else {
                json!({ "key": key_json(view, row), "row": Value::Null })
            }
        })
        .collect()
}

pub fn snapshot_message(
    view: &LiveView,
    time: u64,
    rows: &[(Row, i64)],
    envelope: Envelope,
) -> String {
    json!({ "type": "snapshot", "ts": time, "rows": entries(view, rows, envelope) }).to_string()
}

pub fn updates_message(
    view: &LiveView,
    time: u64,
    updates: &[(Row, i64)],
    envelope: Envelope,
) -> String {
    json!({ "type": "updates", "ts": time, "updates": entries(view, updates, envelope) })
        .to_string()
}

/// Several timestamps' changes merged into one set at the last of them (for a client that has
/// fallen behind: what it receives still adds up to the view at that timestamp).
pub fn coalesce<'a>(updates: impl Iterator<Item = &'a (Row, i64)>) -> Vec<(Row, i64)> {
    consolidate_diffs(updates.cloned().collect())
}

pub fn progress_message(time: u64) -> String {
    json!({ "type": "progress", "ts": time }).to_string()
}

pub fn complete_message(time: u64) -> String {
    json!({ "type": "complete", "ts": time }).to_string()
}

pub fn error_message(reason: &str) -> String {
    json!({ "type": "error", "reason": reason }).to_string()
}
