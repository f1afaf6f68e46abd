//! The `kafka` source: one consumer per worker, all in one consumer group — or, in a cluster of
//! processes, each assigned its own partitions (`partitions.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use super::partitions::{Discovery, owner};
use super::resume::{Partition, Positions, ResumingContext};
use rdkafka::message::{Headers, Message};
use vibelux_operators::row::{Datum, Row};

use crate::payload::{Change, MessageFormat, RowLayout};
use crate::source::{Poll, Record, SourceMetrics, SourceReader};

/// How often a reader asks which partitions it has (they move when members join or leave).
const ASSIGNMENT_REFRESH: Duration = Duration::from_millis(250);

/// Message metadata a column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataField {
    Key,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

impl MetadataField {
    pub fn parse(name: &str) -> Option<MetadataField> {
        Some(match name.to_ascii_lowercase().as_str() {
            "key" => MetadataField::Key,
            "topic" => MetadataField::Topic,
            "partition" => MetadataField::Partition,
            "offset" => MetadataField::Offset,
            "timestamp" => MetadataField::Timestamp,
            "headers" => MetadataField::Headers,
            _ => return None,
        })
    }

    /// The SQL type a column holding this field must have.
    pub fn sql_type(self) -> &'static str {
        match self {
            MetadataField::Key | MetadataField::Topic | MetadataField::Headers => "TEXT",
            MetadataField::Partition | MetadataField::Offset => "BIGINT",
            MetadataField::Timestamp => "TIMESTAMP",
        }
    }
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub start_from: StartFrom,
    pub format: MessageFormat,
    /// Columns filled from message metadata.
    pub metadata: Vec<(MetadataField, usize)>,
    /// Further librdkafka settings (`properties.<name>` options).
    pub properties: Vec<(String, String)>,
    /// Read for a table: from the topics' beginning, with tombstones as deletions.
    pub table: bool,
}

/// How a reader gets its partitions.
pub enum Assignment {
    /// From the consumer group (one process).
    Group,
    /// Works them out itself (a cluster): the partitions `owner` gives this worker of all the
    /// cluster's.
    Own {
        discovery: Discovery,
        worker: usize,
        workers: usize,
        /// The version of the partition list last dealt.
        dealt: u64,
        /// Whether the last attempt to assign partitions failed (said once).
        failing: bool,
    },
}

/// One worker's consumer.
pub struct KafkaReader {
    name: String,
    consumer: BaseConsumer<ResumingContext>,
    config: Arc<KafkaSourceConfig>,
    layout: RowLayout,
    metrics: Arc<SourceMetrics>,
    /// Watermark partition ids: topic index × 2¹⁶ + partition.
    assigned: Vec<u32>,
    checked_assignment: Instant,
    topic_index: HashMap<String, u32>,
    failures: u64,
    /// Partition numbers read to their end since their last message (librdkafka reports the
    /// end of a partition by number only).
    at_end: std::collections::HashSet<i32>,
    /// A message that arrived with a new assignment, taken at the next poll.
    held_back: Option<rdkafka::message::OwnedMessage>,
    assignment: Assignment,
}

