//! The messages of the live-view protocol (docs/live-views.md), as JSON text.
//!
//! Rows are objects keyed by column name; `ts` is dataflow time, milliseconds since the epoch:
//! a message at `ts` holds exactly the changes at that timestamp, and `progress` at `ts` promises
//! that nothing earlier than `ts` will follow.

use std::fmt::Write as _;

use serde_json::{Value, json};
use vibelux_connectors::json_row::{push_json_string, push_json_value};
use vibelux_operators::row::Row;

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

/// Appends the given columns of a row as a JSON object, in column order.
fn write_columns(
    out: &mut String,
    view: &LiveView,
    row: &Row,
    columns: impl Iterator<Item = usize>,
) {
    out.push('{');
    for (n, column) in columns.enumerate() {
        if n > 0 {
            out.push(',');
        }
        push_json_string(view.schema.field(column).name(), out);
        out.push(':');
        push_json_value(&row[column], out);
    }
    out.push('}');
}

fn write_row(out: &mut String, view: &LiveView, row: &Row) {
    write_columns(out, view, row, 0..row.len());
}

fn write_key(out: &mut String, view: &LiveView, row: &Row) {
    let key = view.key.as_deref().unwrap_or_default();
    write_columns(out, view, row, key.iter().copied());
}

/// `{"row": {…}, "diff": ±n}` per change; retractions first, so a client applying them in
/// order never holds both versions of a row.
fn write_diffs(out: &mut String, view: &LiveView, updates: &[(Row, i64)]) {
    let retractions = updates.iter().filter(|(_, diff)| *diff < 0);
    let insertions = updates.iter().filter(|(_, diff)| *diff > 0);
    for (n, (row, diff)) in retractions.chain(insertions).enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"row\":");
        write_row(out, view, row);
        let _ = write!(out, ",\"diff\":{diff}}}");
    }
}

/// Upserts: per changed key, the row that remains after the changes, or `null` when none does.
fn write_upserts(out: &mut String, view: &LiveView, updates: &[(Row, i64)]) {
    let key = view.key.as_deref().unwrap_or_default();
    let key_of = |row: &Row| -> Row { key.iter().map(|&c| row[c].clone()).collect() };
    let mut by_key: std::collections::BTreeMap<Row, (&Row, bool)> = Default::default();
    for (row, diff) in updates {
        let entry = by_key.entry(key_of(row)).or_insert((row, false));
        if *diff > 0 {
            *entry = (row, true);
        }
    }
    for (n, (row, present)) in by_key.into_values().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        write_key(out, view, row);
        out.push_str(",\"row\":");
        if present {
            write_row(out, view, row);
        } else {
            out.push_str("null");
        }
        out.push('}');
    }
}

/// `{"type": kind, "ts": time, list: [entries]}`, written directly: these messages are most of
/// what the server sends.
fn changes_message(
    view: &LiveView,
    kind: &str,
    list: &str,
    time: u64,
    updates: &[(Row, i64)],
    envelope: Envelope,
) -> String {
    let mut out = String::with_capacity(48 + updates.len() * 96);
    let _ = write!(out, "{{\"type\":\"{kind}\",\"ts\":{time},\"{list}\":[");
    match envelope {
        Envelope::Diff => write_diffs(&mut out, view, updates),
        Envelope::Upsert => write_upserts(&mut out, view, updates),
    }
    out.push_str("]}");
    out
}

/// The body of `GET /v1/views/{name}`: the contents as plain rows (each repeated as many
/// times as it occurs), with the schema.
pub fn contents_body(view: &LiveView, time: u64, rows: &[(Row, i64)]) -> String {
    let mut out = String::with_capacity(128 + rows.len() * 96);
    let _ = write!(
        out,
        "{{\"view\":{},\"ts\":{time},\"columns\":{},\"key\":{},\"rows\":[",
        json!(view.name),
        columns_json(view),
        key_names(view)
    );
    let mut first = true;
    for (row, count) in rows {
        for _ in 0..*count {
            if !first {
                out.push(',');
            }
            first = false;
            write_row(&mut out, view, row);
        }
    }
    out.push_str("]}");
    out
}

pub fn snapshot_message(
    view: &LiveView,
    time: u64,
    rows: &[(Row, i64)],
    envelope: Envelope,
) -> String {
    changes_message(view, "snapshot", "rows", time, rows, envelope)
}

pub fn updates_message(
    view: &LiveView,
    time: u64,
    updates: &[(Row, i64)],
    envelope: Envelope,
) -> String {
    changes_message(view, "updates", "updates", time, updates, envelope)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::view::Retention;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    use vibelux_operators::row::Datum;

    fn view() -> LiveView {
        let schema = Arc::new(Schema::new(vec![
            Field::new("zone", DataType::Utf8, true),
            Field::new("temp", DataType::Float64, true),
        ]));
        LiveView::new("v".into(), schema, Some(vec![0]), Retention::default())
    }

    #[test]
    fn messages_are_json_with_retractions_first_and_odd_values_escaped() {
        let view = view();
        let old = vec![Datum::Utf8("z\"1\n".into()), Datum::Float64(f64::NAN)];
        let new = vec![Datum::Utf8("z\"1\n".into()), Datum::Float64(21.5)];
        let text = updates_message(
            &view,
            7,
            &[(new.clone(), 1), (old.clone(), -1)],
            Envelope::Diff,
        );
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            message,
            json!({"type": "updates", "ts": 7, "updates": [
                {"row": {"zone": "z\"1\n", "temp": null}, "diff": -1},
                {"row": {"zone": "z\"1\n", "temp": 21.5}, "diff": 1},
            ]})
        );
        let gone = updates_message(&view, 8, &[(new, -1)], Envelope::Upsert);
        let message: Value = serde_json::from_str(&gone).unwrap();
        assert_eq!(
            message["updates"],
            json!([{"key": {"zone": "z\"1\n"}, "row": null}])
        );
    }
}
