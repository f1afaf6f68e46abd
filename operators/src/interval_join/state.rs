//! What an interval join holds between batches, and what each arriving or leaving row makes
//! it emit: each side's rows by key, when each row leaves, and for an outer, semi or anti join
//! which of a side's rows have met a row of the other side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::StateMap;
use crate::arranged_join::{Outer, concat, split};
use crate::row::Row;

/// When an interval join's rows can no longer match: for each side, where its event time is
/// in its payload and how long after it (nanoseconds, the interval's reach and the lateness)
/// a row stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub left: SideExpiry,
    pub right: SideExpiry,
    /// The bounds on the left time minus the right time (nanoseconds, inclusive): pairs
    /// outside are never formed. Exact for outer, semi and anti joins, whose conditions are
    /// these bounds and the key alone; an inner join's view applies its whole condition after.
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

    fn of(&self, is_left: bool) -> &SideExpiry {
        match is_left {
            true => &self.left,
            false => &self.right,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideExpiry {
    pub time_column: usize,
    pub keep_nanos: i64,
}

impl SideExpiry {
    /// The dataflow time (milliseconds) after which a payload can meet nothing more.
    fn leaves_after(&self, payload: &Row) -> u64 {
        let nanos = payload[self.time_column]
            .as_timestamp_nanos()
            .unwrap_or(i64::MAX);
        let until = nanos.saturating_add(self.keep_nanos).max(0);
        (until / 1_000_000) as u64 + 1
    }
}

/// Which rows an interval join gives besides (or instead of) its pairs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answers(pub Outer);

impl Answers {
    /// Whether the join gives pairs (not a semi or anti join).
    fn pairs(&self) -> bool {
        self.0.left_rows_matching.is_none()
    }

    fn semi(&self) -> bool {
        self.0.left_rows_matching == Some(true)
    }

    /// Whether a side's rows must remember having met a row of the other side.
    fn tracks(&self, is_left: bool) -> bool {
        match is_left {
            true => self.0.keep_left || self.0.left_rows_matching.is_some(),
            false => self.0.keep_right,
        }
    }

    /// Whether a side's rows that never meet come out: padded with NULLs (outer joins) or
    /// alone (anti joins).
    pub(super) fn gives_unmatched(&self, is_left: bool) -> bool {
        match is_left {
            true => self.0.keep_left || self.0.left_rows_matching == Some(false),
            false => self.0.keep_right,
        }
    }

    fn unmatched(&self, payload: &Row, is_left: bool) -> Row {
        match self.0.left_rows_matching {
            Some(_) => payload.clone(),
            None => self.0.padded(payload, is_left),
        }
    }
}

/// A side's rows by the dataflow time after which they leave.
#[derive(Debug, Default)]
struct Leaving(BTreeMap<u64, Vec<Row>>);

impl Leaving {
    fn note(&mut self, after: u64, row: Row) {
        self.0.entry(after).or_default().push(row);
    }

    /// Every row of a restored side, by when it leaves.
    fn of(side: &JoinSide, expiry: &SideExpiry) -> Leaving {
        let mut leaving = Leaving::default();
        for (key, payloads) in side.rows.iter() {
            for (payload, count) in payloads.iter() {
                for _ in 0..(*count).max(0) {
                    leaving.note(expiry.leaves_after(payload), concat(key, payload));
                }
            }
        }
        leaving
    }

    /// Hands over (with the time each leaves after) the rows that leave before `bound`.
    fn take_before(&mut self, bound: u64, mut gone: impl FnMut(u64, Row)) {
        while let Some(entry) = self.0.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let after = *entry.key();
            for row in entry.remove() {
                gone(after, row);
            }
        }
    }

    fn first(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }
}

/// One side's rows: key → payload → multiplicity.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JoinSide {
    #[serde(serialize_with = "in_key_order")]
    rows: StateMap<Row, StateMap<Row, i64>>,
}

/// Both levels in key order, so a part changes only where the rows did.
fn in_key_order<S: serde::Serializer, V: Serialize>(
    rows: &StateMap<Row, StateMap<Row, V>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use vibelux_interfaces::checkpoint::InKeyOrder;
    let mut keys: Vec<(&Row, &StateMap<Row, V>)> = rows.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(
        keys.into_iter()
            .map(|(key, payloads)| (key, InKeyOrder(payloads))),
    )
}

