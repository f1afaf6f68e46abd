//! The source operator: one reader per worker, watermarks, dead letters and late rows.
//!
//! Every connector's reader implements [`SourceReader`] (the contract lives in
//! `vibelux-interfaces` and is re-exported here); this module turns a reader into four timely
//! streams: admitted rows, dead letters (input that could not be decoded, with the reason and the
//! raw text), late rows (beyond the allowed lateness) and rows about the device.
//! It owns the worker's [`WorkerWatermark`] and holds its capability at the watermark, so the
//! dataflow frontier is the watermark (see docs/architecture.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use vibelux_interfaces::checkpoint::{Checkpoints, SourcePart, SourceTurn, encode};
pub use vibelux_interfaces::source::{
    Poll, Record, ReplayProgress, SourceMetrics, SourceReader, SourceTiming, Waker, dead_letter_row,
};
use vibelux_operators::row::Row;

use crate::watermark::{Admission, WatermarkState, WorkerWatermark};

/// How far (event-time milliseconds) a source may run ahead of what the sinks have finished.
pub const FLOW_CONTROL_LAG_MILLIS: u64 = 10 * 60 * 1000;

/// The outputs of a source.
pub struct SourceStreams<'scope> {
    pub rows: Stream<'scope, u64, Vec<Row>>,
    pub dead_letters: Stream<'scope, u64, Vec<Row>>,
    pub late_rows: Stream<'scope, u64, Vec<Row>>,
    /// Rows about the input itself (`Record::Status`), for sources that have them.
    pub status_rows: Stream<'scope, u64, Vec<Row>>,
}

/// The furthest event time (milliseconds) any source of this process has reached: the time a
/// change to a tailed table takes effect. Tables do not follow the wall clock alone, which a
/// simulation running 60× (or data dated ahead) overtakes: a table held at the wall clock would
/// then hold back every window after it.
#[derive(Debug, Default)]
pub struct EventClock(AtomicU64);

impl EventClock {
    pub fn advance(&self, time: u64) {
        self.0.fetch_max(time, Ordering::Relaxed);
    }

    pub fn latest(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a source operator answers to besides its reader.
pub struct SourceControls {
    /// Set to stop the run: the source drops its capabilities.
    pub stop: Arc<AtomicBool>,
    /// What the sinks and views have finished, for flow control (`None`: paced by a clock).
    pub flow: Option<ProbeHandle<u64>>,
    pub checkpointing: Option<SourceCheckpointing>,
    /// Advanced by sources as their watermarks move; read by tables.
    pub event_clock: Arc<EventClock>,
}

/// How a source takes part in checkpoints (see `vibelux_interfaces::checkpoint`).
pub struct SourceCheckpointing {
    pub checkpoints: Arc<Checkpoints>,
    /// The key of its part, registered as a source.
    pub key: String,
    /// The watermark state it resumes with.
    pub restored: Option<WatermarkState>,
}

/// Builds the operator reading `reader` on this worker.
pub fn read_source<'scope>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: Box<dyn SourceReader>,
    timing: SourceTiming,
    metrics: Arc<SourceMetrics>,
    controls: SourceControls,
) -> SourceStreams<'scope> {
    let SourceControls {
        stop,
        flow,
        mut checkpointing,
        event_clock,
    } = controls;
    let (worker, peers) = (scope.index(), scope.peers());
    let name = name.to_string();
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let address = builder.operator_info().address;
    let activator = scope.worker().sync_activator_for(address.to_vec());
    reader.set_waker(Arc::new(move || {
        let _ = activator.activate();
    }));
    let activator = scope.activator_for(address);
    let (rows_output, rows) = builder.new_output();
    let (dead_output, dead_letters) = builder.new_output();
    let (late_output, late_rows) = builder.new_output();
    let (status_output, status_rows) = builder.new_output();
    let mut rows_output = OutputBuilder::from(rows_output);
    let mut status_output = OutputBuilder::from(status_output);
    let mut dead_output = OutputBuilder::from(dead_output);
    let mut late_output = OutputBuilder::from(late_output);

