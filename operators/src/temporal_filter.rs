//! Temporal filters: `WHERE ts > now() - INTERVAL '1 hour'` as a relation that holds the rows of
//! the last hour, in event time.
//!
//! `now()` here is the watermark: the event time up to which the input is complete. A row enters
//! when it arrives (if it is not already too old) and is retracted when the watermark passes
//! `ts + horizon`, so downstream aggregates and live views hold "the last hour per zone" and
//! update as readings arrive and age out (Materialize's `mz_now()`, on event time). The output
//! is an updating relation; the state is the rows not yet retracted, by the time they leave. A
//! stopped run keeps them (its frontier runs out because its sources stop, not because time
//! passed), so the next run goes on with the same last hour.
//!
//! The input may update too (the windows of a windowed view, whose results change until they
//! close): `window_end > now() - h` holds of a row until `window_end + h` and never again, so
//! every change to a row still in passes and is kept, one to a row already out is dropped, and
//! at `window_end + h` what is left of the row is retracted. Changes are consolidated as they
//! accumulate, so the state is the view's rows of the interval, not every partial result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use vibelux_interfaces::checkpoint::Participant;

use crate::row::{Row, Update};

/// Which rows stay: those whose event time (column `time`) is after `now() - horizon`, or at it
/// too when `inclusive` (`>=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalFilter {
    pub time: usize,
    pub horizon_nanos: i64,
    pub inclusive: bool,
}

impl TemporalFilter {
    /// The dataflow time (ms of watermark) from which the row no longer passes: `ts > now - h`
    /// holds while `now < ts + h`; `ts >= now - h` while `now <= ts + h`.
    fn leaves_at(&self, row: &Row) -> Option<u64> {
        let ts = row[self.time].as_timestamp_nanos()?;
        let end = ts.saturating_add(self.horizon_nanos);
        // Watermarks move in whole milliseconds: the first one at which the row is out.
        let millis = match self.inclusive {
            false => end.div_euclid(1_000_000) + i64::from(end.rem_euclid(1_000_000) != 0),
            true => end.div_euclid(1_000_000) + 1,
        };
        Some(u64::try_from(millis).unwrap_or(0))
    }
}

/// What a checkpoint keeps: the rows still in, by the time they leave (a row in twice, twice).
#[derive(Serialize, Deserialize)]
struct Checkpointed {
    leaving: Vec<(u64, Vec<Row>)>,
}

pub trait TemporalFilterExt<'scope> {
    /// Rows in while they are recent, retracted when the watermark leaves them behind.
    /// With `checkpointing`, the rows still in take part in checkpoints; from the moment the run
    /// is stopped (`stop`) they stay in, for the next run to go on with.
    fn temporal_filter(
        self,
        filter: Arc<TemporalFilter>,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

/// An input's items as a row and how many times it is added (negative: taken away).
trait Counted: Clone + 'static {
    /// Whether rows only ever arrive (nothing to consolidate).
    const APPENDS: bool;
    fn counted(self) -> (Row, i64);
}

impl Counted for Row {
    const APPENDS: bool = true;
    fn counted(self) -> (Row, i64) {
        (self, 1)
    }
}

impl Counted for Update {
    const APPENDS: bool = false;
    fn counted(self) -> (Row, i64) {
        (self.0, self.2)
    }
}

impl<'scope> TemporalFilterExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn temporal_filter(
        self,
        filter: Arc<TemporalFilter>,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        build(self, filter, stop, checkpointing)
    }
}

impl<'scope> TemporalFilterExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn temporal_filter(
        self,
        filter: Arc<TemporalFilter>,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        build(self, filter, stop, checkpointing)
    }
}

