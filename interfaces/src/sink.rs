//! The contract of a sink: what the engine's sink operator asks of every connector that writes.
//!
//! The operator hands rows to [`SinkWriter::write`] in order, asks for a flush as the frontier
//! moves and a finish when its input ends. A writer that delivers only at a flush or commit
//! (files, a Parquet warehouse) keeps what it could not deliver and counts what it did, so the
//! operator can retry without losing or repeating rows; a network client that queues, retries
//! and audits on its own delivers when it accepts a row.

use crate::row::Row;

/// Why a sink could not take or deliver rows; the message names the target.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write to {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot publish to {target}: {reason}")]
    Broker { target: String, reason: String },
}

/// A row's id for receivers of an at-least-once sink: the same row (and operation) sent to the
/// same target gets the same id in every run, so a message delivered again after a restart can
/// be recognised. 16 hex digits of an xxHash64 (specified, so stable across builds) of the
/// target, the operation and the row.
pub fn row_id(target: &str, row: &Row, insert: bool) -> String {
    let encoded = bincode::serialize(&(target, insert, row)).expect("rows serialize");
    format!("{:016x}", twox_hash::XxHash64::oneshot(0, &encoded))
}

/// An open sink.
pub trait SinkWriter: Send {
    /// Where rows go, for messages.
    fn describe(&self) -> String;

    /// Takes one row; `insert` is false for a retraction in a changelog. An error means the row
    /// was refused (a network client's dead letter), not held.
    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError>;

    /// Delivers what was taken, as far as the writer delivers before its finish (a file writes
    /// its lines out; a warehouse commits when a rollover is due). On failure the rows are kept
    /// for the next flush.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Delivers everything (a last commit, waiting for a broker's acknowledgements). On
    /// failure a writer that [holds rows](SinkWriter::delivers_on_write) keeps them for a retry.
    fn finish(&mut self) -> Result<(), SinkError>;

    /// Whether a row counts as delivered when `write` accepts it (network clients, with their
    /// own queues, retries and audit logs) rather than at a flush or finish (files, whose failed
    /// flushes the sink operator retries).
    fn delivers_on_write(&self) -> bool {
        true
    }

    /// Whether writing waits on a network peer (a broker, a PLC). Such a writer runs on a
    /// thread of its own behind a bounded queue, so it never stalls a dataflow worker; one that
    /// only buffers or writes local files is written on the worker, which costs less than
    /// handing rows to another thread.
    fn waits(&self) -> bool {
        false
    }

    /// Rows delivered by flushes and finishes since the last call.
    fn take_delivered(&mut self) -> u64 {
        0
    }

    /// Rows taken and not delivered yet.
    fn held_rows(&self) -> u64 {
        0
    }

    /// Rows handed to a network client that the target has not acknowledged yet (nor
    /// dead-lettered). A checkpoint's cut waits until there are none, so every row before it
    /// is delivered: what follows it is delivered again after a crash (at least once, each
    /// message carrying its [`row_id`]).
    fn unacknowledged(&self) -> u64 {
        0
    }

    /// Makes everything taken so far durable and says how far the target got, for a checkpoint
    /// (a file's length; a warehouse's staged epochs and the rows awaiting the next one). What it
    /// stages becomes visible at [`SinkWriter::checkpoint_stored`]. Only sinks whose spec
    /// [resumes](crate::connector::SinkSpec::resumes) are asked. `cut` is the checkpoint's
    /// number ([`FINAL_CUT`](crate::checkpoint::FINAL_CUT) for a final part), the same for
    /// every writer of a sink, so writers that commit together can tell their parts apart.
    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        Err(SinkError::Broker {
            target: self.describe(),
            reason: "this sink cannot take part in checkpoints".into(),
        })
    }

    /// The checkpoint holding `part` (what [`SinkWriter::checkpoint`] returned) is stored: make
    /// what it staged visible. On failure it is asked again.
    fn checkpoint_stored(&mut self, _part: &[u8]) -> Result<(), SinkError> {
        Ok(())
    }
}
