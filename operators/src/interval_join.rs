//! Two streams joined within an interval of each other's event time (`a.ts BETWEEN b.ts -
//! INTERVAL '1 minute' AND b.ts`), an inner equi-join.
//!
//! Both inputs are rows laid out as `key columns ++ row`, routed to workers by a hash of the
//! key. Each side keeps, per key, the multiset of its rows. A row arriving on one side is joined
//! with the other side's current rows within the interval and then added to its own, which
//! produces every pair exactly once whatever the interleaving. Rows with a null key match
//! nothing, as in SQL.
//!
//! Neither side ever retracts, and a row can meet no later row of the other side once the other
//! side's frontier has passed its own event time plus the interval's reach (and the allowed
//! lateness). Such a row leaves the state then, silently: the pairs it made stay true
//! ([`Expiry`]). This is why interval joins are not on differential-dataflow arrangements
//! ([`crate::arranged_join`]), which keep what they are given until it is retracted.

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use vibelux_interfaces::checkpoint::{InKeyOrder, Participant, encode, routed_to};

use crate::aggregate::{StateMap, key_hash};
use crate::arranged_join::{concat, split};
use crate::row::{Row, Update};

/// When an interval join's rows can no longer match: for each side, where its event time is
/// in its payload and how long after it (nanoseconds, the interval's reach and the lateness)
/// a row stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub left: SideExpiry,
    pub right: SideExpiry,
    /// The bounds on the left time minus the right time (nanoseconds, inclusive; the view's
    /// exact condition is applied after the join): pairs outside are never formed.
    pub lower_nanos: i64,
    pub upper_nanos: i64,
}

