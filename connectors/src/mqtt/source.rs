//! The `mqtt` source: a persistent subscription whose messages are decoded on the workers.
//!
//! One client (one thread) per source receives messages and hands each to a worker chosen by
//! its topic, so a sensor's readings stay in order on one worker while decoding spreads over
//! all of them. The worker decodes the payload ([`MessageDecoder`]: JSON or raw rows here, the
//! Sparkplug host in `crate::sparkplug`) and acks a QoS 1 message once its rows (or its dead
//! letter) have entered the dataflow; in a checkpointed run the client journals each message and
//! acks it once the journal is synced (`journal.rs`), and the worker's position is the last
//! journaled message it took in. The queue to each worker is bounded: a slow dataflow
//! slows the client, and the broker holds the rest.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rumqttc::QoS;
use vibelux_operators::row::{Datum, Row};

use crate::background::BackgroundThread;
use crate::mqtt::broker::{Backoff, BrokerConfig};
use crate::mqtt::journal::{Journal, JournalEntry};
use crate::mqtt::link::{self, LinkClient, LinkConnection, LinkEvent, Protocol, Received, Will};
pub use crate::mqtt::position::JournalPosition;
use crate::mqtt::position::{Route, owner};
use crate::mqtt::topic::TopicPattern;
use crate::payload::{MessageFormat, RowLayout, parse_text};
use crate::source::{Poll, Record, SourceMetrics, SourceReader, Waker};

/// Messages waiting for one worker before the client stops reading from the broker.
const WORKER_QUEUE: usize = 8192;
/// How often an idle reader looks again (the client wakes it sooner when messages arrive).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Where a row's event time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTimeFrom {
    /// The event-time column of the payload (the device's clock).
    Payload,
    /// The moment the engine received the message (devices that send bare values).
    Arrival,
}

#[derive(Debug, Clone)]
pub struct MqttSourceConfig {
    pub broker: BrokerConfig,
    pub topic: TopicPattern,
    pub qos: QoS,
    pub payload: MessageFormat,
    pub event_time: EventTimeFrom,
    pub protocol: Protocol,
    /// In a cluster: the shared-subscription group its processes' clients join, so that the
    /// broker hands each message to one of them.
    pub share: Option<String>,
}

/// A message on its way to a worker.
pub struct MqttMessage {
    pub publish: Received,
    /// When the client received it (nanoseconds since the epoch).
    pub received_nanos: i64,
    /// Its number in the journal (0 when the run keeps none).
    pub sequence: u64,
}

/// What a checkpointed run gives an MQTT source: where to keep its journal, and how far each
/// worker had taken the journal in at the checkpoint the run resumes from.
pub struct Durability {
    pub directory: std::path::PathBuf,
    /// One per worker of the run that stored the checkpoint (any number; none: a fresh start).
    pub positions: Vec<JournalPosition>,
    /// Whose journal it is, in a cluster (see [`JournalPosition::journal_of`]).
    pub journal_of: Option<(u32, u32)>,
}

/// Turns one worker's messages into records (rows and dead letters).
pub trait MessageDecoder: Send {
    fn decode(&mut self, message: &MqttMessage, out: &mut Vec<Record>);

    /// What the decoder has learnt from the messages so far, for a checkpoint; `None` for a
    /// decoder that learns nothing (each message stands alone).
    fn state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes back what [`MessageDecoder::state`] said.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// Takes back, from what the decoders of a run with another worker count said, what
    /// concerns the topics `owns` says this decoder now reads.
    fn restore_share(
        &mut self,
        _states: &[&[u8]],
        _owns: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// What a source subscribes to, and how its messages are spread over the workers.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub broker: BrokerConfig,
    pub filter: String,
    pub qos: QoS,
    /// Hashes the part of a topic that picks its worker: messages that hash alike stay in
    /// order on one worker.
    pub route: Route,
    /// A retained presence message published on every connection, with its opposite left
    /// with the broker as the client's will.
    pub presence: Option<Presence>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone)]
pub struct Presence {
    pub topic: String,
    pub online: Vec<u8>,
    pub offline: Vec<u8>,
}

/// Routes by the whole topic (one sensor, one topic).
fn route_by_topic(topic: &str, hasher: &mut DefaultHasher) {
    topic.hash(hasher);
}

/// Publishes commands (QoS 0, not retained) on the source's own connection.
#[derive(Clone)]
pub struct Commands {
    client: LinkClient,
}

impl Commands {
    /// Queues the message; `false` if the client's queue is full or closed.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> bool {
        self.client.publish(topic, QoS::AtMostOnce, false, payload)
    }
}

