//! The sink operator: what a sink receives goes to the workers holding its writers, which write
//! it in order of dataflow time, flush as the frontier moves on and finish (a last commit) when
//! it closes.
//!
//! Most sinks have one writer, on worker 0: funnelling to one worker keeps one file (one
//! connection) per sink and costs little, as sinks see final window rows or changes, far fewer
//! than the readings that made them. A warehouse has one writer on each worker of process 0:
//! each worker writes the rows it computed (a worker of another process sends its rows to one
//! of them), and the writers commit together (`SinkSpec::writers`). A writer that waits on a
//! network peer (a broker, a PLC) runs on a thread of its own behind a bounded queue
//! (`writer_thread`), so its worker does not wait with it.
//!
//! A sink that cannot deliver (a full disk, a commit that fails) loses nothing: the writer keeps
//! what it could not write, the operator tries again with backoff, and meanwhile holds its output
//! frontier where the trouble began. The run's flow control watches that frontier, so sources
//! stop reading once they are far enough ahead, instead of filling memory. The trouble is logged
//! once when it begins and once when it ends, and shown on `/healthz`. A run stopped while its
//! sink still cannot deliver ends with an error that says how many rows were not delivered.

use std::borrow::Borrow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{Scope, Stream};
use vibelux_operators::row::{Row, Update};

use vibelux_interfaces::checkpoint::{FINAL_CUT, Participant};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::wire::Wire;

use delivery::Delivery;

mod delivery;
mod writer_thread;

/// How a sink operator hands one batch of its input to the writer.
type WriteBatch<D> = Box<dyn FnMut(&mut dyn SinkWriter, &mut [D], &SinkMetrics) + Send>;

/// The first wait after a sink could not deliver; it doubles up to [`LONGEST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// How often a writer holding rows for a rollover is asked to flush when no rows arrive.
const HELD_ROWS_CHECK: Duration = Duration::from_secs(1);

/// How often a sink looks whether the checkpoint holding its staged rows is stored.
const CHECKPOINT_CHECK: Duration = Duration::from_millis(10);
/// How often a cut waiting for a network target's acknowledgements looks again.
const ACKNOWLEDGEMENT_CHECK: Duration = Duration::from_millis(5);
/// How often a sink whose writer's queue is full looks again, in case it missed the writer's
/// thread waking it when the queue has room.
const ROOM_CHECK: Duration = Duration::from_millis(100);

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Rows delivered: in the file, committed to the warehouse, accepted by the broker.
    pub rows_written: AtomicU64,
    /// Rows the target refused (a network sink's dead letters).
    pub write_errors: AtomicU64,
    /// Attempts to deliver (flush, commit) that failed; each retry counts.
    pub delivery_errors: AtomicU64,
    /// Rows still held when the run stopped while the sink could not deliver.
    pub undelivered: AtomicU64,
    /// The sink gave up delivering: the run stopped while it failed, or a network client's
    /// last flush failed (its own retries are spent).
    pub gave_up: AtomicBool,
    /// Why the sink cannot deliver now, while it cannot.
    stalled: Mutex<Option<String>>,
}

impl SinkMetrics {
    /// Why the sink cannot deliver now, if it cannot.
    pub fn stalled(&self) -> Option<String> {
        self.stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a delivery attempt; logs only when the sink starts or stops failing, or fails
    /// for a new reason.
    fn observe(&self, target: &str, result: &Result<(), SinkError>) {
        let mut stalled = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if let Some(was) = stalled.take() {
                    tracing::info!(%target, "the sink delivers again (was: {was})");
                }
            }
            Err(error) => {
                self.delivery_errors.fetch_add(1, Ordering::Relaxed);
                let now = error.to_string();
                if stalled.as_deref() != Some(now.as_str()) {
                    tracing::error!(%target, "the sink cannot deliver; holding its rows and retrying: {now}");
                    *stalled = Some(now);
                }
            }
        }
    }
}

