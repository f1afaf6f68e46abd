//! The `kafka` sink: each row a JSON message, keyed by a template, from an idempotent producer.
//!
//! Idempotence (with `acks=all`) means a retried send cannot be written twice or out of order
//! within a partition. Delivery reports are counted; when the sink finishes it flushes and
//! reports any row the broker never acknowledged. With `audit = 'path'` every delivery report
//! is also a JSON line: `acknowledged` with the partition and offset, or `failed` with the
//! error, and the row (for alarm actions; off by default).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use rdkafka::ClientConfig;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use vibelux_operators::row::Row;

use crate::json_row::encode_json_row;
use crate::template::RowTemplate;
use vibelux_interfaces::sink::{SinkError, SinkWriter, row_id};

const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic: String,
    /// The message key; `None` leaves it empty (the producer spreads rows over partitions).
    pub key: Option<RowTemplate>,
    pub properties: Vec<(String, String)>,
    /// Where each delivery report is recorded, if anywhere.
    pub audit: Option<PathBuf>,
}

/// Counts delivery reports, and records them when audited.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    audit: Option<std::sync::Mutex<BufWriter<File>>>,
}

impl Deliveries {
    /// The first delivery failure's description (empty when none failed).
    fn first_error(&self) -> String {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    fn record(&self, message: &BorrowedMessage<'_>, outcome: &str, error: Option<String>) {
        let Some(audit) = &self.audit else { return };
        let row = message
            .payload()
            .and_then(|payload| serde_json::from_slice::<serde_json::Value>(payload).ok())
            .unwrap_or_default();
        let line = serde_json::json!({
            "at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": (outcome == "acknowledged").then(|| message.offset()),
            "outcome": outcome,
            "error": error,
            "row": row,
        });
        let mut file = audit.lock().unwrap_or_else(|p| p.into_inner());
        if writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .is_err()
        {
            tracing::error!("cannot write the kafka sink's audit log");
        }
    }
}

struct Reports(Arc<Deliveries>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(message) => self.0.record(message, "acknowledged", None),
            Err((error, message)) => self.0.record(message, "failed", Some(error.to_string())),
        }
        if let Err((error, message)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!(
                    "{error} (topic {}, partition {})",
                    message.topic(),
                    message.partition()
                ));
            }
        }
    }
}

pub struct KafkaProducer {
    schema: SchemaRef,
    changelog: bool,
    config: KafkaSinkConfig,
    producer: ThreadedProducer<Reports>,
    deliveries: Arc<Deliveries>,
    describe: String,
    finished: bool,
    /// In a checkpointed run each message carries its row's id (header `vibelux-row-id`),
    /// since a restart produces again what followed the last checkpoint.
    ids: bool,
}

/// The header carrying a row's id in a checkpointed run.
pub const ROW_ID_HEADER: &str = "vibelux-row-id";

impl KafkaProducer {
    pub fn open(
        config: KafkaSinkConfig,
        schema: SchemaRef,
        changelog: bool,
        ids: bool,
    ) -> Result<Self, SinkError> {
        let describe = format!("kafka {} topic {}", config.brokers, config.topic);
        let audit = match &config.audit {
            Some(path) => {
                let opened = path
                    .parent()
                    .filter(|parent| !parent.as_os_str().is_empty())
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
                let file = opened.map_err(|source| SinkError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(std::sync::Mutex::new(BufWriter::new(file)))
            }
            None => None,
        };
        let deliveries = Arc::new(Deliveries {
            audit,
            ..Deliveries::default()
        });
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer = client
            .create_with_context(Reports(deliveries.clone()))
            .map_err(|error| SinkError::Broker {
                target: describe.clone(),
                reason: error.to_string(),
            })?;
        Ok(KafkaProducer {
            schema,
            changelog,
            config,
            producer,
            deliveries,
            describe,
            finished: false,
            ids,
        })
    }
}

impl SinkWriter for KafkaProducer {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Waits on a broker: the producer sleeps while its local queue is full.
    fn waits(&self) -> bool {
        true
    }

    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        let mut payload = String::with_capacity(128);
        encode_json_row(
            &self.schema,
            row,
            self.changelog.then_some(insert),
            &mut payload,
        );
        let key = self.config.key.as_ref().map(|key| key.render(row));
        let mut record = BaseRecord::to(&self.config.topic).payload(&payload);
        if let Some(key) = &key {
            record = record.key(key);
        }
        if self.ids {
            let id = row_id(&self.config.topic, row, insert);
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: ROW_ID_HEADER,
                value: Some(id.as_str()),
            }));
        }
        // A full local queue waits for deliveries (the broker is slow or away) rather than
        // dropping the row.
        let mut pending = record;
        loop {
            match self.producer.send(pending) {
                Ok(()) => return Ok(()),
                Err((error, back))
                    if error.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    pending = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    return Err(SinkError::Broker {
                        target: self.describe.clone(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    fn unacknowledged(&self) -> u64 {
        self.producer.in_flight_count().max(0) as u64
    }

    /// Every row before a cut is acknowledged (the operator waits for that), unless the
    /// producer gave some up: then the checkpoint must not pass them by.
    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.deliveries.first_error();
            return Err(SinkError::Broker {
                target: self.describe.clone(),
                reason: format!("{failed} rows failed; first error: {first}"),
            });
        }
        Ok(Vec::new())
    }

    /// Waits for every row to be acknowledged; reports the ones that were not.
    fn finish(&mut self) -> Result<(), SinkError> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        let flushed = self.producer.flush(FLUSH_TIMEOUT);
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        let in_flight = self.producer.in_flight_count();
        if failed > 0 || in_flight > 0 || flushed.is_err() {
            let first = self.deliveries.first_error();
            return Err(SinkError::Broker {
                target: self.describe.clone(),
                reason: format!(
                    "{failed} rows failed and {in_flight} were still unacknowledged after {FLUSH_TIMEOUT:?}; first error: {first}"
                ),
            });
        }
        Ok(())
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::error!(%error, "kafka sink closed with rows undelivered");
        }
    }
}
