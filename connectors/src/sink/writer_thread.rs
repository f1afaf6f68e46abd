//! A writer on a thread of its own, fed through a bounded queue.
//!
//! A writer that waits (a Kafka producer whose local queue is full, an MQTT client whose
//! request queue is full, a PLC write verified by a read) would stall the dataflow worker that
//! calls it, and with it every other operator that worker runs. Here
//! the worker only hands batches over; the writer's thread writes them, flushes and answers
//! checkpoints in the order they were asked for.
//!
//! The queue is bounded in rows: once [`QUEUE_ROWS`] are waiting the sink operator stops
//! taking input ([`WriterThread::has_room`]). What it did not take holds its frontier, and the
//! run's flow control holds the sources back. Nothing is dropped and memory stays bounded.
//!
//! The thread wakes the sink operator when a flush starts or stops failing, so a failure is
//! seen even when no new rows arrive, and when a full queue has room again; waking it for every
//! batch written would cost a context switch each.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use timely::scheduling::SyncActivator;
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use super::{SinkMetrics, WriteBatch};

/// Rows that may wait for the writer's thread before the sink stops taking input.
pub const QUEUE_ROWS: u64 = 16_384;

/// How often an idle thread looks at its writer's acknowledgements (a network client's
/// acknowledgements arrive on the client's own threads).
const IDLE_LOOK: Duration = Duration::from_millis(5);

/// How long a stopping sink waits for its writer's thread to end.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What the sink operator asks and waits for.
enum Call {
    /// A checkpoint's part, for the cut numbered so.
    Checkpoint(u64),
    CheckpointStored(Vec<u8>),
    Finish,
}

struct State<D> {
    batches: VecDeque<Vec<D>>,
    /// Rows handed over and not yet written to the writer.
    queued: u64,
    flush_wanted: bool,
    call: Option<Call>,
    answer: Option<Result<Vec<u8>, SinkError>>,
    /// Why the last flush failed, until one succeeds.
    failure: Option<SinkError>,
    /// What the writer said it delivered since the operator last asked.
    delivered: u64,
    /// The writer's own held rows and unacknowledged rows, as last looked at.
    held: u64,
    unacknowledged: u64,
    /// The thread is writing or flushing something it took from the queue.
    busy: bool,
    stop: bool,
    /// The thread waits for work: a hand-over must wake it (otherwise it looks at the queue
    /// before it waits, and a wake-up would be a wasted system call).
    idle: bool,
    /// The writer panicked: its thread is gone.
    dead: bool,
    /// The thread has ended (after a stop, or a panic).
    ended: bool,
}

struct Shared<D> {
    state: Mutex<State<D>>,
    changed: Condvar,
}

impl<D> Shared<D> {
    fn lock(&self) -> MutexGuard<'_, State<D>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The operator's side: hands batches and calls over, reads what the thread published.
pub struct WriterThread<D: Send + 'static> {
    shared: Arc<Shared<D>>,
    thread: Option<JoinHandle<()>>,
    describe: String,
    delivers_on_write: bool,
}

