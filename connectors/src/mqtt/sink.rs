//! The `mqtt` sink: each row a JSON message on a topic built from the row.
//!
//! Rows are handed to the client as they come (the request queue is bounded, so a broker that
//! is away slows the sink rather than filling memory); when the sink finishes it waits until
//! the broker has acknowledged every QoS 1 message. The client keeps a persistent session, so
//! messages in flight when the connection drops are sent again after reconnecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use rumqttc::{Client, Connection, Event, Outgoing, Packet, QoS, RecvTimeoutError};
use vibelux_operators::row::Row;

use crate::file_sink::{SinkError, encode_json_row};
use crate::mqtt::broker::{Backoff, BrokerConfig};
use crate::mqtt::topic::TopicTemplate;

/// How long a finishing sink waits for the broker to acknowledge what it published.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    pub broker: BrokerConfig,
    pub topic: TopicTemplate,
    pub qos: QoS,
    pub retain: bool,
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
}

impl MqttPublisher {
    /// Starts the client (connecting in the background: a broker that is down at start is
    /// retried, and rows wait for it).
    pub fn open(
        config: MqttSinkConfig,
        schema: SchemaRef,
        changelog: bool,
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
        let thread = {
            let delivery = delivery.clone();
            let qos = config.qos;
            let address = config.broker.address();
            std::thread::Builder::new()
                .name("mqtt-sink".to_string())
                .spawn(move || drive(connection, qos, &delivery, &address))
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
        })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        let mut payload = String::with_capacity(128);
        encode_json_row(
            &self.schema,
            row,
            self.changelog.then_some(insert),
            &mut payload,
        );
        let topic = self.config.topic.render(row);
        self.client
            .publish(topic, self.config.qos, self.config.retain, payload)
            .map_err(|error| SinkError::Broker {
                target: self.describe.clone(),
                reason: error.to_string(),
            })?;
        self.delivery.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the broker has everything published so far, then disconnects.
    pub fn finish(&mut self) -> Result<(), SinkError> {
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

/// The client's event loop: counts deliveries and reconnects with backoff.
fn drive(mut connection: Connection, qos: QoS, delivery: &Delivery, address: &str) {
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
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) if qos == QoS::AtLeastOnce => {
                delivery.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) if qos == QoS::AtMostOnce => {
                delivery.delivered.fetch_add(1, Ordering::Relaxed);
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
}
