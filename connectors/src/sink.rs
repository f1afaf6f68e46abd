//! The sink operator: everything a sink receives goes to worker 0, which writes it in order of
//! dataflow time, flushes as the frontier moves on and finishes (a last commit) when it closes.
//!
//! Funnelling to one worker keeps one file (or one set of Parquet epochs) per sink and costs
//! little: sinks see final window rows or changes, far fewer than the readings that made them.
//! Write failures are logged and counted; the dataflow keeps running (a full disk must not lose
//! the windows still being computed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::SchemaRef;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use vibelux_operators::row::{Row, Update};

use crate::file_sink::{RowWriter, SinkError, SinkTarget};
use crate::kafka::sink::KafkaProducer;
use crate::modbus::sink::ModbusWriter;
use crate::mqtt::sink::MqttPublisher;
use crate::parquet_sink::ParquetWriter;
use crate::webhook::WebhookSender;

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub rows_written: AtomicU64,
    pub write_errors: AtomicU64,
}

/// An open sink of any kind.
pub enum SinkWriter {
    Rows(RowWriter),
    Parquet(ParquetWriter),
    Mqtt(MqttPublisher),
    Kafka(KafkaProducer),
    Modbus(ModbusWriter),
    Webhook(WebhookSender),
}

impl SinkWriter {
    /// Opens (creates) the target; `changelog` marks each row as an insert or a delete.
    pub fn open(
        target: &SinkTarget,
        schema: SchemaRef,
        changelog: bool,
    ) -> Result<Self, SinkError> {
        Ok(match target {
            SinkTarget::Stdout => SinkWriter::Rows(RowWriter::stdout(schema, changelog)),
            SinkTarget::File { path, format } => {
                SinkWriter::Rows(RowWriter::file(path, *format, schema, changelog)?)
            }
            SinkTarget::Parquet(config) => {
                SinkWriter::Parquet(ParquetWriter::open(config.clone(), schema)?)
            }
            SinkTarget::Mqtt(config) => {
                SinkWriter::Mqtt(MqttPublisher::open(config.clone(), schema, changelog)?)
            }
            SinkTarget::Kafka(config) => {
                SinkWriter::Kafka(KafkaProducer::open(config.clone(), schema, changelog)?)
            }
            SinkTarget::Modbus(config) => {
                SinkWriter::Modbus(ModbusWriter::open(config.clone(), schema)?)
            }
            SinkTarget::Webhook(config) => {
                SinkWriter::Webhook(WebhookSender::open(config.clone(), schema, changelog)?)
            }
        })
    }

    /// Where rows go, for messages.
    fn describe(&self) -> String {
        match self {
            SinkWriter::Rows(writer) => writer.path().display().to_string(),
            SinkWriter::Parquet(writer) => writer.path().display().to_string(),
            SinkWriter::Mqtt(writer) => writer.describe().to_string(),
            SinkWriter::Kafka(writer) => writer.describe().to_string(),
            SinkWriter::Modbus(writer) => writer.describe(),
            SinkWriter::Webhook(writer) => writer.describe().to_string(),
        }
    }

    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        match self {
            SinkWriter::Rows(writer) => writer.write(row, insert),
            // The planner only sends append-only rows to Parquet.
            SinkWriter::Parquet(writer) => writer.write(row),
            SinkWriter::Mqtt(writer) => writer.write(row, insert),
            SinkWriter::Kafka(writer) => writer.write(row, insert),
            SinkWriter::Modbus(writer) => writer.write(row, insert),
            SinkWriter::Webhook(writer) => writer.write(row, insert),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            SinkWriter::Rows(writer) => writer.flush(),
            SinkWriter::Parquet(writer) => writer.flush(),
            SinkWriter::Mqtt(_)
            | SinkWriter::Kafka(_)
            | SinkWriter::Modbus(_)
            | SinkWriter::Webhook(_) => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            SinkWriter::Rows(writer) => writer.flush(),
            SinkWriter::Parquet(writer) => writer.commit(),
            SinkWriter::Mqtt(writer) => writer.finish(),
            SinkWriter::Kafka(writer) => writer.finish(),
            SinkWriter::Modbus(writer) => writer.finish(),
            SinkWriter::Webhook(writer) => writer.finish(),
        }
    }
}

/// Writes a stream into a sink. `writer` is `Some` on worker 0 only.
pub trait WriteRowsExt {
    fn write_rows(self, writer: Option<SinkWriter>, metrics: Arc<SinkMetrics>);
}

/// Writes a changelog into a sink, one line per change. `writer` is `Some` on worker 0 only.
pub trait WriteUpdatesExt {
    fn write_updates(self, writer: Option<SinkWriter>, metrics: Arc<SinkMetrics>);
}

fn record(writer: &SinkWriter, metrics: &SinkMetrics, result: Result<(), SinkError>) {
    match result {
        Ok(()) => {
            metrics.rows_written.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            if metrics.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(%error, target = %writer.describe(), "sink write failed");
            }
        }
    }
}

/// After a batch: flush (or commit, when a rollover is due); when the input has closed, finish.
fn settle(writer: &mut Option<SinkWriter>, wrote: bool, closed: bool, metrics: &SinkMetrics) {
    let Some(open) = writer.as_mut() else { return };
    let result = if closed {
        let result = open.finish();
        *writer = None;
        result
    } else if wrote {
        open.flush()
    } else {
        Ok(())
    };
    if let Err(error) = result {
        metrics.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, "sink flush failed");
    }
}

impl WriteRowsExt for Stream<'_, u64, Vec<Row>> {
    fn write_rows(self, mut writer: Option<SinkWriter>, metrics: Arc<SinkMetrics>) {
        self.sink(
            Exchange::new(|_: &Row| 0),
            "WriteRows",
            move |(input, frontier)| {
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
                settle(&mut writer, wrote, frontier.frontier().is_empty(), &metrics);
            },
        );
    }
}

impl WriteUpdatesExt for Stream<'_, u64, Vec<Update>> {
    fn write_updates(self, mut writer: Option<SinkWriter>, metrics: Arc<SinkMetrics>) {
        self.sink(
            Exchange::new(|_: &Update| 0),
            "WriteChangelog",
            move |(input, frontier)| {
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
                settle(&mut writer, wrote, frontier.frontier().is_empty(), &metrics);
            },
        );
    }
}