/// Connects (in the background: a broker that is down at start is retried) and returns one
/// reader per worker, decoding rows by the source's topic pattern and message format.
pub fn subscribe(
    name: &str,
    config: MqttSourceConfig,
    layout: RowLayout,
    peers: usize,
    metrics: Arc<SourceMetrics>,
    durability: Option<Durability>,
) -> std::io::Result<Vec<MqttReader>> {
    let filter = match &config.share {
        Some(group) => format!("$share/{group}/{}", config.topic.filter()),
        None => config.topic.filter(),
    };
    let subscription = Subscription {
        broker: config.broker.clone(),
        filter,
        qos: config.qos,
        route: route_by_topic,
        presence: None,
        protocol: config.protocol,
    };
    let config = Arc::new(config);
    subscribe_with(
        name,
        subscription,
        |_| {
            Box::new(TopicRowDecoder {
                config: config.clone(),
                layout: layout.clone(),
            })
        },
        peers,
        metrics,
        durability,
    )
}

/// Connects and returns one reader per worker, each with a decoder made by `decoder`.
pub fn subscribe_with(
    name: &str,
    subscription: Subscription,
    mut decoder: impl FnMut(&Commands) -> Box<dyn MessageDecoder>,
    peers: usize,
    metrics: Arc<SourceMetrics>,
    durability: Option<Durability>,
) -> std::io::Result<Vec<MqttReader>> {
    let peers = peers.max(1);
    let (journal, replay, positions) = match durability {
        Some(durability) => {
            let (journal, entries) = Journal::open(&durability.directory).map_err(|error| {
                std::io::Error::other(format!(
                    "source {name}: opening the journal in {}: {error}",
                    durability.directory.display()
                ))
            })?;
            let mut positions = JournalPosition::share_out(durability.positions, peers);
            for position in &mut positions {
                position.journal_of = durability.journal_of;
            }
            (Some(journal), entries, positions)
        }
        None => (None, Vec::new(), vec![JournalPosition::default(); peers]),
    };
    let journaled = journal.is_some();
    let stored: Arc<Vec<AtomicU64>> = Arc::new(
        positions
            .iter()
            .map(|position| AtomicU64::new(position.covered_through()))
            .collect(),
    );
    let route = subscription.route;
    // What the journal held when opened is on disk already.
    let synced = Arc::new(AtomicU64::new(
        replay.last().map_or(0, |entry| entry.sequence),
    ));
    metrics.networked.store(true, Ordering::Relaxed);
    let will = subscription.presence.as_ref().map(|presence| Will {
        topic: presence.topic.clone(),
        payload: presence.offline.clone(),
        qos: QoS::AtLeastOnce,
        retain: true,
    });
    let (client, connection) = link::open(&subscription.broker, subscription.protocol, true, will)
        .map_err(|problem| std::io::Error::other(format!("source {name}: {problem}")))?;
    let commands = Commands {
        client: client.clone(),
    };
    let (queues, receivers): (Vec<_>, Vec<_>) = (0..peers)
        .map(|_| std::sync::mpsc::sync_channel::<MqttMessage>(WORKER_QUEUE))
        .unzip();
    let wakers: Vec<Arc<OnceLock<Waker>>> = (0..peers).map(|_| Arc::default()).collect();
    let (acks, ack_receiver) = std::sync::mpsc::channel::<u16>();
    let mut session = Session {
        name: name.to_string(),
        subscription,
        client,
        queues,
        wakers: wakers.clone(),
        acks: ack_receiver,
        unsent_acks: Default::default(),
        stop: Arc::default(),
        metrics,
        journal,
        replay,
        resumed: positions.clone(),
        stored: stored.clone(),
        forgotten: 0,
        journaled_acks: Vec::new(),
        unsynced: 0,
        last_journaled: synced.load(Ordering::Relaxed),
        synced: synced.clone(),
    };
    let guard = BackgroundThread::spawn(format!("mqtt-{name}"), move |stop| {
        session.stop = stop;
        session.run(connection)
    })?;
    Ok(receivers
        .into_iter()
        .zip(wakers)
        .enumerate()
        .map(|(worker, (queue, waker))| MqttReader {
            decoder: decoder(&commands),
            queue,
            acks: acks.clone(),
            waker,
            _guard: guard.clone(),
            journaled,
            journal: positions[worker].clone(),
            worker,
            peers,
            route,
            stored: stored.clone(),
            synced: synced.clone(),
        })
        .collect())
}