impl KafkaReader {
    /// Joins the consumer group, or in a cluster waits to assign its own partitions at its
    /// first poll (connecting in the background: a broker that is down at start is retried by
    /// the client).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        name: &str,
        config: Arc<KafkaSourceConfig>,
        layout: RowLayout,
        worker: usize,
        metrics: Arc<SourceMetrics>,
        resume: Arc<std::sync::Mutex<HashMap<Partition, i64>>>,
        checkpointed: bool,
        assignment: Assignment,
    ) -> Result<KafkaReader, String> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("client.id", format!("vibelux-{name}-{worker}"))
            // A checkpointed run commits offsets with its checkpoints only; a table without
            // checkpoints reads its topics whole each time and commits nothing.
            .set(
                "enable.auto.commit",
                if checkpointed || config.table {
                    "false"
                } else {
                    "true"
                },
            )
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            // End-of-partition events tell when the backlog is read: only then may a quiet
            // source's watermark follow the clock.
            .set("enable.partition.eof", "true")
            // Topics created after the engine started are found within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "2000")
            .set(
                "auto.offset.reset",
                match config.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let context = ResumingContext {
            resume,
            checkpointed,
            from_beginning: config.table,
            ..ResumingContext::default()
        };
        let consumer: BaseConsumer<ResumingContext> = client
            .create_with_context(context)
            .map_err(|error| format!("creating the Kafka consumer: {error}"))?;
        if matches!(assignment, Assignment::Group) {
            let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|error| format!("subscribing to {topics:?}: {error}"))?;
        }
        metrics.networked.store(true, Ordering::Relaxed);
        let topic_index = config
            .topics
            .iter()
            .enumerate()
            .map(|(index, topic)| (topic.clone(), index as u32))
            .collect();
        Ok(KafkaReader {
            name: name.to_string(),
            consumer,
            config,
            layout,
            metrics,
            assigned: Vec::new(),
            checked_assignment: Instant::now(),
            topic_index,
            failures: 0,
            at_end: Default::default(),
            held_back: None,
            assignment,
        })
    }

    /// In a cluster: assigns the partitions of this worker's that the topics' metadata shows
    /// and it does not read yet, each at its checkpoint's offset, else at the group's committed
    /// one, else where `start_offset` says.
    fn assign_own_partitions(&mut self) {
        let Assignment::Own {
            discovery,
            worker,
            workers,
            dealt,
            failing,
        } = &mut self.assignment
        else {
            return;
        };
        let Some((version, partitions)) = discovery.changed_since(*dealt) else {
            return;
        };
        let held: std::collections::HashSet<Partition> = self
            .consumer
            .assignment()
            .map(|list| {
                list.elements()
                    .iter()
                    .map(|element| (element.topic().to_string(), element.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let context = self.consumer.context();
        let mut resume = context.resume.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = rdkafka::TopicPartitionList::new();
        let mut started = Vec::new();
        for (topic_index, partition) in partitions {
            let topic = &self.config.topics[topic_index];
            let key = (topic.clone(), partition);
            if owner(topic_index, partition, *workers) != *worker || held.contains(&key) {
                continue;
            }
            let offset = match resume.remove(&key) {
                Some(next) => {
                    started.push((key, next));
                    rdkafka::Offset::Offset(next)
                }
                None if self.config.table => rdkafka::Offset::Beginning,
                None => rdkafka::Offset::Stored,
            };
            if let Err(error) = list.add_partition_offset(topic, partition, offset) {
                tracing::warn!(source = %self.name, %error, "assigning a Kafka partition");
            }
        }
        let assigned = list.count() == 0
            || match self.consumer.incremental_assign(&list) {
                Ok(()) => true,
                Err(error) => {
                    // Tried again at the next poll, at the same offsets.
                    if !*failing {
                        tracing::error!(source = %self.name, %error, "assigning Kafka partitions; retrying");
                    }
                    resume.extend(started.drain(..));
                    false
                }
            };
        drop(resume);
        *failing = !assigned;
        if !assigned {
            return;
        }
        if list.count() > 0 {
            let mut next_offsets = context.next_offsets();
            for (key, next) in started {
                next_offsets.insert(key, next);
            }
            tracing::debug!(source = %self.name, worker, partitions = list.count(), "assigned Kafka partitions");
        }
        *dealt = version;
        self.refresh_assignment();
    }

    fn partition_id(&self, topic: &str, partition: i32) -> u32 {
        let topic = self.topic_index.get(topic).copied().unwrap_or(0);
        (topic << 16) | (partition as u32 & 0xffff)
    }

    /// What a message does: a row, or for a table a deletion (a tombstone, a change event's
    /// delete); `None` for a tombstone that only compacts a change event's key away.
    fn decode<M: Message>(&self, message: &M) -> Result<Option<Change>, String> {
        let change = match message.payload() {
            Some(body) if self.config.table => {
                self.config.format.decode_change(&self.layout, body)?
            }
            Some(body) => Change::Upsert(self.config.format.decode(&self.layout, body)?),
            // Debezium follows each delete with a tombstone of the event's key, for compaction.
            None if self.config.format == MessageFormat::DebeziumJson => return Ok(None),
            None if self.config.table => {
                Change::Delete(vec![Datum::Null; self.layout.schema.fields().len()])
            }
            None => return Err("the message has no value".to_string()),
        };
        Ok(Some(match change {
            Change::Upsert(row) => Change::Upsert(self.with_metadata(message, row)?),
            Change::Delete(row) => Change::Delete(self.with_metadata(message, row)?),
        }))
    }

    /// `row` with the columns `include` takes from the message's metadata.
    fn with_metadata<M: Message>(&self, message: &M, mut row: Row) -> Result<Row, String> {
        for (field, column) in &self.config.metadata {
            row[*column] = match field {
                MetadataField::Key => match message.key() {
                    None => Datum::Null,
                    Some(key) => Datum::Utf8(
                        crate::bytes_text::utf8(key)
                            .map_err(|problem| format!("the message key is not UTF-8: {problem}"))?
                            .into(),
                    ),
                },
                MetadataField::Topic => Datum::Utf8(message.topic().into()),
                MetadataField::Partition => Datum::Int64(i64::from(message.partition())),
                MetadataField::Offset => Datum::Int64(message.offset()),
                MetadataField::Timestamp => message
                    .timestamp()
                    .to_millis()
                    .map_or(Datum::Null, |millis| Datum::Timestamp(millis * 1_000_000)),
                MetadataField::Headers => {
                    let mut headers = serde_json::Map::new();
                    if let Some(all) = message.headers() {
                        for header in all.iter() {
                            let value = header.value.map_or(serde_json::Value::Null, |v| {
                                crate::bytes_text::escaped(v).into()
                            });
                            headers.insert(header.key.to_string(), value);
                        }
                    }
                    Datum::Utf8(serde_json::Value::Object(headers).to_string().into())
                }
            };
        }
        Ok(row)
    }

    fn refresh_assignment(&mut self) {
        self.checked_assignment = Instant::now();
        if let Ok(assignment) = self.consumer.assignment() {
            let assigned: Vec<u32> = assignment
                .elements()
                .iter()
                .map(|element| self.partition_id(element.topic(), element.partition()))
                .collect();
            self.assigned = assigned;
        }
    }
}

impl KafkaReader {
    /// Turns one message into a record and notes its offset.
    fn take<M: Message>(&self, message: &M, out: &mut Vec<Record>) {
        let partition = self.partition_id(message.topic(), message.partition());
        let origin = || {
            format!(
                "kafka topic {} partition {} offset {}",
                message.topic(),
                message.partition(),
                message.offset()
            )
        };
        let raw = || match (message.payload(), message.key()) {
            (Some(body), _) => crate::bytes_text::escaped(body),
            (None, Some(key)) => format!("a tombstone of key {}", crate::bytes_text::escaped(key)),
            (None, None) => "a tombstone without a key".to_string(),
        };
        let decoded = self.decode(message).and_then(|change| match change {
            Some(Change::Upsert(row)) => self.layout.finish(row).map(Some),
            Some(Change::Delete(row)) => {
                out.push(Record::Delete {
                    row,
                    raw: raw(),
                    origin: origin(),
                });
                Ok(None)
            }
            None => Ok(None),
        });
        match decoded {
            Ok(Some((row, event_time))) => out.push(Record::Row {
                row,
                event_time,
                partition,
            }),
            Ok(None) => {}
            Err(reason) => out.push(Record::Invalid {
                reason,
                raw: raw(),
                origin: origin(),
            }),
        }
        {
            let mut held = self.consumer.context().next_offsets();
            match held.get_mut(&(message.topic().to_string(), message.partition())) {
                Some(next) => *next = message.offset() + 1,
                None => {
                    held.insert(
                        (message.topic().to_string(), message.partition()),
                        message.offset() + 1,
                    );
                }
            }
        }
        // The row has entered the dataflow: the offset after it may be committed (in a
        // checkpointed run, once a stored checkpoint holds it).
        if !self.consumer.context().checkpointed
            && !self.config.table
            && let Err(error) =
                self.consumer
                    .store_offset(message.topic(), message.partition(), message.offset())
        {
            tracing::debug!(source = %self.name, %error, "storing an offset failed");
        }
    }
}

impl SourceReader for KafkaReader {
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        self.assign_own_partitions();
        if self.checked_assignment.elapsed() >= ASSIGNMENT_REFRESH
            || self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::Relaxed)
        {
            self.refresh_assignment();
        }
        let mut taken = 0;
        // A message that came with a new assignment, held back so that the watermark knows
        // every newly assigned partition before any row is admitted.
        if let Some(message) = self.held_back.take() {
            self.at_end.remove(&message.partition());
            self.take(&message, out);
            taken += 1;
        }
        while taken < max_records {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    self.at_end.insert(partition);
                    continue;
                }
                Some(Err(error)) => {
                    self.failures += 1;
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    self.metrics
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if self.failures == 1 {
                        tracing::warn!(source = %self.name, %error, "kafka consumer error; retrying");
                    }
                    break;
                }
            };
            if self.failures > 0 || !self.metrics.connected.load(Ordering::Relaxed) {
                self.failures = 0;
                self.metrics.connected.store(true, Ordering::Relaxed);
            }
            // The group assigned partitions while polling: end the batch here, so the source
            // expects every assigned partition (a backlog on one must not be made late by the
            // rows of another that came first).
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::Relaxed)
            {
                let detached = message.detach();
                self.refresh_assignment();
                self.held_back = Some(detached);
                return Poll::Ready;
            }
            taken += 1;
            self.at_end.remove(&message.partition());
            self.take(&message, out);
        }
        if taken == max_records {
            Poll::Ready
        } else {
            Poll::Idle(Duration::from_millis(2))
        }
    }

    /// The clock, once every assigned partition has been read to its end: before that (not
    /// assigned yet, or a backlog still unread) a quiet source must not let its watermark follow
    /// the clock, or the backlog would arrive late.
    fn processing_time(&self) -> Option<i64> {
        if !self.caught_up() {
            return None;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|elapsed| i64::try_from(elapsed.as_nanos()).ok())
    }

    /// Every assigned partition has been read to its end.
    fn caught_up(&self) -> bool {
        !self.assigned.is_empty()
            && self
                .assigned
                .iter()
                .all(|id| self.at_end.contains(&((id & 0xffff) as i32)))
    }

    fn assigned_partitions(&self) -> &[u32] {
        &self.assigned
    }

    /// The next offset of every partition this reader holds, and of those waiting to be
    /// assigned again (a checkpoint's, not yet assigned; one revoked in a rebalance, not yet
    /// handed back): a checkpoint taken between a revocation and the assignment after it must
    /// not forget where that partition was, or a restored table would read it from its start.
    fn position(&self) -> Option<Vec<u8>> {
        let context = self.consumer.context();
        let mut offsets = context
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        offsets.extend(context.next_offsets().iter().map(|(k, v)| (k.clone(), *v)));
        Some(Positions::encode(&offsets))
    }

    /// The checkpoint holding `position` is stored: its offsets are the group's now.
    fn checkpoint_stored(&mut self, position: &[u8]) {
        let offsets = match Positions::merge(&[position.to_vec()]) {
            Ok(offsets) => offsets,
            Err(error) => {
                tracing::warn!(source = %self.name, %error, "committing checkpointed offsets");
                return;
            }
        };
        let mut list = rdkafka::TopicPartitionList::new();
        for ((topic, partition), next) in &offsets {
            let _ = list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*next));
        }
        if list.count() > 0
            && let Err(error) = self.consumer.commit(&list, CommitMode::Async)
        {
            tracing::debug!(source = %self.name, %error, "committing checkpointed offsets");
        }
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // Commit what entered the dataflow before leaving the group (a checkpointed run has
        // committed its last checkpoint's offsets already).
        if self.consumer.context().checkpointed {
            return;
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(source = %self.name, %error, "final offset commit");
        }
    }
}
