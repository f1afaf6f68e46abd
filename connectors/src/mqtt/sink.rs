//! The `mqtt` sink: each row a JSON message on a topic built from the row.
//!
//! Rows are handed to the client as they come (the request queue is bounded, so a broker that
//! is away slows the sink rather than filling memory); when the sink finishes it waits until
//! the broker has acknowledged every QoS 1 message. The client keeps a persistent session, so
//! messages in flight when the connection drops are sent again after reconnecting.
//!
//! With `audit = 'path'` every message's outcome is a JSON line: `acknowledged` by the broker
//! (QoS 1), `sent` (QoS 0), or `unacknowledged` when the sink closed without the broker's
//! acknowledgement, with the topic and the row. Alarm actions want that record; a sink of
//! readings usually does not, so it is off by default.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use rumqttc::{Client, Connection, Event, Outgoing, Packet, QoS, RecvTimeoutError};
use vibelux_operators::row::Row;

use crate::json_row::encode_json_row;
use crate::mqtt::broker::{Backoff, BrokerConfig};
use crate::mqtt::topic::TopicTemplate;
use vibelux_interfaces::sink::{SinkError, SinkWriter, row_id};

/// How long a finishing sink waits for the broker to acknowledge what it published.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    pub broker: BrokerConfig,
    pub topic: TopicTemplate,
    pub qos: QoS,
    pub retain: bool,
    /// Where each message's outcome is recorded, if anywhere.
    pub audit: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Delivery {
    /// Messages handed to the client.
    published: AtomicU64,
    /// QoS 0 messages written to the connection; QoS 1 messages acknowledged by the broker.
    delivered: AtomicU64,
    stop: AtomicBool,
}

pub struct MqttPublisher {
    schema: SchemaRef,
    changelog: bool,
    config: MqttSinkConfig,
    client: Client,
    delivery: Arc<Delivery>,
    thread: Option<JoinHandle<()>>,
    describe: String,
    /// Messages handed to the client, oldest first, until the client sends them (audit only).
    handed: Option<Handed>,
    /// In a checkpointed run each message's JSON carries its row's id (`_id`), since a
    /// restart publishes again what followed the last checkpoint.
    ids: bool,
}

impl MqttPublisher {
    /// Starts the client (connecting in the background: a broker that is down at start is
    /// retried, and rows wait for it).
    pub fn open(
        config: MqttSinkConfig,
        schema: SchemaRef,
        changelog: bool,
        ids: bool,
    ) -> Result<Self, SinkError> {
        let describe = format!("{} (mqtt)", config.broker.address());
        let options = config
            .broker
            .client_options(false)
            .map_err(|reason| SinkError::Broker {
                target: describe.clone(),
                reason,
            })?;
        let (client, connection) = Client::new(options, 4096);
        let delivery = Arc::new(Delivery::default());
        let handed = config
            .audit
            .as_ref()
            .map(|_| Arc::new(Mutex::new(VecDeque::new())));
        let audit = match &config.audit {
            Some(path) => Some(
                Audit::open(
                    path,
                    handed.clone().expect("made with the audit"),
                    config.broker.address(),
                )
                .map_err(|source| SinkError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        let thread = {
            let delivery = delivery.clone();
            let qos = config.qos;
            let address = config.broker.address();
            std::thread::Builder::new()
                .name("mqtt-sink".to_string())
                .spawn(move || drive(connection, qos, &delivery, &address, audit))
                .map_err(|source| SinkError::Io {
                    path: describe.clone(),
                    source,
                })?
        };
        Ok(MqttPublisher {
            schema,
            changelog,
            config,
            client,
            delivery,
            thread: Some(thread),
            describe,
            handed,
            ids,
        })
    }
}

impl SinkWriter for MqttPublisher {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Waits on a broker: the client waits while its request queue is full.
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
        let topic = self.config.topic.render(row);
        if self.ids && payload.ends_with('}') {
            let id = row_id(&topic, row, insert);
            payload.pop();
            if !payload.ends_with('{') {
                payload.push(',');
            }
            payload.push_str(&format!("\"_id\":\"{id}\"}}"));
        }
        if let Some(handed) = &self.handed {
            handed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((topic.clone(), payload.clone()));
        }
        self.client
            .publish(topic, self.config.qos, self.config.retain, payload)
            .map_err(|error| SinkError::Broker {
                target: self.describe.clone(),
                reason: error.to_string(),
            })?;
        self.delivery.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn unacknowledged(&self) -> u64 {
        let published = self.delivery.published.load(Ordering::Acquire);
        published.saturating_sub(self.delivery.delivered.load(Ordering::Acquire))
    }

    /// Every message before a cut is acknowledged (the operator waits for that): nothing to
    /// record.
    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        Ok(Vec::new())
    }

    /// Waits until the broker has everything published so far, then disconnects.
    fn finish(&mut self) -> Result<(), SinkError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + FINISH_TIMEOUT;
        let published = self.delivery.published.load(Ordering::Relaxed);
        while self.delivery.delivered.load(Ordering::Relaxed) < published
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let delivered = self.delivery.delivered.load(Ordering::Relaxed);
        let _ = self.client.disconnect();
        self.delivery.stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        if delivered < published {
            return Err(SinkError::Broker {
                target: self.describe.clone(),
                reason: format!(
                    "{} of {published} messages were not acknowledged by the broker within {FINISH_TIMEOUT:?}",
                    published - delivered
                ),
            });
        }
        Ok(())
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::error!(%error, "mqtt sink closed with messages undelivered");
        }
    }
}

