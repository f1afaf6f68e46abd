//! Equi-joins of updating relations on differential-dataflow arrangements.
//!
//! Each input is arranged by its key ([`arrange_rows`]): a trace of `(key, row, time, diff)` in
//! sorted batches that differential-dataflow merges as they age. An arrangement is built once
//! per relation and key and read by every join on it: a second view joining the same table on
//! the same key adds no second copy of the table, and two views joining the readings to two
//! tables by zone share the readings. The join itself ([`join_arranged`]) is differential's
//! `join_core`, which meets each new batch of one side with the other side's trace as of the
//! batch's time, so every pair appears exactly once whatever the interleaving, and a retracted
//! table row retracts exactly what it produced.
//!
//! Outer, semi and anti joins read the same arrangements: the keys present on a side (a
//! `distinct` of its arrangement's keys, built once per arrangement) tell which rows of the
//! other side match; a side's unmatched rows are its rows minus its matched ones, padded with
//! NULLs. Rows with a NULL key match nothing (SQL), so they never enter an arrangement: an
//! outer join gives them padded, an anti join gives them, other joins drop them.
//! `INTERSECT`/`EXCEPT` match NULLs with each other ([`Outer::nulls_match`]), and arrange them.
//!
//! Interval joins between two streams stay on [`crate::interval_join`], whose state leaves as
//! the watermark passes; an arrangement keeps what it is given until it is retracted.
//!
//! **Checkpoints.** An arrangement is read at a cut `C` once its frontier reaches it: the
//! updates before `C`, consolidated, in key order. Restoring feeds those rows back in at time 0.
//! A join reading restored arrangements would then emit again every pair the restored rows
//! make with each other, which the operators downstream of it already hold; so when the join
//! itself was in the checkpoint (its part marks that, and holds nothing else), the same join is
//! also built over the restored rows alone, its output negated, and the two cancel: what leaves
//! at time 0 is settled (consolidated) before it goes on, and only what rows arriving at time 0
//! changed survives. A join new to the checkpoint gives everything: downstream of it is new too.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, ToStream};
use timely::progress::frontier::AntichainRef;
use vibelux_interfaces::checkpoint::{Participant, encode, routed_to};

use crate::row::{Datum, Row, Update};

/// Which unmatched rows a join keeps (`LEFT`, `RIGHT`, `FULL OUTER`), and how wide each side's
/// rows are, for the NULLs that pad them; or, for a semi or anti join, which left rows it gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outer {
    pub keep_left: bool,
    pub keep_right: bool,
    pub left_width: usize,
    pub right_width: usize,
    /// A semi join (`IN`, `EXISTS`, `INTERSECT`) gives the left rows that match
    /// (`Some(true)`), an anti join (`NOT EXISTS`, `EXCEPT`) those that do not (`Some(false)`):
    /// left columns only, once each, whatever the number of matches.
    #[serde(default)]
    pub left_rows_matching: Option<bool>,
    /// Whether NULL keys match each other (`INTERSECT`, `EXCEPT`), instead of nothing.
    #[serde(default)]
    pub nulls_match: bool,
}

impl Outer {
    /// A row of one side padded with NULLs where the other side's columns go.
    pub(crate) fn padded(&self, payload: &Row, is_left: bool) -> Row {
        let nulls = |width: usize| vec![Datum::Null; width];
        match is_left {
            true => concat(payload, &nulls(self.right_width)),
            false => concat(&nulls(self.left_width), payload),
        }
    }
}

/// A relation's rows by key: `(key columns, the row's columns)`, counted.
type RowArrangement<'scope> = Arranged<'scope, TraceAgent<ValSpine<Row, Row, u64, i64>>>;
/// The keys present in a relation.
type KeyArrangement<'scope> = Arranged<'scope, TraceAgent<KeySpine<Row, u64, i64>>>;

type Keyed<'scope> = VecCollection<'scope, u64, (Row, Row), i64>;
type Rows<'scope> = VecCollection<'scope, u64, Row, i64>;

