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

mod state;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use vibelux_interfaces::checkpoint::{Participant, encode, routed_to};

use self::state::{Answers, Side, Sides};
pub use self::state::{Expiry, JoinSide, Met, SideExpiry};
use crate::aggregate::key_hash;
use crate::arranged_join::Outer;
use crate::row::{Row, Update};

/// Joins two streams of rows (as updates) on their first `key_columns` columns, within the
/// interval `expiry` bounds; `outer` says which rows come out besides or instead of the pairs.
pub trait IntervalJoinExt<'scope> {
    /// With `checkpointing`, both sides' rows take part in checkpoints and are restored from
    /// the one the run resumes from.
    fn join_within(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        expiry: Expiry,
        outer: Outer,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> IntervalJoinExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn join_within(
        self,
        other: Stream<'scope, u64, Vec<Update>>,
        key_columns: usize,
        expiry: Expiry,
        outer: Outer,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        let route = move |update: &Update| key_hash(&update.0[..key_columns]);
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        let answers = Answers(outer);
        // Whether rows can come out unmatched, and so the parts carry which rows met.
        let tracking = answers.gives_unmatched(true)
            || answers.gives_unmatched(false)
            || outer.left_rows_matching.is_some();
        self.binary_frontier(
            other,
            Exchange::new(route),
            Exchange::new(route),
            "IntervalJoin",
            move |initial, _| {
                let (left, right) =
                    restored(checkpointing.as_ref(), tracking, worker, peers, &expiry);
                let mut sides = Sides {
                    left,
                    right,
                    key_columns,
                    expiry,
                    answers,
                };
                // The output held back for rows that may still come out unmatched: at or
                // before the earliest time one leaves after (restored rows included).
                let mut held: Option<Capability<u64>> = Some(initial);
                // Batches stamped at or after a cut being taken wait here until the snapshot
                // (`true`: from the left input).
                let mut waiting: Vec<(Capability<u64>, bool, Vec<Update>)> = Vec::new();
                let mut answered = 0;
                let mut finished = false;
                // The latest time an output was stamped at, for the final part.
                let mut emitted_up_to = 0u64;
                move |(left_input, left_frontier), (right_input, right_frontier), output| {
                    let mut apply =
                        |is_left: bool,
                         at: &Capability<u64>,
                         data: &mut Vec<Update>,
                         sides: &mut Sides,
                         held: &mut Option<Capability<u64>>| {
                            let now = *at.time();
                            emitted_up_to = emitted_up_to.max(now);
                            let mut session = output.session(at);
                            let mut pending = false;
                            for (row, _, diff) in data.drain(..) {
                                let emit = |joined, d| session.give((joined, now, d));
                                pending |= sides.arrive(is_left, row, diff, now, emit);
                            }
                            if pending && held.as_ref().is_none_or(|held| *held.time() > now) {
                                *held = Some(at.clone());
                            }
                        };
                    // A batch from either input: applied, or set aside past a pending cut.
                    let mut arrived =
                        |is_left: bool, at: Capability<u64>, data: &mut Vec<Update>| {
                            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                            if cut.is_some_and(|cut| *at.time() >= cut.time) {
                                waiting.push((at, is_left, std::mem::take(data)));
                            } else {
                                apply(is_left, &at, data, &mut sides, &mut held);
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
                    // Rows that leave before `bounds` (left's, right's) go; the unmatched come
                    // out at the time they left after, at the end of this activation.
                    let mut unmatched: Vec<(u64, Row)> = Vec::new();
                    let leave =
                        |sides: &mut Sides, bounds: (u64, u64), unmatched: &mut Vec<(u64, Row)>| {
                            sides.leave(true, bounds.0, |after, row| unmatched.push((after, row)));
                            sides.leave(false, bounds.1, |after, row| unmatched.push((after, row)));
                        };
                    if let (Some(participant), Some(cut)) = (
                        &checkpointing,
                        checkpointing.as_ref().and_then(|p| p.pending(answered)),
                    ) && !left_frontier.less_than(&cut.time)
                        && !right_frontier.less_than(&cut.time)
                    {
                        // What comes out before the cut is out before its snapshot.
                        leave(&mut sides, (cut.time, cut.time), &mut unmatched);
                        participant.submit(cut, snapshot(&sides, tracking));
                        answered = cut.id;
                        for (at, is_left, mut data) in waiting.drain(..) {
                            apply(is_left, &at, &mut data, &mut sides, &mut held);
                        }
                    }
                    // Rows no later row of the other side can meet leave, once no batch waits
                    // for a snapshot (those may still meet them).
                    if waiting.is_empty() {
                        let passed =
                            |frontier: timely::progress::frontier::AntichainRef<'_, u64>| {
                                frontier.first().copied().unwrap_or(u64::MAX)
                            };
                        let bounds = (passed(right_frontier), passed(left_frontier));
                        leave(&mut sides, bounds, &mut unmatched);
                    }
                    unmatched.sort_by_key(|(after, _)| *after);
                    let mut unmatched = unmatched.into_iter().peekable();
                    while let Some(&(after, _)) = unmatched.peek() {
                        let held = held.as_ref().expect("an unmatched row's time is held");
                        let at = held.delayed(&after);
                        let mut session = output.session(&at);
                        while let Some((_, row)) = unmatched.next_if(|(time, _)| *time == after) {
                            session.give((row, after, 1));
                        }
                        emitted_up_to = emitted_up_to.max(after);
                    }
                    // Hold the output only as far back as the next row that may come out.
                    let next = [true, false]
                        .into_iter()
                        .filter(|is_left| answers.gives_unmatched(*is_left))
                        .filter_map(|is_left| match is_left {
                            true => sides.left.next_leaving(),
                            false => sides.right.next_leaving(),
                        })
                        .min();
                    match (next, held.as_mut()) {
                        (Some(next), Some(held)) => held.downgrade(&next),
                        _ => held = None,
                    }
                    if left_frontier.is_empty() && right_frontier.is_empty() && !finished {
                        finished = true;
                        if let Some(participant) = &checkpointing {
                            participant
                                .submit_final_after(snapshot(&sides, tracking), emitted_up_to);
                        }
                    }
                }
            },
        )
    }
}

/// A checkpoint part: both sides' rows, and which have met when rows can come out unmatched
/// (an inner join's parts are as they were before outer interval joins).
fn snapshot(sides: &Sides, tracking: bool) -> Vec<u8> {
    match tracking {
        true => encode(&(
            &sides.left.rows,
            &sides.right.rows,
            &sides.left.met,
            &sides.right.met,
        )),
        false => encode(&(&sides.left.rows, &sides.right.rows)),
    }
}

/// Both sides as the checkpoint the run resumes from left them, with the keys this worker
/// owns now (another worker count routes keys elsewhere).
fn restored(
    checkpointing: Option<&Participant>,
    tracking: bool,
    worker: usize,
    peers: usize,
    expiry: &Expiry,
) -> (Side, Side) {
    let parts: Vec<(JoinSide, JoinSide, Met, Met)> = match tracking {
        true => Participant::restored_parts(checkpointing, "join"),
        false => Participant::restored_parts::<(JoinSide, JoinSide)>(checkpointing, "join")
            .into_iter()
            .map(|(left, right)| (left, right, Met::default(), Met::default()))
            .collect(),
    };
    let (mut left, mut right) = (Side::default(), Side::default());
    let ours = |key: &Row| routed_to(key_hash(key), worker, peers);
    for (left_rows, right_rows, left_met, right_met) in parts {
        left.take_routed(left_rows, left_met, ours);
        right.take_routed(right_rows, right_met, ours);
    }
    (
        Side::restored(left.rows, left.met, &expiry.left),
        Side::restored(right.rows, right.met, &expiry.right),
    )
}
