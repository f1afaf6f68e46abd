//! The source operator: one reader per worker, watermarks, dead letters and late rows.
//!
//! Every source kind (simulator, files, later MQTT and Kafka) implements [`SourceReader`]; this
//! module turns a reader into three timely streams: admitted rows, dead letters (input that could
//! not be decoded, with the reason and the raw text) and late rows (beyond the allowed lateness).
//! It owns the worker's [`WorkerWatermark`] and holds its capability at the watermark, so the
//! dataflow frontier is the watermark (see docs/architecture.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use vibelux_operators::row::{Datum, Row};

use crate::watermark::{Admission, WorkerWatermark};

/// How far (event-time milliseconds) a source may run ahead of what the sinks have finished.
pub const FLOW_CONTROL_LAG_MILLIS: u64 = 10 * 60 * 1000;

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

    /// Wall-clock time (nanoseconds) for live inputs whose event time follows the clock; `None`
    /// for replays. An idle live partition advances its watermark to this minus the delay.
    fn processing_time(&self) -> Option<i64> {
        None
    }

    /// Receives a handle that schedules this reader's operator from another thread, for
    /// readers fed by a network client: the client wakes the worker when messages arrive
    /// rather than the worker polling often.
    fn set_waker(&mut self, _waker: timely::scheduling::SyncActivator) {}

    /// The partitions this reader is currently assigned (Kafka), each of which holds the
    /// watermark back until it has been read; empty for inputs without partitions.
    fn assigned_partitions(&self) -> &[u32] {
        &[]
    }
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
    fn set_watermark(&self, worker: usize, peers: usize, millis: u64) {
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

/// The outputs of a source.
pub struct SourceStreams<'scope> {
    pub rows: Stream<'scope, u64, Vec<Row>>,
    pub dead_letters: Stream<'scope, u64, Vec<Row>>,
    pub late_rows: Stream<'scope, u64, Vec<Row>>,
    /// Rows about the input itself (`Record::Status`), for sources that have them.
    pub status_rows: Stream<'scope, u64, Vec<Row>>,
}

/// Builds the operator reading `reader` on this worker.
pub fn read_source<'scope>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: Box<dyn SourceReader>,
    timing: SourceTiming,
    metrics: Arc<SourceMetrics>,
    stop: Arc<AtomicBool>,
    flow: Option<ProbeHandle<u64>>,
) -> SourceStreams<'scope> {
    let (worker, peers) = (scope.index(), scope.peers());
    let name = name.to_string();
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let address = builder.operator_info().address;
    reader.set_waker(scope.worker().sync_activator_for(address.to_vec()));
    let activator = scope.activator_for(address);
    let (rows_output, rows) = builder.new_output();
    let (dead_output, dead_letters) = builder.new_output();
    let (late_output, late_rows) = builder.new_output();
    let (status_output, status_rows) = builder.new_output();
    let mut rows_output = OutputBuilder::from(rows_output);
    let mut status_output = OutputBuilder::from(status_output);
    let mut dead_output = OutputBuilder::from(dead_output);
    let mut late_output = OutputBuilder::from(late_output);

    builder.build(move |capabilities| {
        let mut capabilities = Some(capabilities);
        let mut tracker = WorkerWatermark::new(
            timing.watermark_delay_nanos,
            timing.allowed_lateness_nanos,
            timing.idle_timeout,
        );
        let mut records = Vec::with_capacity(timing.batch_size);
        move |_frontiers| {
            let Some(caps) = capabilities.as_mut() else {
                return;
            };
            if stop.load(Ordering::Relaxed) {
                capabilities = None;
                return;
            }
            // Flow control: timely queues have no bound, so a replay that outruns the sinks would
            // fill memory. Wait while the dataflow's output lags this source by too much event time.
            let time = *caps[0].time();
            if let Some(probe) = &flow
                && probe.less_than(&time.saturating_sub(FLOW_CONTROL_LAG_MILLIS))
            {
                activator.activate_after(Duration::from_millis(1));
                return;
            }
            let now = Instant::now();
            for &partition in reader.assigned_partitions() {
                tracker.expect(partition, now);
            }
            let poll = reader.poll(&mut records, timing.batch_size);
            if !records.is_empty() {
                let mut admitted = Vec::with_capacity(records.len());
                let mut late = Vec::new();
                let mut dead = Vec::new();
                let mut status = Vec::new();
                for record in records.drain(..) {
                    match record {
                        Record::Row {
                            row,
                            event_time,
                            partition,
                        } => match tracker.admit(partition, event_time, now) {
                            Admission::Admitted => admitted.push(row),
                            Admission::Late => late.push(row),
                        },
                        Record::Invalid {
                            reason,
                            raw,
                            origin,
                        } => dead.push(dead_letter_row(reason, raw, origin)),
                        Record::Status { row } => status.push(row),
                        Record::Replaced { origin } => {
                            tracing::info!(source = %name, "reading {origin} from its start: the file was replaced")
                        }
                    }
                }
                metrics
                    .rows
                    .fetch_add(admitted.len() as u64, Ordering::Relaxed);
                metrics
                    .late_rows
                    .fetch_add(late.len() as u64, Ordering::Relaxed);
                metrics
                    .dead_letters
                    .fetch_add(dead.len() as u64, Ordering::Relaxed);
                if !admitted.is_empty() {
                    rows_output
                        .activate()
                        .session(&caps[0])
                        .give_container(&mut admitted);
                }
                if !dead.is_empty() {
                    dead_output
                        .activate()
                        .session(&caps[1])
                        .give_container(&mut dead);
                }
                if !late.is_empty() {
                    late_output
                        .activate()
                        .session(&caps[2])
                        .give_container(&mut late);
                }
                if !status.is_empty() {
                    status_output
                        .activate()
                        .session(&caps[3])
                        .give_container(&mut status);
                }
            }
            metrics.observe(&name, worker, &poll);
            match poll {
                Poll::Ready => activator.activate(),
                Poll::Idle(wait) | Poll::Retry { after: wait, .. } => {
                    activator.activate_after(wait)
                }
                Poll::Finished => {
                    capabilities = None;
                    return;
                }
                Poll::Failed(_) => {
                    // Windows still open would be written as if complete: stop the whole run
                    // as Ctrl-C does, and let it end with the failure.
                    stop.store(true, Ordering::Relaxed);
                    capabilities = None;
                    return;
                }
            }
            tracker.update(now, reader.processing_time());
            let time = tracker.dataflow_time();
            if *caps[0].time() < time {
                for capability in caps.iter_mut() {
                    capability.downgrade(&time);
                }
                metrics.set_watermark(worker, peers, time);
            }
        }
    });
    SourceStreams {
        rows,
        dead_letters,
        late_rows,
        status_rows,
    }
}