/// One relation arranged by its first columns, for the joins that read it.
#[derive(Clone)]
pub struct ArrangedRows<'scope> {
    arranged: RowArrangement<'scope>,
    /// The rows restored from a checkpoint (fed in at time 0), when there was one.
    restored: Option<Keyed<'scope>>,
    /// Whether NULL keys were arranged (they match each other).
    nulls_match: bool,
    /// The keys present, once an outer, semi or anti join has asked: built once for all.
    keys: Rc<RefCell<Option<KeyArrangement<'scope>>>>,
}

impl<'scope> ArrangedRows<'scope> {
    fn new(
        arranged: RowArrangement<'scope>,
        restored: Option<Keyed<'scope>>,
        nulls_match: bool,
    ) -> Self {
        ArrangedRows {
            arranged,
            restored,
            nulls_match,
            keys: Rc::default(),
        }
    }

    /// The keys the arrangement holds rows of (a positive count), once each.
    fn keys_present(&self) -> KeyArrangement<'scope> {
        self.keys
            .borrow_mut()
            .get_or_insert_with(|| {
                self.arranged
                    .clone()
                    .as_collection(|key: &Row, _| key.clone())
                    .distinct_core::<i64>()
                    .arrange_by_self_named("JoinKeysPresent")
            })
            .clone()
    }
}

/// What an arrangement held before a cut: `(key, row, count)` in key order.
#[derive(Debug, Default, Deserialize)]
struct ArrangementPart {
    rows: Vec<(Row, Row, i64)>,
}

/// Arranges updates laid out as `key columns ++ row` by their first `key_columns` columns; NULL
/// keys only with `nulls_match`. With `checkpointing`, the arrangement takes part in
/// checkpoints and is restored from the one the run resumes from.
pub fn arrange_rows<'scope>(
    updates: Stream<'scope, u64, Vec<Update>>,
    key_columns: usize,
    nulls_match: bool,
    checkpointing: Option<Participant>,
) -> ArrangedRows<'scope> {
    let scope = updates.scope();
    let rows = keyed(updates, key_columns).filter(move |pair| matchable(pair, nulls_match));
    let parts: Vec<ArrangementPart> =
        Participant::restored_parts(checkpointing.as_ref(), "join arrangement");
    // Every worker builds the same dataflow: whether it restores depends on the checkpoint,
    // which every worker reads alike, not on how many rows this worker's share holds.
    let restored = (!parts.is_empty()).then(|| {
        let (worker, peers) = (scope.index(), scope.peers());
        // Another worker count: every worker reads every old part and feeds the keys the
        // exchange now routes to it, so each row is fed once.
        let ours = |(key, _, _): &(Row, Row, i64)| routed_to(key.hashed(), worker, peers);
        let rows: Vec<((Row, Row), u64, i64)> = parts
            .into_iter()
            .flat_map(|part| part.rows)
            .filter(ours)
            .map(|(key, row, count)| ((key, row), 0, count))
            .collect();
        rows.to_stream(scope).container::<Vec<_>>().as_collection()
    });
    let fed = match &restored {
        Some(restored) => rows.concat(restored.clone()),
        None => rows,
    };
    let arranged = fed.arrange_by_key_named("JoinInput");
    if let Some(participant) = checkpointing {
        take_part_in_checkpoints(&arranged, participant);
    }
    ArrangedRows::new(arranged, restored, nulls_match)
}