impl<D: Send + 'static> WriterThread<D> {
    /// Moves `writer` to a new thread named after it; `wake` activates the sink operator.
    pub fn spawn(
        writer: Box<dyn SinkWriter>,
        write_batch: WriteBatch<D>,
        metrics: Arc<SinkMetrics>,
        wake: SyncActivator,
    ) -> std::io::Result<WriterThread<D>> {
        let describe = writer.describe();
        let delivers_on_write = writer.delivers_on_write();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batches: VecDeque::new(),
                queued: 0,
                flush_wanted: false,
                call: None,
                answer: None,
                failure: None,
                delivered: 0,
                held: writer.held_rows(),
                unacknowledged: writer.unacknowledged(),
                busy: false,
                stop: false,
                idle: false,
                dead: false,
                ended: false,
            }),
            changed: Condvar::new(),
        });
        let theirs = shared.clone();
        let target = describe.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink {describe}"))
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&theirs, writer, write_batch, &metrics, &wake);
                }));
                let mut state = theirs.lock();
                state.ended = true;
                theirs.changed.notify_all();
                if ran.is_err() {
                    // Whatever the operator waits for now fails, naming the sink, instead of
                    // waiting for ever.
                    state.dead = true;
                    let reason = "the sink's writer panicked".to_string();
                    state.failure = Some(SinkError::Broker { target, reason });
                    theirs.changed.notify_all();
                    let _ = wake.activate();
                }
            })?;
        Ok(WriterThread {
            shared,
            thread: Some(thread),
            describe,
            delivers_on_write,
        })
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    pub fn delivers_on_write(&self) -> bool {
        self.delivers_on_write
    }

    /// Whether the queue takes more rows now.
    pub fn has_room(&self) -> bool {
        let state = self.shared.lock();
        state.queued < QUEUE_ROWS && !state.dead
    }

    /// Hands a batch over (leaving `data` empty).
    pub fn write_batch(&mut self, data: &mut Vec<D>) {
        if data.is_empty() {
            return;
        }
        let batch = std::mem::take(data);
        let mut state = self.shared.lock();
        state.queued += batch.len() as u64;
        state.batches.push_back(batch);
        if state.idle {
            self.shared.changed.notify_all();
        }
    }

    /// Asks for a flush once what was handed over is written; answers how the last one went,
    /// so a failure stays an error until a flush succeeds.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        let mut state = self.shared.lock();
        state.flush_wanted = true;
        if state.idle {
            self.shared.changed.notify_all();
        }
        match &state.failure {
            Some(failure) => Err(duplicate(failure)),
            None => Ok(()),
        }
    }

    /// Flushes and makes everything durable for a checkpoint (the writer's part), waiting.
    pub fn checkpoint(&mut self, cut: u64) -> Result<Vec<u8>, SinkError> {
        self.call(Call::Checkpoint(cut))
    }

    pub fn checkpoint_stored(&mut self, part: &[u8]) -> Result<(), SinkError> {
        self.call(Call::CheckpointStored(part.to_vec())).map(drop)
    }

    /// Writes what is queued and finishes the writer, waiting.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        self.call(Call::Finish).map(drop)
    }

    pub fn take_delivered(&mut self) -> u64 {
        std::mem::take(&mut self.shared.lock().delivered)
    }

    /// Rows queued here and held by the writer.
    pub fn held_rows(&self) -> u64 {
        let state = self.shared.lock();
        state.queued + state.held
    }

    /// Rows not yet written or not yet acknowledged by the target: a checkpoint's cut waits
    /// until there are none, and then the writer's thread has nothing left to do.
    pub fn unacknowledged(&self) -> u64 {
        let state = self.shared.lock();
        let working = u64::from(state.busy || state.flush_wanted || !state.batches.is_empty());
        state.queued + state.unacknowledged + working
    }

    fn call(&mut self, call: Call) -> Result<Vec<u8>, SinkError> {
        let mut state = self.shared.lock();
        state.call = Some(call);
        state.answer = None;
        self.shared.changed.notify_all();
        loop {
            if let Some(answer) = state.answer.take() {
                return answer;
            }
            if state.dead
                && let Some(failure) = &state.failure
            {
                return Err(duplicate(failure));
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<D: Send + 'static> Drop for WriterThread<D> {
    /// Stops the thread after what is queued (a network client then says its goodbyes as it
    /// is dropped there). A writer stuck on its target for longer than [`STOP_WAIT`] is left
    /// behind, so a stopping run is not held up for ever by a target that never answers.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stop = true;
        self.shared.changed.notify_all();
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !state.ended {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                tracing::error!(
                    target = %self.describe,
                    "the sink's writer did not stop within {STOP_WAIT:?}; leaving it behind"
                );
                return;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's thread: writes batches in order, then a wanted flush, then a call.
///
/// It wakes the sink operator only for what the operator does not look at on its own: a flush
/// that starts or stops failing, and room in a queue that was full (the operator polls while it
/// waits for acknowledgements or room, and a call's answer wakes the caller).
fn run<D>(
    shared: &Shared<D>,
    mut writer: Box<dyn SinkWriter>,
    mut write_batch: WriteBatch<D>,
    metrics: &SinkMetrics,
    wake: &SyncActivator,
) {
    let given_up = AtomicBool::new(false);
    let mut state = shared.lock();
    loop {
        if !state.batches.is_empty() {
            let batches = std::mem::take(&mut state.batches);
            state.busy = true;
            drop(state);
            let mut rows = 0;
            for mut batch in batches {
                rows += batch.len() as u64;
                write_batch(writer.as_mut(), &mut batch, metrics);
            }
            state = shared.lock();
            let was_full = state.queued >= QUEUE_ROWS;
            state.queued -= rows;
            state.busy = false;
            look_at(&mut state, writer.as_mut());
            if was_full && state.queued < QUEUE_ROWS {
                wake_operator(wake, &given_up);
            }
        } else if state.flush_wanted {
            state.flush_wanted = false;
            state.busy = true;
            drop(state);
            let result = writer.flush();
            state = shared.lock();
            let was_failing = state.failure.is_some();
            state.failure = result.err();
            state.busy = false;
            look_at(&mut state, writer.as_mut());
            if was_failing != state.failure.is_some() {
                wake_operator(wake, &given_up);
            }
        } else if let Some(call) = state.call.take() {
            drop(state);
            let answer = match call {
                Call::Checkpoint(cut) => writer.flush().and_then(|()| writer.checkpoint(cut)),
                Call::CheckpointStored(part) => writer.checkpoint_stored(&part).map(|()| part),
                Call::Finish => writer.finish().map(|()| Vec::new()),
            };
            state = shared.lock();
            state.failure = answer.as_ref().err().map(duplicate);
            state.answer = Some(answer);
            look_at(&mut state, writer.as_mut());
            shared.changed.notify_all();
        } else if state.stop {
            break;
        } else {
            state.idle = true;
            state = shared
                .changed
                .wait_timeout(state, IDLE_LOOK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.idle = false;
            look_at(&mut state, writer.as_mut());
        }
    }
    drop(state);
    // Dropped here, on this thread: a network client's goodbyes do not hold up a worker.
    drop(writer);
}

/// Publishes what the operator reads of the writer.
fn look_at<D>(state: &mut State<D>, writer: &mut dyn SinkWriter) {
    state.delivered += writer.take_delivered();
    state.held = writer.held_rows();
    state.unacknowledged = writer.unacknowledged();
}

/// Activates the sink operator; a run whose dataflow is gone no longer listens.
fn wake_operator(wake: &SyncActivator, given_up: &AtomicBool) {
    if !given_up.load(Ordering::Relaxed) && wake.activate().is_err() {
        given_up.store(true, Ordering::Relaxed);
    }
}

/// A copy of an error, for saying it again until it clears.
fn duplicate(error: &SinkError) -> SinkError {
    match error {
        SinkError::Io { path, source } => SinkError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        SinkError::Broker { target, reason } => SinkError::Broker {
            target: target.clone(),
            reason: reason.clone(),
        },
    }
}