/// The client's side: the event loop, reconnection and the hand-off to workers.
struct Session {
    name: String,
    subscription: Subscription,
    client: LinkClient,
    queues: Vec<SyncSender<MqttMessage>>,
    wakers: Vec<Arc<OnceLock<Waker>>>,
    acks: Receiver<u16>,
    unsent_acks: std::collections::VecDeque<u16>,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
    /// In a checkpointed run: messages are journaled and synced before they are acknowledged.
    journal: Option<Journal>,
    /// Journaled messages to hand to the workers that had not taken them in, before any new one.
    replay: Vec<JournalEntry>,
    /// Per worker: what it had taken in of the journal at the checkpoint resumed from.
    resumed: Vec<JournalPosition>,
    /// Per worker: the last journaled message a stored checkpoint holds (readers set it).
    stored: Arc<Vec<AtomicU64>>,
    /// The journal is deleted up to here.
    forgotten: u64,
    /// Journaled messages to acknowledge once the journal is synced.
    journaled_acks: Vec<u16>,
    /// Messages journaled since the last sync (QoS 0 ones too: they are acknowledged to no
    /// one, but a checkpoint may not pass them until they are on disk).
    unsynced: usize,
    /// The number of the last message journaled.
    last_journaled: u64,
    /// The number of the last message on disk, for readers' positions to wait for.
    synced: Arc<AtomicU64>,
}

/// Journaled messages acknowledged in one batch at most (one sync each).
const JOURNAL_BATCH: usize = 512;

impl Session {
    fn run(&mut self, mut connection: LinkConnection) {
        self.replay_journal();
        let mut backoff = Backoff::new();
        let filter = self.subscription.filter.clone();
        let mut failures = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            self.send_acks();
            // With messages waiting for a sync, take what else is ready first: one sync for all.
            let wait = if self.unsynced == 0 {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            let event = connection.recv(wait);
            if self.unsynced >= JOURNAL_BATCH
                || (matches!(event, LinkEvent::Idle) && self.unsynced > 0)
            {
                self.sync_journal();
            }
            self.forget_journal();
            match event {
                LinkEvent::Idle | LinkEvent::Other | LinkEvent::Disconnected => {}
                LinkEvent::Closed => break,
                LinkEvent::Connected { session_present } => {
                    backoff.reset();
                    failures = 0;
                    self.metrics.connected.store(true, Ordering::Relaxed);
                    tracing::debug!(
                        source = %self.name,
                        broker = %self.subscription.broker.address(),
                        session_present,
                        "mqtt connected"
                    );
                    if let Some(presence) = &self.subscription.presence
                        && !self.client.publish(
                            presence.topic.clone(),
                            QoS::AtLeastOnce,
                            true,
                            presence.online.clone(),
                        )
                    {
                        tracing::warn!(source = %self.name, "publishing presence failed");
                    }
                    // Always subscribe: a broker that lost its sessions (no persistence) has
                    // forgotten the subscription; one that kept it treats this as a no-op.
                    if let Err(error) = self.client.subscribe(&filter, self.subscription.qos) {
                        tracing::warn!(source = %self.name, %error, "mqtt subscribe failed");
                    }
                }
                LinkEvent::Subscribed { refused } => {
                    if refused {
                        tracing::error!(source = %self.name, topic = %filter, "the broker refused the subscription");
                    } else {
                        tracing::info!(source = %self.name, broker = %self.subscription.broker.address(), topic = %filter, "mqtt subscribed");
                    }
                }
                LinkEvent::Message(publish) => self.hand_off(publish),
                LinkEvent::Failed(error) => {
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    self.metrics
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    // The first failure of an outage is a warning; retries are quieter.
                    if failures == 1 {
                        tracing::warn!(source = %self.name, broker = %self.subscription.broker.address(), %error, "mqtt connection lost; reconnecting");
                    } else {
                        tracing::debug!(source = %self.name, %error, "mqtt reconnect failed");
                    }
                    self.sleep(backoff.step());
                }
            }
        }
        self.close(connection);
    }

    /// The worker that owns a topic.
    fn worker_of(&self, topic: &str) -> usize {
        owner(self.subscription.route, topic, self.queues.len())
    }

