//! Equi-joins of updating relations on differential-dataflow arrangements.
//!
//! Each side is arranged by its key: a trace of `(key, row, time, diff)` in sorted batches that
//! differential-dataflow merges as they age, and that any number of readers can share. The join
//! itself is differential's `join_core`, which meets each new batch of one side with the other
//! side's trace as of the batch's time, so every pair appears exactly once whatever the
//! interleaving, and a retracted table row retracts exactly what it produced.
//!
//! Outer, semi and anti joins are built from the same arrangements: the set of keys present on
//! a side (a `distinct` over its keys) tells which rows of the other side match; a side's
//! unmatched rows are its rows minus its matched ones, padded with NULLs. Rows with a NULL key
//! match nothing (SQL), so they never enter an arrangement: an outer join gives them padded, an
//! anti join gives them, other joins drop them. `INTERSECT`/`EXCEPT` match NULLs with each
//! other instead ([`Outer::nulls_match`]).
//!
//! Interval joins between two streams stay on [`crate::join`], whose state leaves as the
//! watermark passes; an arrangement keeps what it is given until it is retracted.
//!
//! **Checkpoints.** A trace is read at a cut `C` once both arrangements' frontiers reach it: the
//! updates before `C`, consolidated, in key order. Restoring feeds those rows back into the
//! arrangements at time 0. That alone would emit again every pair the restored rows make with
//! each other, which the operators downstream already hold; so the same join is also built over
//! the restored rows alone, its output negated, and the two cancel: what leaves at time 0 is
//! settled (consolidated) before it goes on, and only what rows arriving at time 0 changed
//! survives.

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, ToStream};
use timely::progress::frontier::AntichainRef;
use vibelux_interfaces::checkpoint::{Participant, encode, routed_to};

use crate::join::Outer;
use crate::row::{Datum, Row, Update};

/// A relation's rows by key: `(key columns, the row's columns)`, counted.
pub type RowArrangement<'scope> = Arranged<'scope, TraceAgent<ValSpine<Row, Row, u64, i64>>>;

type Keyed<'scope> = VecCollection<'scope, u64, (Row, Row), i64>;
type Rows<'scope> = VecCollection<'scope, u64, Row, i64>;

/// What a join's arrangements held before a cut: `(key, row, count)` per side, in key order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ArrangedPart {
    left: Vec<(Row, Row, i64)>,
    right: Vec<(Row, Row, i64)>,
}

pub trait ArrangedJoinExt<'scope> {
    /// Joins two update streams laid out as `key columns ++ row` on their first `key_columns`
    /// columns; the output is the left row then the right row (or, for a semi or anti join, the
    /// left row). With `checkpointing`, both arrangements take part in checkpoints and are
    /// restored from the one the run resumes from.
    fn join_arranged(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        outer: Outer,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> ArrangedJoinExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn join_arranged(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        outer: Outer,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        let scope = self.scope();
        let keyed = move |updates: Stream<'scope, u64, Vec<Update>>| {
            updates
                .as_collection()
                .map(move |row: Row| split(row, key_columns))
        };
        let (left, right) = (keyed(self), keyed(other));
        let restored: Vec<ArrangedPart> =
            Participant::restored_parts(checkpointing.as_ref(), "join");
        // Every worker builds the same dataflow: whether it restores depends on the checkpoint,
        // which every worker reads alike, not on how many rows this worker's share holds.
        let joined = if restored.is_empty() {
            let (joined, left, right) = relational_join(left, right, outer);
            take_part_in_checkpoints(&left, &right, checkpointing);
            joined
        } else {
            let (worker, peers) = (scope.index(), scope.peers());
            let (mut restored_left, mut restored_right) = (Vec::new(), Vec::new());
            for part in restored {
                // Another worker count: every worker reads every old part and feeds the keys its
                // arrangement holds now (the exchange would route them anyway; this keeps each
                // row fed once).
                let ours = |(key, _, _): &(Row, Row, i64)| routed_to(key.hashed(), worker, peers);
                restored_left.extend(part.left.into_iter().filter(ours));
                restored_right.extend(part.right.into_iter().filter(ours));
            }
            let at_time_zero = |rows: Vec<(Row, Row, i64)>| -> Keyed<'scope> {
                rows.into_iter()
                    .map(|(key, row, count)| ((key, row), 0u64, count))
                    .to_stream(scope)
                    .container::<Vec<_>>()
                    .as_collection()
            };
            let (restored_left, restored_right) =
                (at_time_zero(restored_left), at_time_zero(restored_right));
            let (joined, left, right) = relational_join(
                left.concat(restored_left.clone()),
                right.concat(restored_right.clone()),
                outer,
            );
            take_part_in_checkpoints(&left, &right, checkpointing);
            let (already_downstream, _, _) = relational_join(restored_left, restored_right, outer);
            settle_time_zero(joined.concat(already_downstream.negate()).inner).as_collection()
        };
        joined.inner
    }
}