/// Writes a stream into a sink. `writer` is `Some` on the workers that write
/// ([`SinkControls::writers`]). The returned stream carries
/// no data: its frontier is what the sink has delivered, for flow control.
pub trait WriteRowsExt<'scope> {
    fn write_rows(
        self,
        writer: Option<Box<dyn SinkWriter>>,
        metrics: Arc<SinkMetrics>,
        controls: SinkControls,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// What a sink operator answers to besides its writer.
#[derive(Clone)]
pub struct SinkControls {
    /// Set when the run stops: a sink that still cannot deliver then gives up.
    pub stop: Arc<AtomicBool>,
    /// With the writer, when the run checkpoints.
    pub checkpointing: Option<Participant>,
    /// How many workers write (workers 0 to `writers - 1`, in process 0): each of them writes
    /// its own rows, and another worker sends its rows to one of them.
    pub writers: usize,
    /// The run is a cluster: rows from other processes reach the writers, in the compact form
    /// of [`Wire`] (a wrapper a run alone does without, as it would only cost an operator).
    pub crosses_processes: bool,
}

/// Writes a changelog into a sink, one line per change. `writer` is `Some` on the workers
/// that write.
pub trait WriteUpdatesExt<'scope> {
    fn write_updates(
        self,
        writer: Option<Box<dyn SinkWriter>>,
        metrics: Arc<SinkMetrics>,
        controls: SinkControls,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// Counts one `write`: delivered for network clients (files count at flush), or refused.
fn record(writer: &dyn SinkWriter, metrics: &SinkMetrics, result: Result<(), SinkError>) {
    match result {
        Ok(()) => {
            if writer.delivers_on_write() {
                metrics.rows_written.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(error) => {
            if metrics.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(%error, target = %writer.describe(), "sink write failed");
            }
        }
    }
}

impl<'scope> WriteRowsExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn write_rows(
        self,
        writer: Option<Box<dyn SinkWriter>>,
        metrics: Arc<SinkMetrics>,
        controls: SinkControls,
    ) -> Stream<'scope, u64, Vec<Row>> {
        if controls.crosses_processes {
            deliver(
                self.map(Wire),
                "WriteRows",
                writer,
                metrics,
                controls,
                write_rows,
            )
        } else {
            deliver(self, "WriteRows", writer, metrics, controls, write_rows)
        }
    }
}

fn write_rows<D: Borrow<Row>>(writer: &mut dyn SinkWriter, data: &mut [D], metrics: &SinkMetrics) {
    for row in data.iter() {
        let result = writer.write(row.borrow(), true);
        record(writer, metrics, result);
    }
}

impl<'scope> WriteUpdatesExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn write_updates(
        self,
        writer: Option<Box<dyn SinkWriter>>,
        metrics: Arc<SinkMetrics>,
        controls: SinkControls,
    ) -> Stream<'scope, u64, Vec<Row>> {
        if controls.crosses_processes {
            deliver(
                self.map(Wire),
                "WriteChangelog",
                writer,
                metrics,
                controls,
                write_changes,
            )
        } else {
            deliver(
                self,
                "WriteChangelog",
                writer,
                metrics,
                controls,
                write_changes,
            )
        }
    }
}

fn write_changes<D: Borrow<Update>>(
    writer: &mut dyn SinkWriter,
    data: &mut [D],
    metrics: &SinkMetrics,
) {
    // Each time's changes consolidated (a row inserted and deleted at one time is not written),
    // deletes first: a changelog replayed line by line never holds both the old and the new
    // version of a row, nor deletes one before its insertion.
    let mut changes: Vec<(u64, &Row, i64)> = data
        .iter()
        .map(|update| {
            let (row, time, diff) = update.borrow();
            (*time, row, *diff)
        })
        .collect();
    changes.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    changes.dedup_by(|later, earlier| {
        let same = (later.0, later.1) == (earlier.0, earlier.1);
        if same {
            earlier.2 += later.2;
        }
        same
    });
    changes.retain(|(_, _, diff)| *diff != 0);
    changes.sort_by_key(|(time, _, diff)| (*time, *diff));
    for (_, row, diff) in changes {
        for _ in 0..diff.unsigned_abs() {
            let result = writer.write(row, diff > 0);
            record(writer, metrics, result);
        }
    }
}