impl JoinSide {
    /// How many rows this side holds with `key`.
    #[cfg(test)]
    pub(super) fn total(&self, key: &Row) -> i64 {
        self.rows
            .get(key)
            .map_or(0, |payloads| payloads.values().sum())
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

    /// Takes one copy of a row away; whether it was the last.
    fn remove_one(&mut self, key: &Row, payload: &Row) -> bool {
        let Some(payloads) = self.rows.get_mut(key) else {
            return true;
        };
        match payloads.get_mut(payload) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            _ => {
                payloads.remove(payload);
                if payloads.is_empty() {
                    self.rows.remove(key);
                }
                true
            }
        }
    }
}

/// The rows of a side that have met at least one row of the other side: key → payloads.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Met {
    #[serde(serialize_with = "in_key_order")]
    rows: StateMap<Row, StateMap<Row, ()>>,
}

impl Met {
    /// Notes that a row met another; whether it had met none before.
    fn note(&mut self, key: &Row, payload: &Row) -> bool {
        let payloads = match self.rows.get_mut(key) {
            Some(payloads) => payloads,
            None => self.rows.entry(key.clone()).or_default(),
        };
        if payloads.contains_key(payload) {
            return false;
        }
        payloads.insert(payload.clone(), ());
        true
    }

    fn contains(&self, key: &Row, payload: &Row) -> bool {
        self.rows
            .get(key)
            .is_some_and(|payloads| payloads.contains_key(payload))
    }

    /// Forgets a row that left; whether it had met another.
    fn forget(&mut self, key: &Row, payload: &Row) -> bool {
        let Some(payloads) = self.rows.get_mut(key) else {
            return false;
        };
        let had = payloads.remove(payload).is_some();
        if payloads.is_empty() {
            self.rows.remove(key);
        }
        had
    }
}

/// One side of an interval join.
#[derive(Debug, Default)]
pub(super) struct Side {
    pub rows: JoinSide,
    pub met: Met,
    leaving: Leaving,
}

impl Side {
    /// A side restored from a checkpoint: its rows leave as they would have.
    pub fn restored(rows: JoinSide, met: Met, expiry: &SideExpiry) -> Side {
        let leaving = Leaving::of(&rows, expiry);
        Side { rows, met, leaving }
    }

    /// Adds the keys of a restored side that `ours` accepts.
    pub fn take_routed(&mut self, rows: JoinSide, met: Met, ours: impl Fn(&Row) -> bool) {
        self.rows
            .rows
            .extend(rows.rows.into_iter().filter(|(key, _)| ours(key)));
        self.met
            .rows
            .extend(met.rows.into_iter().filter(|(key, _)| ours(key)));
    }

    /// When this side's next row leaves.
    pub fn next_leaving(&self) -> Option<u64> {
        self.leaving.first()
    }
}

/// Both sides of an interval join, and the rules for what it gives.
#[derive(Debug)]
pub(super) struct Sides {
    pub left: Side,
    pub right: Side,
    pub key_columns: usize,
    pub expiry: Expiry,
    pub answers: Answers,
}