/// Messages (topic, payload) handed to the client, oldest first, until it sends them.
type Handed = Arc<Mutex<VecDeque<(String, String)>>>;

/// The record of each message's outcome, kept by the client's event loop.
struct Audit {
    file: BufWriter<File>,
    broker: String,
    handed: Handed,
    /// QoS 1 messages sent and not yet acknowledged, by packet id.
    sent: HashMap<u16, (String, String)>,
}

impl Audit {
    fn open(path: &Path, handed: Handed, broker: String) -> std::io::Result<Audit> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: BufWriter::new(file),
            broker,
            handed,
            sent: HashMap::new(),
        })
    }

    /// The client sent packet `pkid`: the oldest message handed over, unless it is a
    /// retransmission after a reconnect.
    fn sent(&mut self, pkid: u16, qos: QoS) {
        if qos == QoS::AtLeastOnce && self.sent.contains_key(&pkid) {
            return;
        }
        let Some(message) = self
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
        else {
            return;
        };
        if qos == QoS::AtLeastOnce {
            self.sent.insert(pkid, message);
        } else {
            self.record(&message, "sent");
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        if let Some(message) = self.sent.remove(&pkid) {
            self.record(&message, "acknowledged");
        }
    }

    /// At the end: whatever the broker never acknowledged.
    fn close(mut self) {
        let mut left: Vec<(u16, (String, String))> = self.sent.drain().collect();
        left.sort_by_key(|(pkid, _)| *pkid);
        let unsent: Vec<(String, String)> = self
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for message in left.into_iter().map(|(_, message)| message).chain(unsent) {
            self.record(&message, "unacknowledged");
        }
        let _ = self.file.flush();
    }

    fn record(&mut self, (topic, payload): &(String, String), outcome: &str) {
        let line = serde_json::json!({
            "at": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "broker": self.broker,
            "topic": topic,
            "outcome": outcome,
            "row": serde_json::from_str::<serde_json::Value>(payload).unwrap_or_default(),
        });
        if writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .is_err()
        {
            tracing::error!(broker = %self.broker, "cannot write the mqtt sink's audit log");
        }
    }
}

/// The client's event loop: counts deliveries, records outcomes, and reconnects with backoff.
fn drive(
    mut connection: Connection,
    qos: QoS,
    delivery: &Delivery,
    address: &str,
    mut audit: Option<Audit>,
) {
    let mut backoff = Backoff::new();
    let mut failures = 0u64;
    while !delivery.stop.load(Ordering::Relaxed) {
        match connection.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                backoff.reset();
                failures = 0;
                tracing::info!(broker = %address, "mqtt sink connected");
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) if qos == QoS::AtLeastOnce => {
                delivery.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(audit) = audit.as_mut() {
                    audit.acknowledged(ack.pkid);
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                if qos == QoS::AtMostOnce {
                    delivery.delivered.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(audit) = audit.as_mut() {
                    audit.sent(pkid, qos);
                }
            }
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(broker = %address, %error, "mqtt sink connection lost; reconnecting");
                }
                let until = Instant::now() + backoff.step();
                while Instant::now() < until && !delivery.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    if let Some(audit) = audit {
        audit.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_follows_packet_ids_through_retransmissions() {
        let dir = std::env::temp_dir().join(format!("vibelux-mqtt-audit-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let handed = Arc::new(Mutex::new(VecDeque::new()));
        let mut audit = Audit::open(&path, handed.clone(), "127.0.0.1:1883".into()).unwrap();
        for (topic, row) in [("a/1", r#"{"n":1}"#), ("a/2", r#"{"n":2}"#)] {
            handed
                .lock()
                .unwrap()
                .push_back((topic.to_string(), row.to_string()));
        }
        audit.sent(1, QoS::AtLeastOnce);
        audit.sent(2, QoS::AtLeastOnce);
        // After a reconnect the client sends packet 1 again: still the first message.
        audit.sent(1, QoS::AtLeastOnce);
        audit.acknowledged(2);
        audit.close();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let outcomes: Vec<(&str, &str)> = lines
            .iter()
            .map(|line| {
                (
                    line["topic"].as_str().unwrap(),
                    line["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [("a/2", "acknowledged"), ("a/1", "unacknowledged")]
        );
        assert_eq!(lines[0]["row"]["n"], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
