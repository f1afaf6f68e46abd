//! The contract of a source: what the engine asks of every connector that reads.
//!
//! A connector opens one [`SourceReader`] per worker; the engine's source operator polls it for
//! [`Record`]s — rows with their event time, dead letters, rows about the device — and turns them
//! into streams, watermarks and counters ([`SourceMetrics`]). [`Poll`] says whether more is ready,
//! when to look again, that a live input must be retried, or that a replay failed or ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::row::{Datum, Row};

/// Schedules a reader's operator from another thread (a network client's), so that the worker
/// wakes when messages arrive instead of polling often.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// One item read from an input.
#[derive(Debug, Clone)]
pub enum Record {
    Row {
        row: Row,
        event_time: i64,
        /// The input partition (a Kafka partition), for per-partition watermarks; 0 for
        /// inputs with one stream per worker.
        partition: u32,
    },
    /// Input that could not be decoded: why, the raw text, and where it came from.
    Invalid {
        reason: String,
        raw: String,
        origin: String,
    },
    /// The input deleted the row with this key (a Kafka tombstone, a changelog's delete):
    /// `row` has the table's key columns, others may be null; `raw` is the input as read, for
    /// dead letters. Only tables read deletes; an append-only source sends one to its dead
    /// letters.
    Delete {
        row: Row,
        raw: String,
        origin: String,
    },
    /// A row about the input itself (a device's health), for `<source>_health`.
    Status { row: Row },
    /// The input was replaced under the reader (a followed file rotated, truncated or saved
    /// over): the records up to the reader's next idle poll are the new input's whole content.
    /// Sources simply read on; a table replaces its contents with them.
    Replaced { origin: String },
}

/// The row of a `<source>_errors` relation: `reason`, `raw`, `origin`.
pub fn dead_letter_row(reason: String, raw: String, origin: String) -> Row {
    vec![
        Datum::Utf8(reason.into()),
        Datum::Utf8(raw.into()),
        Datum::Utf8(origin.into()),
    ]
}

/// What a reader can say after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// More input may be available right away.
    Ready,
    /// Nothing now; poll again after this long.
    Idle(Duration),
    /// The input is exhausted (a bounded replay reached its end).
    Finished,
    /// A live input cannot be read now (a followed file removed, a permission taken away, a
    /// disk error); poll again after this long. Nothing is lost: the reader resumes where it was.
    Retry { after: Duration, problem: String },
    /// A bounded input cannot be read to its end: the run fails rather than pass off what was
    /// read as the whole input.
    Failed(String),
}

/// A partition of an input, read by one worker.
pub trait SourceReader {
    /// Appends up to `max_records` records to `out`.
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll;

    /// Whether the input read so far is all it holds now, after an idle poll: a table applies
    /// its first load (or a replaced file's content) only then, so joins never see it half
    /// loaded. An input whose idle polls can come before its backlog (a Kafka consumer still
    /// being assigned its partitions) says so here.
    fn caught_up(&self) -> bool {
        true
    }

    /// Wall-clock time (nanoseconds) for live inputs whose event time follows the clock; `None`
    /// for replays. An idle live partition advances its watermark to this minus the delay.
    fn processing_time(&self) -> Option<i64> {
        None
    }

    /// Receives a handle that schedules this reader's operator from another thread, for
    /// readers fed by a network client: the client wakes the worker when messages arrive
    /// rather than the worker polling often.
    fn set_waker(&mut self, _waker: Waker) {}

    /// The partitions this reader is currently assigned (Kafka), each of which holds the
    /// watermark back until it has been read; empty for inputs without partitions.
    fn assigned_partitions(&self) -> &[u32] {
        &[]
    }

    /// Where the reader is, for a checkpoint: everything it returned from `poll` so far lies
    /// before this position, and a reader started from it (`SourceStart::resume`) returns
    /// exactly what would have come next. `None` for readers that cannot resume.
    fn position(&self) -> Option<Vec<u8>> {
        None
    }