    /// Hands each worker the journaled messages after the last one it had taken in.
    fn replay_journal(&mut self) {
        let entries = std::mem::take(&mut self.replay);
        let mut replayed = 0;
        for entry in entries {
            let worker = self.worker_of(&entry.topic);
            if self.resumed[worker].has_taken(self.subscription.route, &entry.topic, entry.sequence)
            {
                continue;
            }
            replayed += 1;
            let qos = match entry.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let message = MqttMessage {
                publish: Received {
                    topic: entry.topic,
                    payload: entry.payload.into(),
                    qos,
                    pkid: 0,
                },
                received_nanos: entry.received_nanos,
                sequence: entry.sequence,
            };
            self.queue(worker, message);
        }
        if replayed > 0 {
            tracing::info!(source = %self.name, replayed, "messages taken again from the journal");
        }
    }

    /// Makes the journal durable, then acknowledges what it holds.
    fn sync_journal(&mut self) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        match journal.sync() {
            Ok(()) => {
                self.unsynced = 0;
                self.synced.store(self.last_journaled, Ordering::Release);
                for pkid in self.journaled_acks.drain(..) {
                    self.unsent_acks.push_back(pkid);
                }
                self.send_acks();
            }
            // Unacknowledged, the broker keeps them and stops sending more: retried next time.
            Err(error) => {
                tracing::error!(source = %self.name, %error, "cannot sync the journal of received messages");
                self.sleep(Duration::from_millis(100));
            }
        }
    }

    /// Deletes what every worker's stored checkpoint has passed.
    fn forget_journal(&mut self) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let passed = self
            .stored
            .iter()
            .map(|taken| taken.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        if passed > self.forgotten {
            journal.forget_through(passed);
            self.forgotten = passed;
        }
    }

    /// Queues a message for the worker that owns its topic; in a checkpointed run, journals it
    /// first (it is acknowledged once the journal is synced).
    fn hand_off(&mut self, publish: Received) {
        let worker = self.worker_of(&publish.topic);
        let received_nanos = now_nanos();
        let mut sequence = 0;
        if let Some(journal) = self.journal.as_mut() {
            let qos = match publish.qos {
                QoS::AtMostOnce => 0,
                QoS::AtLeastOnce => 1,
                QoS::ExactlyOnce => 2,
            };
            match journal.append(&publish.topic, &publish.payload, received_nanos, qos) {
                Ok(number) => {
                    sequence = number;
                    self.last_journaled = number;
                    self.unsynced += 1;
                }
                Err(error) => {
                    // Not acknowledged: the broker delivers it again.
                    tracing::error!(source = %self.name, %error, "cannot journal a received message");
                    return;
                }
            }
            if publish.qos != QoS::AtMostOnce {
                self.journaled_acks.push(publish.pkid);
            }
        }
        let message = MqttMessage {
            publish,
            received_nanos,
            sequence,
        };
        self.queue(worker, message);
    }

    fn queue(&mut self, worker: usize, mut message: MqttMessage) {
        loop {
            match self.queues[worker].try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    // The worker is behind: wait for it (the broker keeps what follows).
                    message = back;
                    self.wake(worker);
                    self.send_acks();
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        self.wake(worker);
    }

    fn wake(&self, worker: usize) {
        if let Some(waker) = self.wakers[worker].get() {
            waker();
        }
    }

    /// Passes the workers' acknowledgements to the client.
    fn send_acks(&mut self) {
        self.unsent_acks.extend(self.acks.try_iter());
        while let Some(&pkid) = self.unsent_acks.front() {
            if !self.client.ack(pkid) {
                break;
            }
            self.unsent_acks.pop_front();
        }
    }

    /// Waits, still passing acknowledgements on.
    fn sleep(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10).min(wait));
        }
    }

    /// Sends the last acknowledgements, then disconnects, so the broker does not redeliver
    /// what the engine took in.
    fn close(&mut self, mut connection: LinkConnection) {
        self.sync_journal();
        self.send_acks();
        // A clean disconnect does not trigger the will: say it ourselves.
        if let Some(presence) = &self.subscription.presence {
            self.client.publish(
                presence.topic.clone(),
                QoS::AtLeastOnce,
                true,
                presence.offline.clone(),
            );
        }
        self.client.disconnect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            self.send_acks();
            match connection.recv(Duration::from_millis(50)) {
                LinkEvent::Disconnected | LinkEvent::Failed(_) | LinkEvent::Closed => break,
                _ => {}
            }
        }
        self.metrics.connected.store(false, Ordering::Relaxed);
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One worker's share of an MQTT source.
pub struct MqttReader {
    decoder: Box<dyn MessageDecoder>,
    queue: Receiver<MqttMessage>,
    acks: Sender<u16>,
    waker: Arc<OnceLock<Waker>>,
    _guard: Arc<BackgroundThread>,
    /// Whether messages are journaled (and acknowledged by the client once synced).
    journaled: bool,
    /// What it has taken in of the journal: the reader's position.
    journal: JournalPosition,
    worker: usize,
    peers: usize,
    route: Route,
    /// Per worker: the last journaled message a stored checkpoint holds.
    stored: Arc<Vec<AtomicU64>>,
    /// The last journaled message on disk.
    synced: Arc<AtomicU64>,
}