impl Sides {
    /// A row arriving on one side at dataflow time `now`: joined with the other side's rows
    /// within the interval (handing each output row to `emit`), then kept until it leaves.
    /// Returns whether it was kept and may still come out unmatched when it leaves.
    pub fn arrive(
        &mut self,
        is_left: bool,
        row: Row,
        diff: i64,
        now: u64,
        mut emit: impl FnMut(Row, i64),
    ) -> bool {
        let (answers, expiry, key_columns) = (self.answers, self.expiry, self.key_columns);
        let (mine, theirs) = match is_left {
            true => (&mut self.left, &mut self.right),
            false => (&mut self.right, &mut self.left),
        };
        let side_expiry = expiry.of(is_left);
        let (key, payload) = split(row, key_columns);
        if key.iter().any(|datum| datum.is_null()) || payload[side_expiry.time_column].is_null() {
            // Meets nothing, ever: not kept, and unmatched already.
            if answers.gives_unmatched(is_left) {
                emit(answers.unmatched(&payload, is_left), diff);
            }
            return false;
        }
        let mut met = false;
        for (their_payload, count) in theirs.rows.rows.get(&key).into_iter().flatten() {
            let (left, right) = match is_left {
                true => (&payload, their_payload),
                false => (their_payload, &payload),
            };
            if !expiry.meets(left, right) {
                continue;
            }
            met = true;
            if answers.pairs() {
                emit(concat(left, right), diff * count);
            }
            if answers.tracks(!is_left) && theirs.met.note(&key, their_payload) && answers.semi() {
                // A semi join's left row comes out at its first match, each copy once.
                emit(their_payload.clone(), *count);
            }
        }
        if met && answers.tracks(is_left) {
            mine.met.note(&key, &payload);
            if answers.semi() {
                emit(payload.clone(), diff);
            }
        }
        let leaves_after = side_expiry.leaves_after(&payload);
        let pending = answers.gives_unmatched(is_left);
        // A row that may come out unmatched comes out when it leaves, which is never before it
        // arrived.
        let after = match pending {
            true => leaves_after.max(now),
            false => leaves_after,
        };
        for _ in 0..diff.max(0) {
            mine.leaving.note(after, concat(&key, &payload));
        }
        mine.rows.add(key, payload, diff);
        pending
    }