    /// The checkpoint holding `position` (what [`SourceReader::position`] said) is stored: a
    /// reader that commits positions elsewhere (a Kafka consumer group) commits it now.
    fn checkpoint_stored(&mut self, _position: &[u8]) {}
}

/// Counters of one source, shared by its workers and read by the engine's reporting.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub rows: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late_rows: AtomicU64,
    /// For sources with a network connection (`networked`): whether it is up, and how often
    /// it failed.
    pub networked: AtomicBool,
    pub connected: AtomicBool,
    pub connection_errors: AtomicU64,
    /// Times a poll could not read the input (each retry of a live input counts).
    pub read_errors: AtomicU64,
    /// Why the input cannot be read right now (a live input retrying), for `/healthz`.
    pub problem: std::sync::Mutex<Option<String>>,
    /// Why a bounded input could not be read to its end: the run fails with this.
    pub failure: std::sync::Mutex<Option<String>>,
    /// Each worker's watermark (dataflow time, ms); the source's is the least of them.
    watermarks: std::sync::Mutex<Vec<u64>>,
}

impl SourceMetrics {
    /// Records worker `worker`'s watermark (dataflow time, milliseconds).
    pub fn set_watermark(&self, worker: usize, peers: usize, millis: u64) {
        let mut watermarks = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        watermarks.resize(peers, 0);
        watermarks[worker] = millis;
    }

    /// Why the source cannot read now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the source failed for good, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a poll's outcome: logs when the input starts or stops failing (once per change,
    /// never once per retry), counts retries, and keeps the problem for `/healthz`.
    pub fn observe(&self, name: &str, worker: usize, poll: &Poll) {
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        match poll {
            Poll::Retry {
                after,
                problem: now,
            } => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                if problem.as_deref() != Some(now.as_str()) {
                    tracing::warn!(
                        source = name,
                        worker,
                        retry_in = ?after,
                        "cannot read the input, retrying: {now}"
                    );
                    *problem = Some(now.clone());
                }
            }
            Poll::Failed(reason) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = name, worker, "cannot read the input: {reason}");
                *problem = Some(reason.clone());
                let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert_with(|| reason.clone());
            }
            Poll::Ready | Poll::Idle(_) | Poll::Finished => {
                if let Some(was) = problem.take() {
                    tracing::info!(
                        source = name,
                        worker,
                        "reading the input again (was: {was})"
                    );
                }
            }
        }
    }

    /// The source's watermark in milliseconds since the epoch, once every worker has one.
    pub fn watermark_millis(&self) -> Option<u64> {
        let watermarks = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        watermarks.iter().copied().min().filter(|&least| least > 0)
    }
}

/// Time-related settings every source has (`WATERMARK FOR` and `WITH` options).
#[derive(Debug, Clone)]
pub struct SourceTiming {
    pub watermark_delay_nanos: i64,
    pub allowed_lateness_nanos: i64,
    /// An idle live partition stops holding the watermark back after this long.
    pub idle_timeout: Duration,
    pub batch_size: usize,
}

/// Readers of one kind, one per worker, as the engine takes them.
/// The reader of a worker that another process of the cluster runs, for a source whose
/// readers connect once per process: that process's reader does the reading, and this one,
/// which the engine drops unpolled, holds nothing.
pub struct ReadByAnotherProcess;

impl SourceReader for ReadByAnotherProcess {
    fn poll(&mut self, _out: &mut Vec<Record>, _max_records: usize) -> Poll {
        Poll::Idle(Duration::from_secs(3600))
    }
}

pub fn boxed_readers<R: SourceReader + Send + 'static>(
    readers: impl IntoIterator<Item = R>,
) -> Vec<Box<dyn SourceReader + Send>> {
    readers
        .into_iter()
        .map(|reader| Box::new(reader) as Box<dyn SourceReader + Send>)
        .collect()
}

/// How far a replay has got, for a progress bar: bytes read by worker 0, and the input's size.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    pub bytes_read: AtomicU64,
    pub total_bytes: AtomicU64,
}
