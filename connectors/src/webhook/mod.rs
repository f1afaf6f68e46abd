//! The `webhook` sink: each row POSTed as a JSON object to a URL, retried with backoff, and kept
//! in a dead-letter file when every attempt fails.
//!
//! Delivery runs on its own thread behind a bounded queue, so a slow or absent receiver never
//! holds up the dataflow. When the queue is full (a receiver away for long), further rows go
//! straight to the dead-letter file: nothing is lost and memory stays bounded. Rows are
//! delivered in order, one at a time, so a receiver sees transitions in the order they happened. A 2xx answer is a delivery. Anything else (a refused connection, a
//! timeout, a 500) is retried up to `retries` times with exponential backoff; then the row goes
//! to `dead_letter` (JSON lines with the payload, the last error and the attempts) and is
//! counted. Every row's outcome (`delivered` or `dead_letter`, with the attempts and the last
//! error) is also a line of the audit log, so what an alarm's action did is on record.
//! `https://` URLs are verified against the public web roots, or against `tls_ca` (a PEM file)
//! for a receiver with a private CA.

pub mod connector;
pub mod options;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_operators::row::Row;

use crate::json_row::encode_json_row;
use vibelux_interfaces::sink::{SinkError, SinkWriter, row_id};

/// Rows waiting for delivery before the sink waits for the receiver.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct WebhookSinkConfig {
    pub url: String,
    /// Attempts after the first.
    pub retries: u32,
    /// The first wait between attempts; each later one doubles, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Where undeliverable rows go (JSON lines); by default `<sink name>.dead.jsonl`.
    pub dead_letter: PathBuf,
    /// Every row's outcome (JSON lines); by default `<sink name>.audit.jsonl`.
    pub audit: PathBuf,
    pub headers: Vec<(String, String)>,
    /// A PEM file of the CA certificates that sign the receiver's certificate.
    pub tls_ca: Option<PathBuf>,
}

/// What happened to the rows handed to the sink.
#[derive(Debug, Default)]
pub struct WebhookOutcomes {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Rows the delivery thread is done with: delivered or dead-lettered.
    settled: AtomicU64,
}

/// A row waiting for delivery: its JSON, and its id in a checkpointed run.
struct Delivery {
    payload: String,
    id: Option<String>,
}

pub struct WebhookSender {
    schema: SchemaRef,
    changelog: bool,
    queue: Option<SyncSender<Delivery>>,
    /// In a checkpointed run each request carries the row's id (`Idempotency-Key`), since a
    /// restart delivers again what followed the last checkpoint.
    ids: bool,
    /// Rows handed to the delivery thread.
    handed: u64,
    config: WebhookSinkConfig,
    thread: Option<JoinHandle<()>>,
    pub outcomes: Arc<WebhookOutcomes>,
    describe: String,
}

impl WebhookSender {
    pub fn open(
        config: WebhookSinkConfig,
        schema: SchemaRef,
        changelog: bool,
        ids: bool,
    ) -> Result<Self, SinkError> {
        let describe = format!("{} (webhook)", config.url);
        let agent = agent(&config).map_err(|reason| SinkError::Broker {
            target: describe.clone(),
            reason,
        })?;
        let (queue, pending) = sync_channel(QUEUE);
        let outcomes = Arc::new(WebhookOutcomes::default());
        let thread_outcomes = outcomes.clone();
        let thread = std::thread::Builder::new()
            .name("vibelux-webhook".into())
            .spawn({
                let config = config.clone();
                move || deliver_all(&config, &agent, pending, &thread_outcomes)
            })
            .map_err(|error| SinkError::Io {
                path: describe.clone(),
                source: error,
            })?;
        Ok(WebhookSender {
            schema,
            changelog,
            queue: Some(queue),
            ids,
            handed: 0,
            config,
            thread: Some(thread),
            outcomes,
            describe,
        })
    }
}