    /// Takes away a side's rows that leave before `bound` (when the other side's rows can
    /// meet them no more), handing each unmatched row it gives to `emit` with the time it left
    /// after.
    pub fn leave(&mut self, is_left: bool, bound: u64, mut emit: impl FnMut(u64, Row)) {
        let (answers, key_columns) = (self.answers, self.key_columns);
        let Side { rows, met, leaving } = match is_left {
            true => &mut self.left,
            false => &mut self.right,
        };
        leaving.take_before(bound, |after, row| {
            let (key, payload) = split(row, key_columns);
            let last = rows.remove_one(&key, &payload);
            if !answers.tracks(is_left) {
                return;
            }
            let had_met = match last {
                true => met.forget(&key, &payload),
                false => met.contains(&key, &payload),
            };
            if !had_met && answers.gives_unmatched(is_left) {
                emit(after, answers.unmatched(&payload, is_left));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Datum;

    const SECOND: i64 = 1_000_000_000;

    /// Rows `key, ts` on both sides (keyed: `key, key, ts`); a left row meets right rows up to 10 s after it, and
    /// each side's rows stay 10 s (and no lateness) past their time.
    fn sides(outer: Outer) -> Sides {
        let side = |keep_nanos| SideExpiry {
            time_column: 1,
            keep_nanos,
        };
        Sides {
            left: Side::default(),
            right: Side::default(),
            key_columns: 1,
            expiry: Expiry {
                left: side(10 * SECOND),
                right: side(0),
                lower_nanos: -10 * SECOND,
                upper_nanos: 0,
            },
            answers: Answers(outer),
        }
    }

    fn outer(keep_left: bool, keep_right: bool, left_rows_matching: Option<bool>) -> Outer {
        Outer {
            keep_left,
            keep_right,
            left_width: 2,
            right_width: 2,
            left_rows_matching,
            nulls_match: false,
        }
    }

    fn row(key: &str, second: i64) -> Row {
        vec![text(key), text(key), ts(second)]
    }

    fn text(key: &str) -> Datum {
        Datum::Utf8(key.into())
    }

    fn payload(key: &str, second: i64) -> Row {
        vec![text(key), ts(second)]
    }

    fn ts(second: i64) -> Datum {
        Datum::Timestamp(second * SECOND)
    }

    /// Applies arrivals `(is_left, key, second)` in order, then lets every row leave; the
    /// rows given as they arrived and as they left.
    fn run(sides: &mut Sides, arrivals: &[(bool, &str, i64)]) -> (Vec<Row>, Vec<Row>) {
        let mut joined = Vec::new();
        for &(is_left, key, second) in arrivals {
            sides.arrive(is_left, row(key, second), 1, 0, |row, diff| {
                for _ in 0..diff {
                    joined.push(row.clone());
                }
            });
        }
        let mut unmatched = Vec::new();
        sides.leave(true, u64::MAX, |_, row| unmatched.push(row));
        sides.leave(false, u64::MAX, |_, row| unmatched.push(row));
        (joined, unmatched)
    }

    #[test]
    fn an_interval_joins_rows_leave_once_the_other_side_has_passed_them() {
        let mut sides = sides(outer(false, false, None));
        for second in 0..100 {
            sides.arrive(true, row("s1", second), 1, 0, |_, _| {});
        }
        let key = vec![text("s1")];
        // The right side's frontier at 90 s: left rows up to 79 s can meet nothing more.
        sides.leave(true, 90_000, |_, _| {
            panic!("an inner join gives no unmatched rows")
        });
        assert_eq!(sides.left.rows.total(&key), 20);
        // A restored side rebuilds when its rows leave.
        let mut restored =
            Side::restored(sides.left.rows.clone(), Met::default(), &sides.expiry.left);
        restored.leaving.take_before(u64::MAX, |_, row| {
            let (key, payload) = split(row, 1);
            restored.rows.remove_one(&key, &payload);
        });
        assert!(restored.rows.rows.is_empty());
    }

    #[test]
    fn a_left_join_gives_each_left_row_that_met_nothing_padded_once_it_leaves() {
        let mut sides = sides(outer(true, false, None));
        let (joined, unmatched) = run(
            &mut sides,
            &[
                (true, "a", 0),
                (true, "a", 0),
                (true, "b", 0),
                (false, "a", 5),
                (false, "b", 11),
            ],
        );
        let pair = vec![text("a"), ts(0), text("a"), ts(5)];
        assert_eq!(joined, vec![pair.clone(), pair]);
        // b's right row came 11 s later, out of reach: b comes out alone, and only b.
        assert_eq!(
            unmatched,
            vec![vec![text("b"), ts(0), Datum::Null, Datum::Null]]
        );
        assert!(sides.left.met.rows.is_empty(), "the met rows leave too");
        assert!(sides.left.rows.rows.is_empty());
    }

    #[test]
    fn a_full_join_pads_the_unmatched_rows_of_both_sides() {
        let mut sides = sides(outer(true, true, None));
        let (joined, unmatched) = run(
            &mut sides,
            &[(false, "a", 3), (true, "a", 20), (true, "b", 0)],
        );
        assert!(joined.is_empty());
        let mut unmatched = unmatched;
        unmatched.sort();
        assert_eq!(
            unmatched,
            vec![
                vec![Datum::Null, Datum::Null, text("a"), ts(3)],
                vec![text("a"), ts(20), Datum::Null, Datum::Null],
                vec![text("b"), ts(0), Datum::Null, Datum::Null],
            ]
        );
    }

    #[test]
    fn a_semi_join_gives_each_left_row_once_and_an_anti_join_those_that_met_nothing() {
        let arrivals = [
            (true, "a", 0),
            (false, "a", 1),
            (false, "a", 2),
            (false, "b", 1),
            (true, "b", 0),
            (true, "c", 0),
        ];
        let (joined, unmatched) = run(&mut sides(outer(false, false, Some(true))), &arrivals);
        assert_eq!(joined, vec![payload("a", 0), payload("b", 0)]);
        assert!(unmatched.is_empty());
        let (joined, unmatched) = run(&mut sides(outer(false, false, Some(false))), &arrivals);
        assert!(joined.is_empty());
        assert_eq!(unmatched, vec![payload("c", 0)]);
    }

    #[test]
    fn a_row_without_a_key_or_a_time_is_unmatched_at_once_and_not_kept() {
        let mut sides = sides(outer(true, false, None));
        let mut given = Vec::new();
        for row in [
            vec![Datum::Null, Datum::Null, ts(0)],
            vec![text("a"), text("a"), Datum::Null],
        ] {
            let kept = sides.arrive(true, row, 1, 0, |row, _| given.push(row));
            assert!(!kept);
        }
        assert_eq!(
            given,
            vec![
                vec![Datum::Null, ts(0), Datum::Null, Datum::Null],
                vec![text("a"), Datum::Null, Datum::Null, Datum::Null],
            ]
        );
        assert!(sides.left.rows.rows.is_empty() && sides.left.leaving.0.is_empty());
    }
}