fn build<'scope, D: Counted>(
    stream: Stream<'scope, u64, Vec<D>>,
    filter: Arc<TemporalFilter>,
    stop: Arc<AtomicBool>,
    checkpointing: Option<Participant>,
) -> Stream<'scope, u64, Vec<Update>> {
    let mut builder = OperatorBuilder::new("TemporalFilter".to_owned(), stream.scope());
    let mut input = builder.new_input(stream, Pipeline);
    let (output, updates) = builder.new_output();
    let mut output = OutputBuilder::from(output);
    builder.build(move |initial_capabilities| {
        let initial = &initial_capabilities[0];
        // Rows still in, by the dataflow time they leave at, with its capability.
        let mut leaving = Leaving::new();
        let restored: Vec<Checkpointed> =
            Participant::restored_parts(checkpointing.as_ref(), "temporal filter");
        for part in restored {
            for (at, rows) in part.leaving {
                leaving
                    .entry(at)
                    .or_insert_with(|| Bucket::new(initial.delayed(&at)))
                    .extend(rows.into_iter().map(|row| (row, 1)));
            }
        }
        // Batches stamped at or after a cut being taken wait here until the snapshot.
        let mut held: Vec<(Capability<u64>, Vec<D>)> = Vec::new();
        let mut answered = 0;
        let mut finished = false;
        let mut emitted_up_to = 0u64;
        move |frontiers| {
            let mut handle = output.activate();
            let frontier = frontiers[0].frontier();
            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
            input.for_each(|time, data| {
                let Some(at) = time.retain_least(0) else {
                    return;
                };
                if cut.is_some_and(|cut| *at.time() >= cut.time) {
                    held.push((at, std::mem::take(data)));
                    return;
                }
                let mut entering = enter(&filter, &mut leaving, &at, data);
                emitted_up_to = emitted_up_to.max(*at.time());
                handle.session(&at).give_container(&mut entering);
            });
            // Retract what the frontier has left behind, up to a cut being taken. A stopped
            // run's frontier moves on as its sources stop, not as time passes: from the
            // moment it stops, a checkpointed run keeps its rows in.
            let stopped = checkpointing.is_some() && stop.load(Ordering::Relaxed);
            let before = match (stopped, cut) {
                (true, _) => 0,
                (false, cut) => cut.map_or(u64::MAX, |cut| cut.time),
            };
            if let Some((capability, mut retractions)) = retract(&mut leaving, frontier, before) {
                emitted_up_to = emitted_up_to.max(*capability.time());
                handle.session(&capability).give_container(&mut retractions);
            }
            if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                && !frontier.less_than(&cut.time)
            {
                participant.submit(cut, checkpoint(&leaving));
                answered = cut.id;
                for (at, mut data) in held.drain(..) {
                    let mut entering = enter(&filter, &mut leaving, &at, &mut data);
                    emitted_up_to = emitted_up_to.max(*at.time());
                    handle.session(&at).give_container(&mut entering);
                }
                let before = if stopped { 0 } else { u64::MAX };
                if let Some((capability, mut retractions)) = retract(&mut leaving, frontier, before)
                {
                    emitted_up_to = emitted_up_to.max(*capability.time());
                    handle.session(&capability).give_container(&mut retractions);
                }
            }
            if frontier.is_empty() && !finished {
                finished = true;
                if let Some(participant) = &checkpointing {
                    participant.submit_final_after(checkpoint(&leaving), emitted_up_to);
                }
                leaving.clear();
            }
        }
    });
    updates
}

/// The rows that leave at one time, with the capability to retract them then.
struct Bucket {
    capability: Capability<u64>,
    rows: Vec<(Row, i64)>,
    /// Rows after the last consolidation: when they have doubled, consolidate again.
    consolidated: usize,
}

impl Bucket {
    fn new(capability: Capability<u64>) -> Self {
        Bucket {
            capability,
            rows: Vec::new(),
            consolidated: 0,
        }
    }

    fn extend(&mut self, rows: impl IntoIterator<Item = (Row, i64)>) {
        self.rows.extend(rows);
    }

    /// Adds a change; the changes of updating inputs are consolidated as they pile up, so a
    /// window that changed a thousand times is one row here.
    fn push<D: Counted>(&mut self, row: Row, count: i64) {
        self.rows.push((row, count));
        if !D::APPENDS && self.rows.len() >= 2 * self.consolidated.max(16) {
            self.consolidate();
        }
    }