/// The sink operator shared by rows and changelogs: `write_batch` hands a batch to the writer;
/// this delivers it (flush, or finish when the input closes), retrying what fails. In a cluster
/// the rows arrive wrapped in [`Wire`].
///
/// In a checkpointed run, rows stamped at or after a cut being taken wait until everything
/// before it is delivered and the writer has said how far it got (its part); what the writer
/// staged for a checkpoint it makes visible once the checkpoint is stored. When the input ends,
/// the writer's last part is final, and the sink lives on until the run's last checkpoint is
/// stored.
fn deliver<'scope, D>(
    stream: Stream<'scope, u64, Vec<D>>,
    name: &str,
    writer: Option<Box<dyn SinkWriter>>,
    metrics: Arc<SinkMetrics>,
    controls: SinkControls,
    write_batch: impl FnMut(&mut dyn SinkWriter, &mut [D], &SinkMetrics) + Send + 'static,
) -> Stream<'scope, u64, Vec<Row>>
where
    D: timely::ExchangeData + Send,
{
    let SinkControls {
        stop,
        checkpointing,
        writers,
        crosses_processes: _,
    } = controls;
    let scope: Scope<'scope, u64> = stream.scope();
    // Rows stay on the worker that computed them when it writes; timely sends a batch to the
    // worker its route names, modulo the number of workers.
    let route = (scope.index() % writers.max(1)) as u64;
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(address.clone());
    let mut writer = writer.map(|writer| {
        Delivery::of(writer, Box::new(write_batch), metrics.clone(), || {
            scope.worker().sync_activator_for(address.to_vec())
        })
    });
    let mut input = builder.new_input(stream, Exchange::new(move |_: &D| route));
    let (output, delivered) = builder.new_output::<Vec<Row>>();
    builder.build_reschedule(move |mut capabilities| {
        // Held at the input frontier while the sink delivers, and where it was while it cannot.
        let mut standing = capabilities.pop();
        let mut retry_after = FIRST_RETRY;
        let mut failing = false;
        let _output = output;
        let mut waiting: Vec<Vec<D>> = Vec::new();
        let mut answered = 0;
        // The part of the last checkpoint answered, until it is stored and made visible.
        let mut to_make_visible: Option<(u64, Vec<u8>)> = None;
        // The writer's final part, once left.
        let mut final_part: Option<Vec<u8>> = None;
        move |frontiers| {
            let mut wrote = false;
            // A writer on its own thread whose queue is full takes nothing more for now: the
            // input stays queued, holding the frontier (and through flow control, the sources).
            if writer.as_ref().is_none_or(Delivery::has_room) {
                input.for_each(|time, data| {
                    let Some(open) = writer.as_mut() else { return };
                    let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                    if let (Some(cut), Some(&now)) = (cut, time.least())
                        && now >= cut.time
                    {
                        waiting.push(std::mem::take(data));
                        return;
                    }
                    open.write_batch(data);
                    wrote = true;
                });
            } else {
                activator.activate_after(ROOM_CHECK);
            }
            let frontier = frontiers[0].frontier();
            let closed = frontier.is_empty();
            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
            let mut cut_due = cut.filter(|cut| !frontier.less_than(&cut.time));
            // A network client answers a cut once the target has acknowledged every row before
            // it; the rows after the cut wait meanwhile (and the writer is not finished).
            let awaiting_acknowledgements = cut_due.is_some()
                && writer.as_ref().is_some_and(|open| open.unacknowledged() > 0);
            if awaiting_acknowledgements {
                cut_due = None;
                activator.activate_after(ACKNOWLEDGEMENT_CHECK);
            }
            // Rows held for a rollover (a warehouse epoch) are looked at on the clock too, so a
            // quiet stream still commits when its `rollover` interval has passed.
            let holding = writer.as_ref().is_some_and(|open| open.held_rows() > 0);
            let stored = checkpointing.as_ref().map_or(0, |p| p.checkpoints.completed());
            let visible_due = to_make_visible.as_ref().is_some_and(|(id, _)| stored >= *id);
            if let Some(open) = writer.as_mut()
                && final_part.is_none()
                && (wrote || closed || failing || holding || cut_due.is_some() || visible_due)
            {
                // A writer is finished once, after the rows that waited for a cut are written:
                // a network client's finish closes its connection.
                let finishing = closed && cut_due.is_none() && !awaiting_acknowledgements;
                let mut result = if finishing {
                    open.finish()
                } else {
                    open.flush()
                };
                if result.is_ok()
                    && let (Some(participant), Some(cut)) = (&checkpointing, cut_due)
                {
                    // Everything before the cut is delivered: how far the writer got is its part.
                    result = open.checkpoint(cut.id).map(|part| {
                        participant.submit(cut, part.clone());
                        answered = cut.id;
                        to_make_visible = Some((cut.id, part));
                        for mut data in waiting.drain(..) {
                            open.write_batch(&mut data);
                        }
                    });
                    if result.is_ok() && closed {
                        result = open.finish();
                    }
                }
                if result.is_ok()
                    && let Some((id, part)) = &to_make_visible
                    && stored >= *id
                {
                    result = open.checkpoint_stored(part);
                    if result.is_ok() {
                        to_make_visible = None;
                    }
                }
                if result.is_ok()
                    && closed
                    && !awaiting_acknowledgements
                    && let Some(participant) = &checkpointing
                {
                    result = open.checkpoint(FINAL_CUT).map(|part| {
                        participant.submit_final(part.clone());
                        final_part = Some(part);
                    });
                }
                metrics
                    .rows_written
                    .fetch_add(open.take_delivered(), Ordering::Relaxed);
                metrics.observe(&open.describe(), &result);
                failing = result.is_err();
                if !failing {
                    retry_after = FIRST_RETRY;
                    if closed && final_part.is_none() && !awaiting_acknowledgements {
                        writer = None;
                    } else if open.held_rows() > 0 {
                        activator.activate_after(HELD_ROWS_CHECK);
                    }
                    if to_make_visible.is_some() {
                        activator.activate_after(CHECKPOINT_CHECK);
                    }
                } else if stop.load(Ordering::Relaxed) || open.delivers_on_write() {
                    // The run is stopping, or a network client has spent its own retries: give
                    // up, and say what was not delivered.
                    let held = open.held_rows();
                    metrics.undelivered.fetch_add(held, Ordering::Relaxed);
                    metrics.gave_up.store(true, Ordering::Relaxed);
                    tracing::error!(target = %open.describe(), "giving up with {held} rows not delivered");
                    if let Some(participant) = &checkpointing {
                        // Its part could not say what it delivered: the run resumes from the
                        // last checkpoint stored, which produces these rows again.
                        participant
                            .checkpoints
                            .spoil(&participant.key, format!("{held} rows not delivered"));
                    }
                    writer = None;
                    failing = false;
                } else {
                    activator.activate_after(retry_after);
                    retry_after = (retry_after * 2).min(LONGEST_RETRY);
                }
            }
            // The input has ended and the final part is left: wait for the run's last
            // checkpoint, then make what it staged visible.
            if let (Some(open), Some(part), Some(participant)) =
                (writer.as_mut(), &final_part, &checkpointing)
            {
                match participant.checkpoints.final_stored() {
                    Some(true) => {
                        let result = open.checkpoint_stored(part);
                        metrics
                            .rows_written
                            .fetch_add(open.take_delivered(), Ordering::Relaxed);
                        metrics.observe(&open.describe(), &result);
                        if result.is_ok() || stop.load(Ordering::Relaxed) {
                            writer = None;
                        } else {
                            activator.activate_after(retry_after);
                            retry_after = (retry_after * 2).min(LONGEST_RETRY);
                        }
                    }
                    // Not stored: what this run staged since the last stored checkpoint is left
                    // hidden, and a restart produces those rows again.
                    Some(false) => writer = None,
                    None => activator.activate_after(CHECKPOINT_CHECK),
                }
            }
            if !failing {
                match (frontier.first(), standing.as_mut()) {
                    (Some(time), Some(capability)) => capability.downgrade(time),
                    (None, _) => standing = None,
                    (Some(_), None) => {}
                }
            }
            writer.is_some()
        }
    });
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::operators::core::Input;
    use timely::dataflow::operators::vec::input::Handle as InputHandle;
    use vibelux_interfaces::row::Datum;

    /// A writer to a target that takes each row only when the test lets it (a broker that
    /// is away), and says which rows it got.
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: mpsc::Sender<i64>,
    }

    impl SinkWriter for Gate {
        fn describe(&self) -> String {
            "gate".into()
        }
        fn waits(&self) -> bool {
            true
        }
        fn write(&mut self, row: &Row, _insert: bool) -> Result<(), SinkError> {
            // Waited on for long, the gate is blocking the worker itself: fail, not hang.
            let (open, changed) = &*self.open;
            let open = open.lock().unwrap();
            let (open, waited) = changed
                .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
                .unwrap();
            assert!(*open && !waited.timed_out(), "the gate stayed shut");
            if let Datum::Int64(n) = row[0] {
                self.written.send(n).unwrap();
            }
            Ok(())
        }
        fn finish(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_waits_stalls_neither_the_worker_nor_memory_and_loses_nothing() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (written, arrived) = mpsc::channel();
        let gate = Gate {
            open: open.clone(),
            written,
        };
        let metrics = Arc::new(SinkMetrics::default());
        let rounds = 40_u64;
        let per_round = 2_000_i64;
        timely::execute_directly(move |worker| {
            let mut input = InputHandle::<u64, Row>::new();
            let probe = worker.dataflow(|scope| {
                let controls = SinkControls {
                    stop: Arc::new(AtomicBool::new(false)),
                    checkpointing: None,
                    writers: 1,
                    crosses_processes: false,
                };
                scope
                    .input_from(&mut input)
                    .write_rows(Some(Box::new(gate)), metrics.clone(), controls)
                    .probe()
                    .0
            });
            // The gate is shut: the worker goes on stepping (an operator that waited on the
            // gate would block it here), and once its queue is full the sink takes no more:
            // its frontier stays at the first rows it did not take, which is what holds the
            // sources back.
            for round in 0..rounds {
                for i in 0..per_round {
                    input.send(vec![Datum::Int64(round as i64 * per_round + i)]);
                }
                input.advance_to(round + 1);
                for _ in 0..10 {
                    worker.step();
                }
            }
            let held_at = probe.with_frontier(|f| f.first().copied());
            let held_at = held_at.expect("the sink is still open");
            let queued_rounds = super::writer_thread::QUEUE_ROWS.div_ceil(per_round as u64);
            assert!(
                held_at <= queued_rounds + 1,
                "the sink took {held_at} rounds of rows, more than its queue holds"
            );
            // Opened, every row arrives once, in order.
            *open.0.lock().unwrap() = true;
            open.1.notify_all();
            drop(input);
            while !probe.done() {
                worker.step();
            }
        });
        let rows: Vec<i64> = arrived.try_iter().collect();
        assert_eq!(rows, (0..rounds as i64 * per_round).collect::<Vec<_>>());
    }

    #[test]
    fn a_sink_that_cannot_deliver_is_logged_once_per_reason_and_clears_when_it_can() {
        let metrics = SinkMetrics::default();
        let full = || {
            Err(SinkError::Io {
                path: "out/rows.jsonl".into(),
                source: std::io::Error::other("No space left on device"),
            })
        };
        metrics.observe("out", &full());
        metrics.observe("out", &full());
        assert_eq!(metrics.delivery_errors.load(Ordering::Relaxed), 2);
        assert!(metrics.stalled().unwrap().contains("No space left"));
        metrics.observe("out", &Ok(()));
        assert_eq!(metrics.stalled(), None);
    }
}
