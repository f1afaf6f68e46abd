//! Rows as JSON objects: the lines of file sinks and the payloads of MQTT, Kafka and webhooks.

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::row::{Datum, Row, format_date, format_duration, format_timestamp};

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
        line.push_str(&serde_json::to_string(field.name()).expect("strings encode"));
        line.push(':');
        match datum {
            Datum::Null => line.push_str("null"),
            Datum::Boolean(v) => line.push_str(if *v { "true" } else { "false" }),
            Datum::Int64(v) => line.push_str(&v.to_string()),
            Datum::Float64(v) if v.is_finite() => line.push_str(&v.to_string()),
            Datum::Float64(_) => line.push_str("null"),
            Datum::Utf8(v) => line.push_str(&serde_json::to_string(&**v).expect("strings encode")),
            Datum::Timestamp(v) => {
                line.push('"');
                line.push_str(&format_timestamp(*v));
                line.push('"');
            }
            Datum::Duration(v) => {
                line.push('"');
                line.push_str(&format_duration(*v));
                line.push('"');
            }
            Datum::Date(v) => {
                line.push('"');
                line.push_str(&format_date(*v));
                line.push('"');
            }
        }
    }
    line.push('}');
}
