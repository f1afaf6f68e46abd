//! Rows as JSON objects: the lines of file sinks and the payloads of MQTT, Kafka and webhooks.

use std::fmt::Write as _;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::calendar::push_timestamp;
use vibelux_interfaces::metadata::is_json;
use vibelux_interfaces::row::{Datum, Row, format_date, format_duration};

/// Appends `row` as a JSON object to `line`; `op` (insert or not) adds an `_op` field first.
pub fn encode_json_row(schema: &SchemaRef, row: &Row, op: Option<bool>, line: &mut String) {
    line.push('{');
    if let Some(insert) = op {
        line.push_str(if insert {
            "\"_op\":\"insert\","
        } else {
            "\"_op\":\"delete\","
        });
    }
    for (index, (field, datum)) in schema.fields().iter().zip(row).enumerate() {
        if index > 0 {
            line.push(',');
        }
        push_json_string(field.name(), line);
        line.push(':');
        match datum {
            // A JSON column's document goes in as JSON, not as a string holding it (checked,
            // since an expression over one may keep its type and not be a document).
            Datum::Utf8(text) if is_json(field) && is_json_document(text) => line.push_str(text),
            datum => push_json_value(datum, line),
        }
    }
    line.push('}');
}

fn is_json_document(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Appends one value as JSON: times as ISO 8601 text, lengths of time as PostgreSQL writes
/// intervals, lists as arrays, non-finite floats as `null`. (Live views send values the same
/// way.)
pub fn push_json_value(datum: &Datum, line: &mut String) {
    match datum {
        Datum::Null => line.push_str("null"),
        Datum::Boolean(v) => line.push_str(if *v { "true" } else { "false" }),
        Datum::Int64(v) => line.push_str(itoa::Buffer::new().format(*v)),
        // Rust prints the shortest text that reads back as the same double: valid JSON.
        Datum::Float64(v) if v.is_finite() => {
            let _ = write!(line, "{v}");
        }
        Datum::Float64(_) => line.push_str("null"),
        Datum::Utf8(v) => push_json_string(v, line),
        // Digits and punctuation only: nothing to escape.
        Datum::Timestamp(v) => {
            line.push('"');
            push_timestamp(*v, line);
            line.push('"');
        }
        Datum::Duration(v) => push_json_string(&format_duration(*v), line),
        Datum::Date(v) => push_json_string(&format_date(*v), line),
        // The exact digits, as a JSON number: readers that take numbers as doubles round them,
        // readers that keep the text (Python's `Decimal`, DuckDB) do not.
        Datum::Decimal { .. } => {
            let _ = write!(line, "{datum}");
        }
        Datum::List(values) => {
            line.push('[');
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    line.push(',');
                }
                push_json_value(value, line);
            }
            line.push(']');
        }
    }
}

/// Appends `text` as a JSON string, escaped. Runs of characters that need no escape (nearly
/// all of them) are copied whole.
pub fn push_json_string(text: &str, line: &mut String) {
    line.push('"');
    let mut copied = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            byte if byte < 0x20 => "",
            _ => continue,
        };
        line.push_str(&text[copied..at]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{byte:04x}");
        } else {
            line.push_str(escape);
        }
        copied = at + 1;
    }
    line.push_str(&text[copied..]);
    line.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn every_kind_of_value_is_written_as_json() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("name \"x\"", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
            Field::new("held", DataType::Duration(TimeUnit::Nanosecond), true),
            Field::new("sensors", DataType::List(item), true),
            Field::new("ratio", DataType::Float64, true),
        ]));
        let row = vec![
            Datum::Utf8("a\tb".into()),
            Datum::Date(20_605),
            Datum::Duration(90_000_000_000),
            Datum::List(vec![Datum::Utf8("s1".into()), Datum::Null].into()),
            Datum::Float64(f64::NAN),
        ];
        let mut line = String::new();
        encode_json_row(&schema, &row, Some(false), &mut line);
        assert_eq!(
            line,
            r#"{"_op":"delete","name \"x\"":"a\tb","day":"2026-06-01","held":"00:01:30","sensors":["s1",null],"ratio":null}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["sensors"][0], "s1");
    }

    #[test]
    fn strings_are_escaped_wherever_the_character_falls() {
        for text in [
            "",
            "plain",
            "\"quoted\"",
            "tab\tend",
            "\u{1}\u{1f}é€\\",
            "ünïcode\n",
        ] {
            let mut line = String::new();
            push_json_string(text, &mut line);
            let parsed: String = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed, text, "{line}");
        }
        let mut line = String::new();
        push_json_string("a\u{1}b", &mut line);
        assert_eq!(line, r#""a\u0001b""#);
    }

    #[test]
    fn a_json_columns_documents_go_in_as_json() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use vibelux_interfaces::metadata::{EXTENSION_NAME, JSON_EXTENSION};
        let json = [(EXTENSION_NAME.to_string(), JSON_EXTENSION.to_string())].into();
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("meta", DataType::Utf8, true).with_metadata(json),
            Field::new("text", DataType::Utf8, true),
        ]));
        let encoded = |meta: &str| {
            let mut line = String::new();
            let row = vec![Datum::Utf8(meta.into()), Datum::Utf8("{}".into())];
            encode_json_row(&schema, &row, None, &mut line);
            line
        };
        assert_eq!(
            encoded(r#"{"fw": "1.2"}"#),
            r#"{"meta":{"fw": "1.2"},"text":"{}"}"#
        );
        // Not a document (an expression kept the column's type): a string, still valid JSON.
        assert_eq!(encoded("{fw"), r#"{"meta":"{fw","text":"{}"}"#);
    }
}