    builder.build_reschedule(move |capabilities| {
        let mut capabilities = Some(capabilities);
        // The position of the final part left, until the run's last checkpoint is stored (the
        // operator stays alive till then, to tell its reader).
        let mut final_position: Option<Vec<u8>> = None;
        let mut tracker = WorkerWatermark::new(
            timing.watermark_delay_nanos,
            timing.allowed_lateness_nanos,
            timing.idle_timeout,
        );
        // A resumed source starts where its watermark was, before it emits anything.
        let mut resume_at = None;
        if let Some(state) = checkpointing.as_mut().and_then(|c| c.restored.take()) {
            tracker.restore(state, Instant::now());
            resume_at = Some(tracker.dataflow_time());
        }
        let mut turn = SourceTurn::Free;
        // The position of the last part left, until its checkpoint is stored.
        let mut awaiting_storage: Option<(u64, Vec<u8>)> = None;
        let mut generation = u64::MAX;
        let mut records = Vec::with_capacity(timing.batch_size);
        move |_frontiers| {
            let mut step = || {
                let Some(caps) = capabilities.as_mut() else {
                    if let (Some(position), Some(checkpointing)) = (&final_position, &checkpointing)
                    {
                        match checkpointing.checkpoints.final_stored() {
                            Some(true) => {
                                reader.checkpoint_stored(position);
                                final_position = None;
                            }
                            Some(false) => final_position = None,
                            None => activator.activate_after(Duration::from_millis(10)),
                        }
                    }
                    return;
                };
                if let Some(time) = resume_at.take().filter(|time| time > caps[0].time()) {
                    for capability in caps.iter_mut() {
                        capability.downgrade(&time);
                    }
                    metrics.set_watermark(worker, peers, time);
                    event_clock.advance(time);
                }
                if let Some(checkpointing) = &checkpointing {
                    // The checkpoint holding the last position is stored: tell the reader.
                    if let Some((id, position)) = &awaiting_storage
                        && checkpointing.checkpoints.completed() >= *id
                    {
                        reader.checkpoint_stored(position);
                        awaiting_storage = None;
                    }
                    let now = checkpointing.checkpoints.generation();
                    if now != generation || turn != SourceTurn::Free {
                        generation = now;
                        turn = checkpointing
                            .checkpoints
                            .source_turn(&checkpointing.key, *caps[0].time());
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    final_position = leave_final_part(
                        &checkpointing,
                        reader.as_ref(),
                        &tracker,
                        false,
                        *caps[0].time(),
                    );
                    activator.activate_after(Duration::from_millis(10));
                    capabilities = None;
                    return;
                }
                // Flow control: timely queues have no bound, so a replay that outruns the sinks
                // would fill memory. Wait while the dataflow's output lags this source by too much
                // event time.
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
                            Record::Delete { raw, origin, .. } => dead.push(dead_letter_row(
                                "a deletion, which only a table reads: a source's rows are \
                                 appended and never taken back"
                                    .to_string(),
                                raw,
                                origin,
                            )),
                            Record::Status { row } => status.push(row),
                            Record::Replaced { origin } => {
                                tracing::info!(
                                    source = %name,
                                    "reading {origin} from its start: the file was replaced"
                                )
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
                        final_position = leave_final_part(
                            &checkpointing,
                            reader.as_ref(),
                            &tracker,
                            true,
                            *caps[0].time(),
                        );
                        activator.activate_after(Duration::from_millis(10));
                        capabilities = None;
                        return;
                    }
                    Poll::Failed(_) => {
                        // Windows still open would be written as if complete: stop the whole run
                        // as Ctrl-C does, and let it end with the failure.
                        final_position = leave_final_part(
                            &checkpointing,
                            reader.as_ref(),
                            &tracker,
                            false,
                            *caps[0].time(),
                        );
                        activator.activate_after(Duration::from_millis(10));
                        stop.store(true, Ordering::Relaxed);
                        capabilities = None;
                        return;
                    }
                }
                tracker.update(now, reader.processing_time());
                let time = tracker.dataflow_time();
                match turn {
                    // A cut is being agreed: the capability stays where it was reported.
                    SourceTurn::Hold => {
                        activator.activate_after(Duration::from_millis(1));
                        return;
                    }
                    // Everything emitted so far is stamped before the cut: this is the position.
                    SourceTurn::Cut(cut) if time >= cut.time => {
                        if let Some(checkpointing) = &checkpointing {
                            let part = source_part(reader.as_ref(), &tracker, false);
                            checkpointing.checkpoints.submit(
                                &checkpointing.key,
                                cut.id,
                                encode(&part),
                            );
                            awaiting_storage = Some((cut.id, part.position));
                        }
                        turn = SourceTurn::Free;
                    }
                    SourceTurn::Cut(_) | SourceTurn::Free => {}
                }
                if *caps[0].time() < time {
                    for capability in caps.iter_mut() {
                        capability.downgrade(&time);
                    }
                    metrics.set_watermark(worker, peers, time);
                    event_clock.advance(time);
                }
            };
            step();
            final_position.is_some()
        }
    });
    SourceStreams {
        rows,
        dead_letters,
        late_rows,
        status_rows,
    }
}

fn source_part(reader: &dyn SourceReader, tracker: &WorkerWatermark, finished: bool) -> SourcePart {
    SourcePart {
        position: reader
            .position()
            .expect("checkpointed runs read only sources that resume"),
        state: encode(&tracker.state()),
        finished,
    }
}

/// The source's input has ended (read to its end, or the run stops): this part stands for it
/// in every checkpoint from now on. Returns its position, for the reader once it is stored.
/// Leaves the source's final part; `emitted_up_to` is the time its capability held last, the
/// latest of every row it emitted.
fn leave_final_part(
    checkpointing: &Option<SourceCheckpointing>,
    reader: &dyn SourceReader,
    tracker: &WorkerWatermark,
    finished: bool,
    emitted_up_to: u64,
) -> Option<Vec<u8>> {
    let checkpointing = checkpointing.as_ref()?;
    let part = source_part(reader, tracker, finished);
    let position = part.position.clone();
    checkpointing
        .checkpoints
        .submit_final_after(&checkpointing.key, encode(&part), emitted_up_to);
    Some(position)
}