/// Joins two relations, each given as its update stream (laid out as `key columns ++ row`) and
/// its arrangement, with `outer`'s semantics; the output is the left row then the right row
/// (or, for a semi or anti join, the left row). With `checkpointing`, the join marks its
/// presence in checkpoints (see the module).
pub fn join_arranged<'scope>(
    (left_updates, left): (Stream<'scope, u64, Vec<Update>>, &ArrangedRows<'scope>),
    (right_updates, right): (Stream<'scope, u64, Vec<Update>>, &ArrangedRows<'scope>),
    key_columns: usize,
    outer: Outer,
    checkpointing: Option<Participant>,
) -> Stream<'scope, u64, Vec<Update>> {
    assert!(
        left.nulls_match == outer.nulls_match && right.nulls_match == outer.nulls_match,
        "a join reads arrangements made for its NULL semantics"
    );
    let scope = left_updates.scope();
    let with_restored = |updates, side: &ArrangedRows<'scope>| {
        let rows = keyed(updates, key_columns);
        match &side.restored {
            Some(restored) => rows.concat(restored.clone()),
            None => rows,
        }
    };
    let joined = relational_join(
        (with_restored(left_updates, left), left),
        (with_restored(right_updates, right), right),
        outer,
    );
    let Some(participant) = checkpointing else {
        return joined.inner;
    };
    let was_checkpointed =
        !Participant::restored_parts::<bool>(Some(&participant), "join").is_empty();
    let joined = match was_checkpointed {
        true => {
            // What the restored rows alone make, which downstream already holds.
            let restored_only = |side: &ArrangedRows<'scope>| -> Keyed<'scope> {
                side.restored.clone().unwrap_or_else(|| {
                    Vec::<((Row, Row), u64, i64)>::new()
                        .to_stream(scope)
                        .container::<Vec<_>>()
                        .as_collection()
                })
            };
            let (left_restored, right_restored) = (restored_only(left), restored_only(right));
            let arranged = |rows: &Keyed<'scope>| {
                let arranged = rows
                    .clone()
                    .filter(move |pair| matchable(pair, outer.nulls_match))
                    .arrange_by_key_named("RestoredJoinInput");
                ArrangedRows::new(arranged, None, outer.nulls_match)
            };
            let (left_arranged, right_arranged) =
                (arranged(&left_restored), arranged(&right_restored));
            let already_downstream = relational_join(
                (left_restored, &left_arranged),
                (right_restored, &right_arranged),
                outer,
            );
            joined.concat(already_downstream.negate())
        }
        false => joined,
    };
    settle_and_mark(joined.inner, participant, was_checkpointed)
}

fn keyed<'scope>(updates: Stream<'scope, u64, Vec<Update>>, key_columns: usize) -> Keyed<'scope> {
    updates
        .as_collection()
        .map(move |row: Row| split(row, key_columns))
}

fn matchable((key, _): &(Row, Row), nulls_match: bool) -> bool {
    nulls_match || !key.iter().any(Datum::is_null)
}

/// The join of two keyed relations (all their rows, and their arrangements) with `outer`'s
/// semantics.
fn relational_join<'scope>(
    (left, left_rows): (Keyed<'scope>, &ArrangedRows<'scope>),
    (right, right_rows): (Keyed<'scope>, &ArrangedRows<'scope>),
    outer: Outer,
) -> Rows<'scope> {
    // The rows of `rows` whose key `others` holds, once per row whatever the number of matches.
    let matched = |rows: &ArrangedRows<'scope>, others: &ArrangedRows<'scope>| -> Rows<'scope> {
        rows.arranged
            .clone()
            .join_core(others.keys_present(), |_key, row: &Row, _| {
                Some(row.clone())
            })
    };
    // All rows of a side, NULL-keyed ones included: those are unmatched wherever they are kept.
    let payloads = |rows: Keyed<'scope>| rows.map(|(_, row)| row);
    match outer.left_rows_matching {
        Some(true) => matched(left_rows, right_rows),
        Some(false) => payloads(left).concat(matched(left_rows, right_rows).negate()),
        None => {
            let mut joined = left_rows.arranged.clone().join_core(
                right_rows.arranged.clone(),
                |_key, left: &Row, right: &Row| Some(concat(left, right)),
            );
            if outer.keep_left {
                let unmatched = payloads(left).concat(matched(left_rows, right_rows).negate());
                joined = joined.concat(unmatched.map(move |row| outer.padded(&row, true)));
            }
            if outer.keep_right {
                let unmatched = payloads(right).concat(matched(right_rows, left_rows).negate());
                joined = joined.concat(unmatched.map(move |row| outer.padded(&row, false)));
            }
            joined
        }
    }
}

