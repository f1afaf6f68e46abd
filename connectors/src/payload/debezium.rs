//! Debezium's change events (`format = 'debezium-json'`): how a database table's changes,
//! captured from its log and written to a Kafka topic or a file, become a table's upserts and
//! deletions.
//!
//! An event is `{"before": …, "after": …, "op": …}`, or the same inside `{"schema": …,
//! "payload": …}` when the converter writes schemas. Creates, snapshot reads and updates upsert
//! `after`; a delete removes `before`'s key. With PostgreSQL's default replica identity `before`
//! holds only the key, so a deletion's other columns may be missing and are not required.
//! Truncation (`"t"`) is refused rather than guessed at: it would empty the table, and a table
//! read with several others from one database should not be emptied by a message it cannot
//! place.

use serde::Deserialize;
use serde_json::value::RawValue;
use vibelux_operators::row::Row;

use super::RowLayout;

/// What one change event does to a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert the row, or replace the row with its key.
    Upsert(Row),
    /// Remove the row with this row's key (its other columns may be null).
    Delete(Row),
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(default)]
    op: Option<String>,
}

fn event(text: &str) -> Result<Event<'_>, String> {
    serde_json::from_str(text).map_err(|error| format!("not a Debezium change event: {error}"))
}

impl RowLayout {
    /// Decodes one Debezium change event into what it does to a table.
    pub fn decode_debezium(&self, text: &str) -> Result<Change, String> {
        let mut change = event(text)?;
        if change.op.is_none()
            && let Some(payload) = change.payload
        {
            change = event(payload.get())?;
        }
        let op = change
            .op
            .ok_or("the change event has no `op` field (expected c, r, u or d)")?;
        let row = |value: Option<&RawValue>, field: &str| {
            let value = value.ok_or_else(|| format!("the `{op}` event has no `{field}` row"))?;
            self.decode_json_fields(value.get())
                .map_err(|problem| format!("`{field}`: {problem}"))
        };
        match op.as_str() {
            "c" | "r" | "u" => row(change.after, "after").map(Change::Upsert),
            "d" => row(change.before, "before").map(Change::Delete),
            "t" => Err(
                "a truncate event: a table does not read truncation; delete its rows, \
                        or replace the table"
                    .to_string(),
            ),
            other => Err(format!(
                "unknown `op` {other:?}: expected c (create), r (read), u (update) or d (delete)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use vibelux_operators::row::Datum;

    use super::*;

    fn layout() -> RowLayout {
        RowLayout::new(
            Arc::new(Schema::new(vec![
                Field::new("zone", DataType::Utf8, false),
                Field::new("target_c", DataType::Float64, true),
            ])),
            None,
        )
    }

    fn row(zone: &str, target: Option<f64>) -> Row {
        vec![
            Datum::Utf8(zone.into()),
            target.map_or(Datum::Null, Datum::Float64),
        ]
    }

    #[test]
    fn creates_reads_and_updates_upsert_the_row_after() {
        let layout = layout();
        for op in ["c", "r", "u"] {
            let text = format!(
                r#"{{"before":null,"after":{{"zone":"z1","target_c":21.5}},"op":"{op}","ts_ms":1}}"#
            );
            assert_eq!(
                layout.decode_debezium(&text),
                Ok(Change::Upsert(row("z1", Some(21.5))))
            );
        }
    }

    #[test]
    fn a_delete_names_the_row_before_even_with_its_key_alone() {
        let text = r#"{"before":{"zone":"z1"},"after":null,"op":"d"}"#;
        assert_eq!(
            layout().decode_debezium(text),
            Ok(Change::Delete(row("z1", None)))
        );
    }

    #[test]
    fn events_written_with_their_schema_are_read_from_the_payload() {
        let text = r#"{"schema":{"type":"struct"},"payload":{"before":null,
            "after":{"zone":"z2","target_c":19},"op":"c"}}"#;
        assert_eq!(
            layout().decode_debezium(text),
            Ok(Change::Upsert(row("z2", Some(19.0))))
        );
    }

    #[test]
    fn events_that_cannot_be_applied_say_why() {
        let layout = layout();
        let problem = |text: &str| layout.decode_debezium(text).unwrap_err();
        assert!(problem(r#"{"after":{"zone":"z1"}}"#).contains("no `op` field"));
        assert!(problem(r#"{"op":"c","after":null}"#).contains("no `after` row"));
        assert!(problem(r#"{"op":"d"}"#).contains("no `before` row"));
        assert!(problem(r#"{"op":"t"}"#).contains("truncate"));
        assert!(problem(r#"{"op":"x","after":{}}"#).contains("unknown `op` \"x\""));
        assert!(
            problem(r#"{"op":"u","after":{"zone":"z1","target_c":"warm"}}"#)
                .starts_with("`after`: ")
        );
        assert!(problem("[1]").starts_with("not a Debezium change event"));
    }
}
