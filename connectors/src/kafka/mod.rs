//! Kafka, where sites forward their readings and where a cluster of engines reads from.
//!
//! In one process every worker is a member of the source's consumer group, so Kafka spreads the
//! topic's partitions over the workers; in a cluster of processes each worker assigns itself
//! its share of them (`partitions.rs`). A worker's watermark is
//! the least of its partitions' (`WorkerWatermark`). Offsets are stored once a message's row (or
//! dead letter) has entered the dataflow and committed by the client every second and when the
//! source closes, so a restarted engine resumes where it stopped; a checkpointed run resumes at
//! its checkpoint's offsets instead (`resume.rs`). The sink produces each row
//! as a JSON message with an idempotent producer.

pub mod connector;
pub mod options;
pub mod partitions;
pub mod resume;
pub mod sink;
pub mod source;