/// Reads the arrangement into the checkpoint at each cut (see the module), and keeps its trace
/// compacting: this reader holds it back only as far as the next cut needs.
fn take_part_in_checkpoints(arranged: &RowArrangement<'_>, participant: Participant) {
    let mut trace = arranged.trace.clone();
    arranged
        .stream
        .clone()
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "ArrangementCheckpoint",
            move |_, _| {
                let mut answered = 0;
                let mut finished = false;
                // The latest time a batch was stamped at, for the final part.
                let mut arrived_up_to = 0u64;
                move |(input, frontier), _output| {
                    input.for_each(|time, _| {
                        if let Some(at) = time.retain_least(0) {
                            arrived_up_to = arrived_up_to.max(*at.time());
                        }
                    });
                    let frontier = frontier.frontier();
                    if let Some(cut) = participant.pending(answered)
                        && !frontier.less_than(&cut.time)
                    {
                        let part = ArrangementPartFrom {
                            rows: RowsBefore::of(&mut trace, cut.time),
                        };
                        participant.submit_encoded(cut, &part);
                        answered = cut.id;
                    }
                    if frontier.is_empty() && !finished {
                        finished = true;
                        let part = ArrangementPartFrom {
                            rows: RowsBefore::of(&mut trace, u64::MAX),
                        };
                        participant.submit_final_encoded(&part, Some(arrived_up_to));
                    }
                    // Times before the frontier may now be merged: a cut still to come lies beyond
                    // every time a source holds, so beyond this frontier too.
                    trace.set_logical_compaction(frontier);
                    trace.set_physical_compaction(frontier);
                }
            },
        );
}

/// The rows a trace holds from updates before `cut`, counted, in key order: serialized as an
/// [`ArrangementPart`]'s rows, straight from the trace's batches (copying a large arrangement
/// out first would double its memory at every cut).
struct RowsBefore {
    batches: Vec<RowBatch>,
    cut: u64,
}

type RowBatch = <TraceAgent<ValSpine<Row, Row, u64, i64>> as TraceReader>::Batch;

/// What a checkpoint stores of an arrangement, encoded as [`ArrangementPart`] decodes.
#[derive(Serialize)]
struct ArrangementPartFrom {
    rows: RowsBefore,
}

impl RowsBefore {
    fn of(trace: &mut TraceAgent<ValSpine<Row, Row, u64, i64>>, cut: u64) -> Self {
        let spans = trace
            .spans_through(AntichainRef::new(&[]))
            .expect("a trace can always be read to its end");
        RowsBefore {
            batches: spans.into_iter().filter_map(|span| span.inner).collect(),
            cut,
        }
    }

    fn for_each(&self, mut visit: impl FnMut(&Row, &Row, i64)) {
        let (mut cursor, storage) = cursor_list(self.batches.clone());
        while cursor.key_valid(&storage) {
            while cursor.val_valid(&storage) {
                let mut count = 0;
                cursor.map_times(&storage, |time, diff| {
                    if *time < self.cut {
                        count += *diff;
                    }
                });
                if count != 0 {
                    visit(cursor.key(&storage), cursor.val(&storage), count);
                }
                cursor.step_val(&storage);
            }
            cursor.step_key(&storage);
        }
    }
}

impl Serialize for RowsBefore {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut count = 0;
        self.for_each(|_, _, _| count += 1);
        let mut rows = serializer.serialize_seq(Some(count))?;
        let mut written = Ok(());
        self.for_each(|key, row, count| {
            if written.is_ok() {
                written = rows.serialize_element(&(key, row, count));
            }
        });
        written?;
        rows.end()
    }
}

/// Passes a join's output on and answers the checkpoints' cuts with the join's mark; when
/// `restoring`, holds what is stamped at time 0 until nothing more can come at it and lets out
/// only what does not cancel (see the module).
fn settle_and_mark<'scope>(
    updates: Stream<'scope, u64, Vec<Update>>,
    participant: Participant,
    restoring: bool,
) -> Stream<'scope, u64, Vec<Update>> {
    updates.unary_frontier(Pipeline, "SettleJoin", move |_, _| {
        let mut held: Option<(Capability<u64>, Vec<Update>)> = None;
        let mut settled = !restoring;
        let mut answered = 0;
        let mut finished = false;
        let mut emitted_up_to = 0u64;
        move |(input, frontier), output| {
            input.for_each(|time, data| {
                let Some(at) = time.retain_least(0) else {
                    return;
                };
                emitted_up_to = emitted_up_to.max(*at.time());
                if *at.time() == 0 && !settled {
                    let (_, waiting) = held.get_or_insert_with(|| (at.clone(), Vec::new()));
                    waiting.append(data);
                } else {
                    output.session(&at).give_container(data);
                }
            });
            let frontier = frontier.frontier();
            if !settled && !frontier.less_equal(&0) {
                settled = true;
                if let Some((at, mut waiting)) = held.take() {
                    differential_dataflow::consolidation::consolidate_updates(&mut waiting);
                    if !waiting.is_empty() {
                        output.session(&at).give_container(&mut waiting);
                    }
                }
            }
            if let Some(cut) = participant.pending(answered)
                && !frontier.less_than(&cut.time)
            {
                participant.submit(cut, encode(&true));
                answered = cut.id;
            }
            if frontier.is_empty() && !finished {
                finished = true;
                participant.submit_final_after(encode(&true), emitted_up_to);
            }
        }
    })
}