/// The join of two keyed collections with `outer`'s semantics, and the two arrangements it
/// reads.
fn relational_join<'scope>(
    left: Keyed<'scope>,
    right: Keyed<'scope>,
    outer: Outer,
) -> (Rows<'scope>, RowArrangement<'scope>, RowArrangement<'scope>) {
    // NULL-keyed rows never reach the arrangements; `payloads(left)` below still counts them,
    // so outer and anti joins give them as unmatched.
    let matchable =
        move |(key, _): &(Row, Row)| outer.nulls_match || !key.iter().any(Datum::is_null);
    let left_rows = left.clone().filter(matchable);
    let right_rows = right.clone().filter(matchable);
    let left_arranged = left_rows.clone().arrange_by_key_named("JoinLeft");
    let right_arranged = right_rows.clone().arrange_by_key_named("JoinRight");
    // The rows of `rows` whose key `others` holds, once per row whatever the number of matches.
    let matched = |rows: &RowArrangement<'scope>, others: &Keyed<'scope>| -> Rows<'scope> {
        let present = others
            .clone()
            .map(|(key, _)| key)
            .distinct_core::<i64>()
            .arrange_by_self_named("JoinKeysPresent");
        rows.clone()
            .join_core(present, |_key, row: &Row, _| Some(row.clone()))
    };
    let payloads = |rows: Keyed<'scope>| rows.map(|(_, row)| row);
    let joined = match outer.left_rows_matching {
        Some(true) => matched(&left_arranged, &right_rows),
        Some(false) => payloads(left.clone()).concat(matched(&left_arranged, &right_rows).negate()),
        None => {
            let mut joined = left_arranged
                .clone()
                .join_core(right_arranged.clone(), |_key, left: &Row, right: &Row| {
                    Some(concat(left, right))
                });
            if outer.keep_left {
                let unmatched =
                    payloads(left.clone()).concat(matched(&left_arranged, &right_rows).negate());
                joined = joined.concat(unmatched.map(move |row| outer.padded(&row, true)));
            }
            if outer.keep_right {
                let unmatched =
                    payloads(right.clone()).concat(matched(&right_arranged, &left_rows).negate());
                joined = joined.concat(unmatched.map(move |row| outer.padded(&row, false)));
            }
            joined
        }
    };
    (joined, left_arranged, right_arranged)
}

