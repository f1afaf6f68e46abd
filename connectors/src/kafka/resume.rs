//! Resuming Kafka partitions at a checkpoint's offsets.
//!
//! A reader's position is the next offset of every partition it holds (a partition moves
//! between workers when members join or leave, so a reader gives up the ones it lost). In a
//! checkpointed run the group's committed offsets are the last stored checkpoint's: a reader
//! commits its position once the checkpoint holding it is stored, never before. A restored run
//! merges its workers' positions and, as the group assigns each partition to one of its
//! readers, starts that partition at the checkpoint's offset; a partition the group moves from
//! one worker of the run to another is handed on at the offset the first had read, so it is not
//! read twice.
//!
//! This relies on the eager rebalance protocol (librdkafka's default): the assignment is
//! replaced whole, with offsets, right after the group assigned it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// A partition: topic and number.
pub type Partition = (String, i32);

/// What a checkpoint keeps of a reader: each partition's next offset.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Positions {
    pub next_offsets: Vec<(String, i32, i64)>,
}

impl Positions {
    pub fn encode(offsets: &HashMap<Partition, i64>) -> Vec<u8> {
        let mut next_offsets: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|((topic, partition), offset)| (topic.clone(), *partition, *offset))
            .collect();
        next_offsets.sort();
        serde_json::to_vec(&Positions { next_offsets }).expect("offsets serialize")
    }

    /// Every worker's positions merged: the furthest offset of each partition (a partition
    /// that moved between workers is furthest on the one that had it last).
    pub fn merge(parts: &[Vec<u8>]) -> Result<HashMap<Partition, i64>, String> {
        let mut merged: HashMap<Partition, i64> = HashMap::new();
        for part in parts {
            let positions: Positions = serde_json::from_slice(part)
                .map_err(|error| format!("cannot read the checkpointed Kafka offsets: {error}"))?;
            for (topic, partition, offset) in positions.next_offsets {
                let entry = merged.entry((topic, partition)).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
        Ok(merged)
    }
}

/// The consumer's context: starts partitions at a checkpoint's offsets, and hands a partition
/// the group moves to another worker of the same run on at the offset read here.
#[derive(Default)]
pub struct ResumingContext {
    /// Offsets to start partitions at when they are assigned: the checkpoint's, and partitions
    /// another worker of this run gave up (shared by the source's readers).
    pub(super) resume: Arc<Mutex<HashMap<Partition, i64>>>,
    /// The next offset of each partition this reader holds: its position.
    pub(super) next_offsets: Mutex<HashMap<Partition, i64>>,
    /// Whether the run checkpoints: offsets are then committed only with checkpoints, and a
    /// partition moving between this run's workers is handed on here.
    pub(super) checkpointed: bool,
    /// Set by every rebalance: the reader looks at its assignment again at once.
    pub(super) rebalanced: std::sync::atomic::AtomicBool,
    /// A table's reader: partitions without a checkpoint's offset start at their beginning,
    /// whatever the group committed, since the table is the whole topic.
    pub(super) from_beginning: bool,
}

impl ResumingContext {
    pub(super) fn next_offsets(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, i64>> {
        self.next_offsets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for ResumingContext {}

impl ConsumerContext for ResumingContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalanced
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut held = self.next_offsets();
        let mut resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        for element in revoked.elements() {
            let key = (element.topic().to_string(), element.partition());
            if let Some(next) = held.remove(&key)
                && (self.checkpointed || self.from_beginning)
            {
                // The group commits only checkpointed offsets (and a table none): the worker
                // that gets the partition next goes on from here, not from the last checkpoint
                // (nor, for a table, from the beginning again, which would replay old values
                // over new ones).
                resume.insert(key, next);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalanced
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let mut resume = self.resume.lock().unwrap_or_else(|p| p.into_inner());
        if resume.is_empty() && !self.from_beginning {
            return;
        }
        if matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        ) {
            tracing::warn!(
                "the cooperative rebalance protocol is set: partitions resume at the group's committed offsets, not the checkpoint's"
            );
            return;
        }
        let mut with_offsets = TopicPartitionList::new();
        let mut started = Vec::new();
        for element in assigned.elements() {
            let key = (element.topic().to_string(), element.partition());
            let offset = match resume.remove(&key) {
                Some(next) => {
                    started.push((key, next));
                    Offset::Offset(next)
                }
                None if self.from_beginning => Offset::Beginning,
                None => element.offset(),
            };
            if let Err(error) =
                with_offsets.add_partition_offset(element.topic(), element.partition(), offset)
            {
                tracing::warn!(%error, "resuming a Kafka partition");
            }
        }
        if started.is_empty() && !self.from_beginning {
            return;
        }
        if let Err(error) = consumer.assign(&with_offsets) {
            tracing::error!(%error, "starting Kafka partitions at the checkpoint's offsets");
            return;
        }
        let mut held = self.next_offsets();
        for ((topic, partition), next) in started {
            tracing::debug!(
                topic,
                partition,
                offset = next,
                "resuming a partition at its offset"
            );
            held.insert((topic, partition), next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_positions_keep_the_furthest_offset_of_each_partition() {
        let a = Positions::encode(&HashMap::from([
            (("t".to_string(), 0), 10),
            (("t".to_string(), 1), 5),
        ]));
        let b = Positions::encode(&HashMap::from([(("t".to_string(), 1), 7)]));
        let merged = Positions::merge(&[a, b]).unwrap();
        assert_eq!(merged[&("t".to_string(), 0)], 10);
        assert_eq!(merged[&("t".to_string(), 1)], 7);
    }
}
