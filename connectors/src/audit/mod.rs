//! The engine's audit trail as a source: who changed the pipeline, commanded an alarm or was
//! turned away, as rows a pipeline can sink, window and alarm on like any reading.
//!
//! The engine appends each entry to a file of JSON lines, whole and before it answers, so the
//! trail survives a `kill -9` as far as any caller was told; this connector follows that file
//! (the `file` source's tailing, positions and checkpoints), so the relation loses nothing the
//! trail holds and, with `--state`, repeats nothing after a restart. The connector knows the
//! columns, so `CREATE SOURCE audit WITH (connector = 'audit')` is a whole declaration.

pub mod connector;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The trail's columns: `ts` (when, UTC) then text; `role`, `detail` and `peer` may be null.
pub fn schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        text("actor", false),
        text("role", true),
        text("action", false),
        text("target", false),
        text("outcome", false),
        text("detail", true),
        text("peer", true),
    ]))
}