/// Reads both arrangements into the checkpoint at each cut (see the module), and keeps the
/// traces compacting: this reader holds them back only as far as the next cut needs.
fn take_part_in_checkpoints<'scope>(
    left: &RowArrangement<'scope>,
    right: &RowArrangement<'scope>,
    checkpointing: Option<Participant>,
) {
    let Some(participant) = checkpointing else {
        return;
    };
    let (mut left_trace, mut right_trace) = (left.trace.clone(), right.trace.clone());
    left.stream
        .clone()
        .binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            right.stream.clone(),
            Pipeline,
            Pipeline,
            "JoinCheckpoint",
            move |_, _| {
                let mut answered = 0;
                let mut finished = false;
                // The latest time a batch was stamped at, for the final part.
                let mut arrived_up_to = 0u64;
                move |(left_input, left_frontier), (right_input, right_frontier), _output| {
                    let mut note =
                        |time: &Capability<u64>| arrived_up_to = arrived_up_to.max(*time.time());
                    left_input.for_each(|time, _| {
                        if let Some(at) = time.retain_least(0) {
                            note(&at);
                        }
                    });
                    right_input.for_each(|time, _| {
                        if let Some(at) = time.retain_least(0) {
                            note(&at);
                        }
                    });
                    let (left_frontier, right_frontier) =
                        (left_frontier.frontier(), right_frontier.frontier());
                    if let Some(cut) = participant.pending(answered)
                        && !left_frontier.less_than(&cut.time)
                        && !right_frontier.less_than(&cut.time)
                    {
                        let part = ArrangedPart {
                            left: contents_before(&mut left_trace, cut.time),
                            right: contents_before(&mut right_trace, cut.time),
                        };
                        participant.submit(cut, encode(&part));
                        answered = cut.id;
                    }
                    if left_frontier.is_empty() && right_frontier.is_empty() && !finished {
                        finished = true;
                        let part = ArrangedPart {
                            left: contents_before(&mut left_trace, u64::MAX),
                            right: contents_before(&mut right_trace, u64::MAX),
                        };
                        participant.submit_final_after(encode(&part), arrived_up_to);
                    }
                    // Times before the frontier may now be merged: a cut still to come lies beyond
                    // every time a source holds, so beyond this frontier too. An input that ended
                    // keeps its trace readable for the final part, until both have.
                    let (left_frontier, right_frontier) = match finished {
                        true => (AntichainRef::new(&[]), AntichainRef::new(&[])),
                        false => (left_frontier, right_frontier),
                    };
                    for (trace, frontier) in [
                        (&mut left_trace, left_frontier),
                        (&mut right_trace, right_frontier),
                    ] {
                        if !frontier.is_empty() || finished {
                            trace.set_logical_compaction(frontier);
                            trace.set_physical_compaction(frontier);
                        }
                    }
                }
            },
        );
}

/// The rows a trace holds from updates before `cut`, counted, in key order.
fn contents_before(
    trace: &mut TraceAgent<ValSpine<Row, Row, u64, i64>>,
    cut: u64,
) -> Vec<(Row, Row, i64)> {
    let spans = trace
        .spans_through(AntichainRef::new(&[]))
        .expect("a trace can always be read to its end");
    let (mut cursor, storage) =
        cursor_list(spans.into_iter().filter_map(|span| span.inner).collect());
    let mut contents = Vec::new();
    while cursor.key_valid(&storage) {
        while cursor.val_valid(&storage) {
            let mut count = 0;
            cursor.map_times(&storage, |time, diff| {
                if *time < cut {
                    count += *diff;
                }
            });
            if count != 0 {
                contents.push((
                    cursor.key(&storage).clone(),
                    cursor.val(&storage).clone(),
                    count,
                ));
            }
            cursor.step_val(&storage);
        }
        cursor.step_key(&storage);
    }
    contents
}

/// Holds the updates stamped at time 0 until nothing more can come at it, then lets out only
/// what does not cancel; later updates pass straight through.
fn settle_time_zero<'scope>(
    updates: Stream<'scope, u64, Vec<Update>>,
) -> Stream<'scope, u64, Vec<Update>> {
    updates.unary_frontier(Pipeline, "SettleRestored", |_, _| {
        let mut held: Option<(Capability<u64>, Vec<Update>)> = None;
        let mut settled = false;
        move |(input, frontier), output| {
            input.for_each(|time, data| {
                let Some(at) = time.retain_least(0) else {
                    return;
                };
                if *at.time() == 0 && !settled {
                    let (_, waiting) = held.get_or_insert_with(|| (at.clone(), Vec::new()));
                    waiting.append(data);
                } else {
                    output.session(&at).give_container(data);
                }
            });
            if !settled && !frontier.frontier().less_equal(&0) {
                settled = true;
                if let Some((at, mut waiting)) = held.take() {
                    differential_dataflow::consolidation::consolidate_updates(&mut waiting);
                    if !waiting.is_empty() {
                        output.session(&at).give_container(&mut waiting);
                    }
                }
            }
        }
    })
}

fn split(mut row: Row, key_columns: usize) -> (Row, Row) {
    let payload = row.split_off(key_columns);
    (row, payload)
}

fn concat(left: &Row, right: &Row) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend_from_slice(left);
    row.extend_from_slice(right);
    row
}