/// A row laid out as `key columns ++ row`, as its key and its row.
pub(crate) fn split(mut row: Row, key_columns: usize) -> (Row, Row) {
    let payload = row.split_off(key_columns);
    (row, payload)
}

/// A joined row: the left row's columns, then the right's.
pub(crate) fn concat(left: &Row, right: &Row) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend_from_slice(left);
    row.extend_from_slice(right);
    row
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, ToStream};

    use super::*;

    fn text(value: &str) -> Datum {
        Datum::Utf8(value.into())
    }

    /// Joins `left` and `right` (rows laid out `key ++ row`, one key column) with `outer`; the
    /// net output.
    fn joined(left: Vec<Update>, right: Vec<Update>, outer: Outer) -> BTreeMap<Row, i64> {
        let outputs = timely::execute(timely::Config::process(2), move |worker| {
            let first = worker.index() == 0;
            let (left, right) = match first {
                true => (left.clone(), right.clone()),
                false => (Vec::new(), Vec::new()),
            };
            worker.dataflow::<u64, _, _>(move |scope| {
                let left = left.to_stream(scope).container::<Vec<_>>();
                let right = right.to_stream(scope).container::<Vec<_>>();
                let left_rows = arrange_rows(left.clone(), 1, outer.nulls_match, None);
                let right_rows = arrange_rows(right.clone(), 1, outer.nulls_match, None);
                join_arranged((left, &left_rows), (right, &right_rows), 1, outer, None).capture()
            })
        })
        .expect("the workers start")
        .join();
        let mut net = BTreeMap::new();
        for captured in outputs {
            let captured = captured.expect("a worker finishes");
            for (row, _, diff) in captured
                .extract()
                .into_iter()
                .flat_map(|(_, updates)| updates)
            {
                *net.entry(row).or_insert(0) += diff;
            }
        }
        net.retain(|_, count| *count != 0);
        net
    }

    #[test]
    fn a_left_join_pads_only_the_rows_nothing_matches() {
        let row = |key: &str, value: &str| vec![text(key), text(key), text(value)];
        let left = vec![
            (row("k1", "a"), 1, 1),
            (row("k2", "b"), 5, 1),
            (row("k3", "c"), 5, 1),
        ];
        let right = vec![
            (row("k1", "x"), 2, 1),
            (row("k1", "y"), 3, 1),
            (row("k3", "z"), 4, 1),
            (row("k3", "z"), 6, -1),
            (row("k1", "y"), 7, -1),
            (row("k1", "y2"), 7, 1),
        ];
        let outer = Outer {
            keep_left: true,
            left_width: 2,
            right_width: 2,
            ..Outer::default()
        };
        let pair = |l: &str, lv: &str, r: &str, rv: &str| -> Row {
            vec![text(l), text(lv), text(r), text(rv)]
        };
        let padded = |l: &str, lv: &str| vec![text(l), text(lv), Datum::Null, Datum::Null];
        assert_eq!(
            joined(left, right, outer),
            BTreeMap::from([
                (pair("k1", "a", "k1", "x"), 1),
                (pair("k1", "a", "k1", "y2"), 1),
                (padded("k2", "b"), 1),
                (padded("k3", "c"), 1),
            ])
        );
    }

    fn rows<const N: usize>(rows: [(Row, i64); N]) -> BTreeMap<Row, i64> {
        rows.into_iter().collect()
    }

    #[test]
    fn an_outer_join_pads_unmatched_rows_until_a_match_comes_and_after_it_goes() {
        let reading =
            |sensor: &str, at: u64| (vec![text(sensor), text(sensor), Datum::Int64(1)], at, 1);
        let sensor = |id: &str, room: &str| vec![text(id), text(id), text(room)];
        let full = Outer {
            keep_left: true,
            keep_right: true,
            left_width: 2,
            right_width: 2,
            ..Outer::default()
        };
        let padded_left = |id: &str| vec![text(id), Datum::Int64(1), Datum::Null, Datum::Null];
        let pair = |id: &str, room: &str| vec![text(id), Datum::Int64(1), text(id), text(room)];
        let padded_right =
            |id: &str, room: &str| vec![Datum::Null, Datum::Null, text(id), text(room)];
        // Readings before their sensor is known, then the sensor: the padded rows go.
        let readings = vec![reading("s1", 1), reading("s1", 3)];
        let mut sensors = vec![(sensor("s2", "r2"), 2, 1)];
        assert_eq!(
            joined(readings.clone(), sensors.clone(), full),
            rows([(padded_right("s2", "r2"), 1), (padded_left("s1"), 2)])
        );
        sensors.push((sensor("s1", "r1"), 4, 1));
        assert_eq!(
            joined(readings.clone(), sensors.clone(), full),
            rows([(pair("s1", "r1"), 2), (padded_right("s2", "r2"), 1)])
        );
        // The sensor removed: the readings are unmatched again.
        sensors.push((sensor("s1", "r1"), 5, -1));
        assert_eq!(
            joined(readings, sensors, full),
            rows([(padded_left("s1"), 2), (padded_right("s2", "r2"), 1)])
        );
        // A LEFT join keeps no unmatched sensors; a null key is kept, padded, never matched.
        let left = Outer {
            keep_right: false,
            ..full
        };
        let null_reading = (vec![Datum::Null, Datum::Null, Datum::Int64(1)], 2, 1);
        assert_eq!(
            joined(vec![null_reading], vec![(sensor("s2", "r2"), 1, 1)], left),
            rows([(
                vec![Datum::Null, Datum::Int64(1), Datum::Null, Datum::Null],
                1
            )])
        );
    }

    #[test]
    fn semi_and_anti_joins_give_left_rows_once_as_matches_come_and_go() {
        let reading = |zone: &str| (vec![text(zone), text(zone), Datum::Int64(1)], 1, 1);
        let setpoint = |zone: &str, value: i64, at: u64, diff: i64| {
            (vec![text(zone), text(zone), Datum::Int64(value)], at, diff)
        };
        let semi = Outer {
            left_rows_matching: Some(true),
            ..Outer::default()
        };
        let anti = Outer {
            left_rows_matching: Some(false),
            ..Outer::default()
        };
        let readings = vec![
            reading("z1"),
            reading("z2"),
            (vec![Datum::Null, Datum::Null, Datum::Int64(1)], 3, 1),
        ];
        let mut setpoints = vec![setpoint("z1", 20, 2, 1), setpoint("z1", 21, 3, 1)];
        let z1 = vec![text("z1"), Datum::Int64(1)];
        let z2 = vec![text("z2"), Datum::Int64(1)];
        let null = vec![Datum::Null, Datum::Int64(1)];
        // Two setpoints for z1: its reading once.
        assert_eq!(
            joined(readings.clone(), setpoints.clone(), semi),
            rows([(z1.clone(), 1)])
        );
        assert_eq!(
            joined(readings.clone(), setpoints.clone(), anti),
            rows([(null.clone(), 1), (z2.clone(), 1)])
        );
        // Both setpoints gone: z1's reading no longer matches.
        setpoints.push(setpoint("z1", 20, 4, -1));
        setpoints.push(setpoint("z1", 21, 5, -1));
        assert!(joined(readings.clone(), setpoints.clone(), semi).is_empty());
        assert_eq!(
            joined(readings, setpoints, anti),
            rows([(null, 1), (z1, 1), (z2, 1)])
        );
    }
}