impl SinkWriter for WebhookSender {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        let mut payload = String::new();
        encode_json_row(
            &self.schema,
            row,
            self.changelog.then_some(insert),
            &mut payload,
        );
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        let id = self.ids.then(|| row_id(&self.config.url, row, insert));
        match queue.try_send(Delivery { payload, id }) {
            Ok(()) => {
                self.handed += 1;
                Ok(())
            }
            Err(
                TrySendError::Full(Delivery { payload, .. })
                | TrySendError::Disconnected(Delivery { payload, .. }),
            ) => {
                self.outcomes.dead_lettered.fetch_add(1, Ordering::Relaxed);
                dead_letter(&self.config, &payload, "the delivery queue is full", 0).map_err(
                    |source| SinkError::Io {
                        path: self.config.dead_letter.display().to_string(),
                        source,
                    },
                )
            }
        }
    }

    fn unacknowledged(&self) -> u64 {
        self.handed
            .saturating_sub(self.outcomes.settled.load(Ordering::Acquire))
    }

    /// Every row before a cut is delivered or dead-lettered (the operator waits for that):
    /// nothing to record.
    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        Ok(Vec::new())
    }

    /// Waits until every queued row is delivered or dead-lettered.
    fn finish(&mut self) -> Result<(), SinkError> {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Ok(())
    }
}

impl Drop for WebhookSender {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The HTTP client: the per-attempt timeout, and the CA to trust when one is given.
fn agent(config: &WebhookSinkConfig) -> Result<ureq::Agent, String> {
    let mut builder = ureq::Agent::config_builder().timeout_global(Some(config.timeout));
    if let Some(path) = &config.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|error| format!("reading tls_ca {}: {error}", path.display()))?;
        let certificates = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(Ok(certificate)),
                Ok(_) => None,
                Err(error) => Some(Err(error)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("tls_ca {}: {error}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("tls_ca {}: no certificate in it", path.display()));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certificates)))
            .build();
        builder = builder.tls_config(tls);
    }
    Ok(builder.build().into())
}

fn deliver_all(
    config: &WebhookSinkConfig,
    agent: &ureq::Agent,
    pending: Receiver<Delivery>,
    outcomes: &WebhookOutcomes,
) {
    for Delivery { payload, id } in pending {
        let mut wait = config.backoff;
        let mut attempt = 0;
        let error = loop {
            attempt += 1;
            let mut request = agent
                .post(&config.url)
                .header("content-type", "application/json");
            for (name, value) in &config.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(id) = &id {
                request = request.header("idempotency-key", id.as_str());
            }
            match request.send(payload.as_str()) {
                Ok(_) => {
                    outcomes.delivered.fetch_add(1, Ordering::Relaxed);
                    break None;
                }
                Err(error) if attempt <= config.retries => {
                    outcomes.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, url = %config.url, attempt, "webhook attempt failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(config.backoff_max);
                }
                Err(error) => break Some(error.to_string()),
            }
        };
        let outcome = if error.is_some() {
            "dead_letter"
        } else {
            "delivered"
        };
        if let Err(io) = record(
            &config.audit,
            config,
            &payload,
            outcome,
            attempt,
            error.as_deref(),
        ) {
            tracing::error!(error = %io, "cannot write the webhook audit log");
        }
        if let Some(error) = error {
            outcomes.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, url = %config.url, attempts = attempt, "webhook undeliverable; kept in {}", config.dead_letter.display());
            if let Err(io) = dead_letter(config, &payload, &error, attempt) {
                tracing::error!(error = %io, "cannot write the webhook dead letter");
            }
        }
        outcomes.settled.fetch_add(1, Ordering::Release);
    }
}

fn dead_letter(
    config: &WebhookSinkConfig,
    payload: &str,
    error: &str,
    attempts: u32,
) -> std::io::Result<()> {
    let record = serde_json::json!({
        "url": config.url,
        "error": error,
        "attempts": attempts,
        "payload": serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default(),
    });
    append(&config.dead_letter, &record)
}

/// A line of the audit log: when, where, how it ended, after how many attempts, and the row.
fn record(
    path: &Path,
    config: &WebhookSinkConfig,
    payload: &str,
    outcome: &str,
    attempts: u32,
    error: Option<&str>,
) -> std::io::Result<()> {
    let record = serde_json::json!({
        "at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "url": config.url,
        "outcome": outcome,
        "attempts": attempts,
        "error": error,
        "row": serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default(),
    });
    append(path, &record)
}

fn append(path: &Path, record: &serde_json::Value) -> std::io::Result<()> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{record}")
}
