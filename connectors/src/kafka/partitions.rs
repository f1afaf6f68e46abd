//! Partitions shared out by the engine itself, in a cluster of processes.
//!
//! In one process the workers' consumers join one consumer group and the group hands the
//! partitions out; when it moves a partition from one worker to another, the first hands the
//! offset it had read to the second through memory they share (`resume.rs`), so a checkpointed
//! run reads nothing twice. Processes share no memory, and the group commits only checkpointed
//! offsets: a partition moved to another process would start again at the last checkpoint and
//! repeat what the first had read since. And processes join at different moments, so at every
//! start the group would move partitions between them. So a cluster does as Flink's and
//! Materialize's Kafka sources do: every reader works out which partitions are its own — the
//! same answer on every process, from the topics' metadata — and assigns them to its consumer
//! itself, with no group membership and no rebalance. Partitions are dealt round-robin over all
//! the cluster's workers; partitions added to a topic later are found and dealt the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::background::BackgroundThread;

/// How long one metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the topics are looked at again: soon while none is found, then now and then for
/// partitions added to them.
const UNTIL_FOUND: Duration = Duration::from_millis(500);
const ONCE_FOUND: Duration = Duration::from_secs(5);

/// The worker (of all the cluster's) that reads a partition: round-robin per topic, each topic
/// starting one worker further on.
pub fn owner(topic_index: usize, partition: i32, workers: usize) -> usize {
    (topic_index + partition.max(0) as usize) % workers.max(1)
}

/// What the topics hold, as last seen: every (topic index, partition), and a number that
/// changes whenever that list does.
#[derive(Default)]
pub struct Known {
    pub version: u64,
    pub partitions: Vec<(usize, i32)>,
}

/// The topics' partitions, looked up in the background for the readers of one source.
#[derive(Clone)]
pub struct Discovery {
    known: Arc<Mutex<Known>>,
    _thread: Arc<BackgroundThread>,
}

impl Discovery {
    pub fn start(
        name: &str,
        brokers: &str,
        topics: Vec<String>,
        properties: &[(String, String)],
    ) -> Result<Discovery, String> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", brokers);
        for (key, value) in properties {
            // Security settings apply to metadata requests too; consumer settings do not.
            if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
                client.set(key, value);
            }
        }
        let consumer: BaseConsumer = client
            .create()
            .map_err(|error| format!("creating the Kafka metadata client: {error}"))?;
        let known: Arc<Mutex<Known>> = Arc::default();
        let shared = known.clone();
        let source = name.to_string();
        let thread = BackgroundThread::spawn(format!("kafka-{name}-partitions"), move |stop| {
            look_up(&source, &consumer, &topics, &shared, &stop)
        })
        .map_err(|error| format!("starting the Kafka metadata thread: {error}"))?;
        Ok(Discovery {
            known,
            _thread: thread,
        })
    }

    /// The partitions known now, if their list changed since `version`.
    pub fn changed_since(&self, version: u64) -> Option<(u64, Vec<(usize, i32)>)> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        (known.version != version).then(|| (known.version, known.partitions.clone()))
    }
}

fn look_up(
    source: &str,
    consumer: &BaseConsumer,
    topics: &[String],
    known: &Mutex<Known>,
    stop: &AtomicBool,
) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut partitions: Vec<(usize, i32)> = Vec::new();
        let mut problem = None;
        for (index, topic) in topics.iter().enumerate() {
            match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                Ok(metadata) => {
                    for found in metadata.topics() {
                        if found.name() == topic && found.error().is_none() {
                            partitions.extend(found.partitions().iter().map(|p| (index, p.id())));
                        }
                    }
                }
                Err(error) => problem = Some(error),
            }
        }
        match problem {
            Some(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(source, %error, "cannot read the Kafka topics' partitions; retrying");
                }
            }
            None => failures = 0,
        }
        partitions.sort_unstable();
        let found = !partitions.is_empty();
        {
            let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
            // Partitions are never removed from a topic: a lookup that found fewer (a broker
            // that answered for some topics only) changes nothing.
            if partitions.len() > known.partitions.len() {
                known.partitions = partitions;
                known.version += 1;
            }
        }
        let wait = if found { ONCE_FOUND } else { UNTIL_FOUND };
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_the_workers_share_them_evenly() {
        let workers = 3;
        let mut counts = vec![0; workers];
        for topic in 0..2 {
            for partition in 0..6 {
                counts[owner(topic, partition, workers)] += 1;
            }
        }
        assert_eq!(counts, [4, 4, 4]);
    }
}
