//! The sink operator: everything a sink receives goes to worker 0, which writes it in order of
//! dataflow time and flushes when the frontier moves on.
//!
//! Funnelling to one worker keeps one file per sink and costs little: sinks see final window rows
//! or changes, far fewer than the readings that made them. Write failures are logged and counted;
//! the dataflow keeps running (a full disk must not lose the windows still being computed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use vibelux_operators::row::{Row, Update};

use crate::file_sink::RowWriter;

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub rows_written: AtomicU64,
    pub write_errors: AtomicU64,
}

/// Writes a stream into a sink. `writer` is `Some` on worker 0 only.
pub trait WriteRowsExt {
    fn write_rows(self, writer: Option<RowWriter>, metrics: Arc<SinkMetrics>);
}

/// Writes a changelog into a sink, one line per change. `writer` is `Some` on worker 0 only.
pub trait WriteUpdatesExt {
    fn write_updates(self, writer: Option<RowWriter>, metrics: Arc<SinkMetrics>);
}

fn record(
    writer: &mut RowWriter,
    metrics: &SinkMetrics,
    result: Result<(), crate::file_sink::SinkError>,
) {
    match result {
        Ok(()) => {
            metrics.rows_written.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            if metrics.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(%error, path = %writer.path().display(), "sink write failed");
            }
        }
    }
}

fn flush(writer: &mut RowWriter, metrics: &SinkMetrics) {
    if let Err(error) = writer.flush() {
        metrics.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, "sink flush failed");
    }
}

impl WriteRowsExt for Stream<'_, u64, Vec<Row>> {
    fn write_rows(self, mut writer: Option<RowWriter>, metrics: Arc<SinkMetrics>) {
        self.sink(
            Exchange::new(|_: &Row| 0),
            "WriteRows",
            move |(input, _frontier)| {
                let mut wrote = false;
                input.for_each(|_time, data| {
                    if let Some(writer) = writer.as_mut() {
                        for row in data.iter() {
                            let result = writer.write(row, true);
                            record(writer, &metrics, result);
                        }
                        wrote = true;
                    }
                });
                if wrote && let Some(writer) = writer.as_mut() {
                    flush(writer, &metrics);
                }
            },
        );
    }
}

impl WriteUpdatesExt for Stream<'_, u64, Vec<Update>> {
    fn write_updates(self, mut writer: Option<RowWriter>, metrics: Arc<SinkMetrics>) {
        self.sink(
            Exchange::new(|_: &Update| 0),
            "WriteChangelog",
            move |(input, _frontier)| {
                let mut wrote = false;
                input.for_each(|_time, data| {
                    if let Some(writer) = writer.as_mut() {
                        // Deletes first within a batch, so a replayed changelog never holds both the
                        // old and the new version of a row.
                        data.sort_by_key(|(_, time, diff)| (*time, *diff));
                        for (row, _time, diff) in data.iter() {
                            for _ in 0..diff.unsigned_abs() {
                                let result = writer.write(row, *diff > 0);
                                record(writer, &metrics, result);
                            }
                        }
                        wrote = true;
                    }
                });
                if wrote && let Some(writer) = writer.as_mut() {
                    flush(writer, &metrics);
                }
            },
        );
    }
}