impl Expiry {
    /// Whether a left and a right payload lie within the interval of each other.
    fn meets(&self, left: &Row, right: &Row) -> bool {
        let time = |row: &Row, side: &SideExpiry| row[side.time_column].as_timestamp_nanos();
        match (time(left, &self.left), time(right, &self.right)) {
            (Some(l), Some(r)) => {
                let gap = i128::from(l) - i128::from(r);
                (i128::from(self.lower_nanos)..=i128::from(self.upper_nanos)).contains(&gap)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideExpiry {
    pub time_column: usize,
    pub keep_nanos: i64,
}

impl SideExpiry {
    /// The dataflow time (milliseconds) after which a row can leave.
    fn leaves_after(&self, row: &Row, key_columns: usize) -> u64 {
        let nanos = row[key_columns + self.time_column]
            .as_timestamp_nanos()
            .unwrap_or(i64::MAX);
        let until = nanos.saturating_add(self.keep_nanos).max(0);
        (until / 1_000_000) as u64 + 1
    }
}

/// A side's rows by the dataflow time after which they leave.
#[derive(Debug, Default)]
struct Leaving(std::collections::BTreeMap<u64, Vec<Row>>);

impl Leaving {
    fn note(&mut self, expiry: &SideExpiry, row: &Row, key_columns: usize) {
        self.0
            .entry(expiry.leaves_after(row, key_columns))
            .or_default()
            .push(row.clone());
    }

    /// Every row of a restored side, by when it leaves.
    fn of(side: &JoinSide, expiry: &SideExpiry, key_columns: usize) -> Leaving {
        let mut leaving = Leaving::default();
        for (key, payloads) in side.rows.iter() {
            for (payload, count) in payloads.iter() {
                let row = concat(key, payload);
                for _ in 0..(*count).max(0) {
                    leaving.note(expiry, &row, key_columns);
                }
            }
        }
        leaving
    }

    /// Takes the rows of `side` whose time has passed before `frontier`.
    fn forget(&mut self, side: &mut JoinSide, frontier: u64, key_columns: usize) {
        while let Some(entry) = self.0.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            for row in entry.remove() {
                let (key, payload) = split(row, key_columns);
                side.add(key, payload, -1);
            }
        }
    }
}

/// One side's state: key → payload → multiplicity.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JoinSide {
    #[serde(serialize_with = "rows_in_key_order")]
    rows: StateMap<Row, StateMap<Row, i64>>,
}

/// Both levels in key order, so a part changes only where the rows did.
fn rows_in_key_order<S: serde::Serializer>(
    rows: &StateMap<Row, StateMap<Row, i64>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut keys: Vec<(&Row, &StateMap<Row, i64>)> = rows.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(
        keys.into_iter()
            .map(|(key, payloads)| (key, InKeyOrder(payloads))),
    )
}

impl JoinSide {
    /// Joins a row arriving on this side with `other`'s rows within the interval (handing
    /// each pair to `emit`), then adds it to this side. `is_left` puts this side's columns
    /// first in the output.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        other: &JoinSide,
        row: Row,
        diff: i64,
        key_columns: usize,
        is_left: bool,
        interval: &Expiry,
        mut emit: impl FnMut(Row, i64),
    ) {
        let (key, payload) = split(row, key_columns);
        if key.iter().any(|datum| datum.is_null()) {
            // Matches nothing, ever: not stored.
            return;
        }
        for (theirs, count) in other.rows.get(&key).into_iter().flatten() {
            let (left, right) = match is_left {
                true => (&payload, theirs),
                false => (theirs, &payload),
            };
            if interval.meets(left, right) {
                emit(concat(left, right), diff * count);
            }
        }
        self.add(key, payload, diff);
    }

    /// How many rows this side holds with `key`.
    #[cfg(test)]
    fn total(&self, key: &Row) -> i64 {
        self.rows
            .get(key)
            .map_or(0, |payloads| payloads.values().sum())
    }

    /// Adds the keys of a restored side that `ours` accepts.
    fn take_routed(&mut self, restored: JoinSide, ours: impl Fn(&Row) -> bool) {
        self.rows
            .extend(restored.rows.into_iter().filter(|(key, _)| ours(key)));
    }

    /// Adds `diff` copies of a row; a row whose count reaches zero goes, and so does a key left
    /// with no rows. Rows are moved in, never cloned: this is every join's hottest path.
    fn add(&mut self, key: Row, payload: Row, diff: i64) {
        if diff == 0 {
            return;
        }
        let Some(payloads) = self.rows.get_mut(&key) else {
            let mut payloads = StateMap::default();
            payloads.insert(payload, diff);
            self.rows.insert(key, payloads);
            return;
        };
        match payloads.get_mut(&payload) {
            None => {
                payloads.insert(payload, diff);
            }
            Some(count) if *count + diff != 0 => *count += diff,
            Some(_) => {
                payloads.remove(&payload);
                if payloads.is_empty() {
                    self.rows.remove(&key);
                }
            }
        }
    }
}

/// Joins two streams of rows (as updates) on their first `key_columns` columns, within the
/// interval `expiry` bounds.
pub trait IntervalJoinExt<'scope> {
    /// With `checkpointing`, both sides' rows take part in checkpoints and are restored from
    /// the one the run resumes from.
    fn join_within(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        expiry: Expiry,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> IntervalJoinExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn join_within(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        expiry: Expiry,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        let route = move |update: &Update| key_hash(&update.0[..key_columns]);
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        self.binary_frontier(
            other,
            Exchange::new(route),
            Exchange::new(route),
            "IntervalJoin",
            move |_, _| {
                let (mut left, mut right) = (JoinSide::default(), JoinSide::default());
                let restored: Vec<(JoinSide, JoinSide)> =
                    Participant::restored_parts(checkpointing.as_ref(), "join");
                for (restored_left, restored_right) in restored {
                    // Another worker count: keep the keys routed here now.
                    let ours = |key: &Row| routed_to(key_hash(key), worker, peers);
                    left.take_routed(restored_left, ours);
                    right.take_routed(restored_right, ours);
                }
                // An interval join's rows by when they leave (rebuilt from restored rows).
                let mut left_leaving = Leaving::of(&left, &expiry.left, key_columns);
                let mut right_leaving = Leaving::of(&right, &expiry.right, key_columns);
                // Batches stamped at or after a cut being taken wait here until the snapshot
                // (`true`: from the left input).
                let mut waiting: Vec<(Capability<u64>, bool, Vec<Update>)> = Vec::new();
                let mut answered = 0;
                let mut finished = false;
                // The latest time an output was stamped at, for the final part.
                let mut emitted_up_to = 0u64;
                move |(left_input, left_frontier), (right_input, right_frontier), output| {
                    let mut apply = |is_left: bool,
                                     at: &Capability<u64>,
                                     data: &mut Vec<Update>,
                                     left: &mut JoinSide,
                                     right: &mut JoinSide| {
                        let now = *at.time();
                        emitted_up_to = emitted_up_to.max(now);
                        let mut session = output.session(at);
                        for (row, _, diff) in data.drain(..) {
                            match is_left {
                                true => left_leaving.note(&expiry.left, &row, key_columns),
                                false => right_leaving.note(&expiry.right, &row, key_columns),
                            }
                            let emit = |joined, d| session.give((joined, now, d));
                            if is_left {
                                left.apply(right, row, diff, key_columns, true, &expiry, emit);
                            } else {
                                right.apply(left, row, diff, key_columns, false, &expiry, emit);
                            }
                        }
                    };
                    // A batch from either input: applied, or set aside past a pending cut.
                    let mut arrived =
                        |is_left: bool, at: Capability<u64>, data: &mut Vec<Update>| {
                            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                            if cut.is_some_and(|cut| *at.time() >= cut.time) {
                                waiting.push((at, is_left, std::mem::take(data)));
                            } else {
                                apply(is_left, &at, data, &mut left, &mut right);
                            }
                        };
                    left_input.for_each(|time, data| {
                        if let Some(at) = time.retain_least(0) {
                            arrived(true, at, data);
                        }
                    });
                    right_input.for_each(|time, data| {
                        if let Some(at) = time.retain_least(0) {
                            arrived(false, at, data);
                        }
                    });
                    let (left_frontier, right_frontier) =
                        (left_frontier.frontier(), right_frontier.frontier());
                    if let (Some(participant), Some(cut)) = (
                        &checkpointing,
                        checkpointing.as_ref().and_then(|p| p.pending(answered)),
                    ) && !left_frontier.less_than(&cut.time)
                        && !right_frontier.less_than(&cut.time)
                    {
                        participant.submit(cut, encode(&(&left, &right)));
                        answered = cut.id;
                        for (at, is_left, mut data) in waiting.drain(..) {
                            apply(is_left, &at, &mut data, &mut left, &mut right);
                        }
                    }
                    // Rows no later row of the other side can meet leave, once no batch waits
                    // for a snapshot (those may still meet them).
                    if waiting.is_empty() {
                        let passed =
                            |frontier: timely::progress::frontier::AntichainRef<'_, u64>| {
                                frontier.first().copied().unwrap_or(u64::MAX)
                            };
                        left_leaving.forget(&mut left, passed(right_frontier), key_columns);
                        right_leaving.forget(&mut right, passed(left_frontier), key_columns);
                    }
                    if left_frontier.is_empty() && right_frontier.is_empty() && !finished {
                        finished = true;
                        if let Some(participant) = &checkpointing {
                            participant.submit_final_after(encode(&(&left, &right)), emitted_up_to);
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_interval_joins_rows_leave_once_the_other_side_has_passed_them() {
        const SECOND: i64 = 1_000_000_000;
        // Rows are `key, ts`; each stays 60 s past its time.
        let expiry = SideExpiry {
            time_column: 0,
            keep_nanos: 60 * SECOND,
        };
        let mut side = JoinSide::default();
        let mut leaving = Leaving::default();
        for second in 0..100 {
            let row = vec![Datum::Utf8("s1".into()), Datum::Timestamp(second * SECOND)];
            leaving.note(&expiry, &row, 1);
            let (key, payload) = split(row, 1);
            side.add(key, payload, 1);
        }
        let key = vec![Datum::Utf8("s1".into())];
        // The other side's frontier at 90 s: rows up to 29 s can meet nothing more.
        leaving.forget(&mut side, 90_000, 1);
        assert_eq!(side.total(&key), 70);
        // A restored side rebuilds when its rows leave.
        let mut rebuilt = Leaving::of(&side, &expiry, 1);
        rebuilt.forget(&mut side, u64::MAX, 1);
        assert_eq!(side.total(&key), 0);
        assert!(side.rows.is_empty());
    }

    use super::*;
    use crate::row::Datum;

    #[test]
    fn a_side_forgets_a_payload_whose_count_returns_to_zero() {
        let mut side = JoinSide::default();
        let key = vec![Datum::Int64(1)];
        side.add(key.clone(), vec![Datum::Int64(5)], 1);
        side.add(key.clone(), vec![Datum::Int64(5)], -1);
        assert!(side.rows.is_empty());
    }
}