/// How long a checkpoint's position waits for the journal to be on disk through it.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// Rows from JSON or raw payloads, with columns filled from the topic's levels.
struct TopicRowDecoder {
    config: Arc<MqttSourceConfig>,
    layout: RowLayout,
}

impl MessageDecoder for TopicRowDecoder {
    fn decode(&mut self, message: &MqttMessage, out: &mut Vec<Record>) {
        out.push(match self.row(message) {
            Ok((row, event_time)) => Record::Row {
                row,
                event_time,
                partition: 0,
            },
            Err(reason) => Record::Invalid {
                reason,
                raw: crate::bytes_text::escaped(&message.publish.payload),
                origin: format!("mqtt topic {}", message.publish.topic),
            },
        });
    }
}

impl TopicRowDecoder {
    fn row(&self, message: &MqttMessage) -> Result<(Row, i64), String> {
        let publish = &message.publish;
        let mut row = self.config.payload.decode(&self.layout, &publish.payload)?;
        let captures = self.config.topic.captures(&publish.topic).ok_or_else(|| {
            format!(
                "topic {:?} does not match the pattern {}",
                publish.topic,
                self.config.topic.filter()
            )
        })?;
        for (column, text) in captures {
            let field = self.layout.schema.field(column);
            row[column] = parse_text(field, text)
                .map_err(|problem| format!("topic level `{}`: {problem}", field.name()))?;
        }
        if self.config.event_time == EventTimeFrom::Arrival
            && let Some(column) = self.layout.event_time_column
        {
            row[column] = Datum::Timestamp(message.received_nanos);
        }
        self.layout.finish(row)
    }
}

impl SourceReader for MqttReader {
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        let mut taken = 0;
        while taken < max_records {
            let message = match self.queue.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            };
            taken += 1;
            self.decoder.decode(&message, out);
            if self.journaled {
                self.journal.take(message.sequence);
            } else if message.publish.qos != QoS::AtMostOnce {
                let _ = self.acks.send(message.publish.pkid);
            }
        }
        if taken == max_records {
            Poll::Ready
        } else {
            Poll::Idle(IDLE_POLL)
        }
    }

    fn processing_time(&self) -> Option<i64> {
        Some(now_nanos())
    }

    fn set_waker(&mut self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// The last journaled message taken in (only a checkpointed run journals).
    /// A checkpoint may only hold messages the journal has on disk: after a crash, a message
    /// taken in but never synced would be neither replayed nor numbered as before. The client
    /// syncs within moments of a message's arrival; the position waits for that.
    fn position(&self) -> Option<Vec<u8>> {
        if !self.journaled {
            return None;
        }
        let deadline = Instant::now() + SYNC_WAIT;
        while self.synced.load(Ordering::Acquire) < self.journal.taken {
            if Instant::now() > deadline {
                tracing::error!(
                    taken = self.journal.taken,
                    synced = self.synced.load(Ordering::Acquire),
                    "the journal of received messages is not on disk through the checkpoint"
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        self.journaled.then(|| {
            vibelux_interfaces::checkpoint::encode(&JournalPosition {
                decoder: self.decoder.state(),
                ..self.journal.clone()
            })
        })
    }

    /// A stored checkpoint holds everything up to `position`: the journal may forget it.
    fn checkpoint_stored(&mut self, position: &[u8]) {
        if let Ok(position) = JournalPosition::decode(position) {
            self.stored[self.worker].store(position.covered_through(), Ordering::Relaxed);
        }
    }
}

impl MqttReader {
    /// Gives the decoder back what it had learnt at a checkpoint.
    pub fn restore_decoder(&mut self, state: &[u8]) -> Result<(), String> {
        self.decoder.restore(state)
    }

    /// Gives the decoder its share of what the decoders of a run with another worker count
    /// had learnt: what concerns the topics this reader now owns.
    pub fn restore_decoder_share(&mut self, states: &[&[u8]]) -> Result<(), String> {
        let (route, worker, peers) = (self.route, self.worker, self.peers);
        self.decoder
            .restore_share(states, &|topic| owner(route, topic, peers) == worker)
    }
}