    fn consolidate(&mut self) {
        differential_dataflow::consolidation::consolidate(&mut self.rows);
        self.consolidated = self.rows.len();
    }

    /// The rows in, as many times as they are in (a checkpoint's form).
    fn rows_in(&self) -> Vec<Row> {
        let mut rows = self.rows.clone();
        differential_dataflow::consolidation::consolidate(&mut rows);
        rows.into_iter()
            .flat_map(|(row, count)| std::iter::repeat_n(row, count.max(0) as usize))
            .collect()
    }
}

type Leaving = BTreeMap<u64, Bucket>;

/// Takes a batch stamped at `at`: the rows recent enough enter (or change) now and wait to
/// leave.
fn enter<D: Counted>(
    filter: &TemporalFilter,
    leaving: &mut Leaving,
    at: &Capability<u64>,
    data: &mut Vec<D>,
) -> Vec<Update> {
    let now = *at.time();
    let mut entering = Vec::with_capacity(data.len());
    for item in data.drain(..) {
        let (row, count) = item.counted();
        let Some(leaves) = filter.leaves_at(&row) else {
            continue;
        };
        if leaves <= now {
            continue; // already too old when it came
        }
        entering.push((row.clone(), now, count));
        leaving
            .entry(leaves)
            .or_insert_with(|| Bucket::new(at.delayed(&leaves)))
            .push::<D>(row, count);
    }
    entering
}

/// The retractions of the rows the frontier has left behind, before `before`, as one batch at
/// the earliest one's time (no frontier between them is ever seen, so nothing observes the
/// difference, and one batch per activation keeps the operators downstream from working row by
/// row).
fn retract(
    leaving: &mut Leaving,
    frontier: timely::progress::frontier::AntichainRef<'_, u64>,
    before: u64,
) -> Option<(Capability<u64>, Vec<Update>)> {
    let mut retracted: Option<(Capability<u64>, Vec<Update>)> = None;
    while let Some(entry) = leaving.first_entry() {
        if frontier.less_than(entry.key()) || *entry.key() >= before {
            break;
        }
        let mut bucket = entry.remove();
        // Rows that only arrived leave as they came; changes leave as what they add up to.
        if bucket.rows.iter().any(|(_, count)| *count != 1) {
            bucket.consolidate();
        }
        let (capability, all) = retracted.get_or_insert_with(|| (bucket.capability, Vec::new()));
        let at = *capability.time();
        all.extend(
            bucket
                .rows
                .into_iter()
                .map(|(row, count)| (row, at, -count)),
        );
    }
    retracted
}

fn checkpoint(leaving: &Leaving) -> Vec<u8> {
    vibelux_interfaces::checkpoint::encode(&Checkpointed {
        leaving: leaving
            .iter()
            .map(|(at, bucket)| (*at, bucket.rows_in()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Datum;

    #[test]
    fn a_row_leaves_when_the_watermark_reaches_its_time_plus_the_horizon() {
        let hour = 3_600_000_000_000i64;
        let row = vec![Datum::Timestamp(10 * hour + 1)];
        let after = TemporalFilter {
            time: 0,
            horizon_nanos: hour,
            inclusive: false,
        };
        // ts > now − 1 h holds while now < ts + 1 h: out from the first millisecond at or past it.
        assert_eq!(
            after.leaves_at(&row),
            Some((11 * hour / 1_000_000 + 1) as u64)
        );
        let exact = vec![Datum::Timestamp(10 * hour)];
        assert_eq!(
            after.leaves_at(&exact),
            Some((11 * hour / 1_000_000) as u64)
        );
        let from = TemporalFilter {
            inclusive: true,
            ..after
        };
        assert_eq!(
            from.leaves_at(&exact),
            Some((11 * hour / 1_000_000 + 1) as u64)
        );
        assert_eq!(from.leaves_at(&vec![Datum::Null]), None);
    }
}
