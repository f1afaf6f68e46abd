//! As-of (temporal) joins: each row of a stream joined with the version of a versioned table
//! valid at the row's event time — the setpoint or calibration that held when the reading was
//! taken (`JOIN setpoints FOR SYSTEM_TIME AS OF r.ts`).
//!
//! A regular join keeps every stream row, because a later table change must retract what the
//! row produced. An as-of join gives each row once, never retracted, so it keeps no stream rows:
//! a row waits only until no version that could apply to it can still come — until the versions'
//! frontier, less their allowed lateness, has passed the row's time — and leaves joined. Each
//! key keeps the versions that rows still to come may need: those after the earliest time such
//! a row can have, and the one version in force at that time; older ones are forgotten as new
//! ones arrive.
//!
//! A row that can be joined when it arrives leaves stamped with the dataflow time it arrived
//! at. A row that waits is held at the latest time the output's lateness allows for its event
//! time instead (see [`AsOfSpec::leaves_at`]), so that rows read far ahead hold nothing back
//! but their own windows. At a checkpoint the rows still waiting are kept in the part; they
//! are stamped after the cut (any row stamped before it could leave already), so that,
//! restored, they leave again, and only once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::progress::frontier::AntichainRef;
use vibelux_interfaces::checkpoint::{Participant, encode, in_key_order, routed_to};

use crate::aggregate::{StateMap, key_hash};
use crate::row::{Datum, Row};

/// What an as-of join needs to know of its inputs, both laid out as `key columns ++ payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOfSpec {
    pub key_columns: usize,
    /// Where the stream row's event time is in its payload.
    pub stream_time: usize,
    /// Where a version's start is in its payload.
    pub version_time: usize,
    /// How late a stream row may arrive behind its input's frontier (nanoseconds).
    pub stream_lateness_nanos: i64,
    /// How late a version may arrive behind its input's frontier (nanoseconds).
    pub version_lateness_nanos: i64,
    /// How late the joined rows may be behind the output's frontier (nanoseconds): a waiting
    /// row leaves stamped up to this much after its event time.
    pub output_lateness_nanos: i64,
    /// The width of a version's payload, for the NULLs of a row no version matches.
    pub version_width: usize,
    /// `LEFT JOIN`: a row no version matches leaves with NULLs instead of not at all.
    pub keep_unmatched: bool,
}

/// A stream row waiting for the versions to pass its time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiting {
    /// The dataflow time it leaves stamped at.
    at: u64,
    key: Row,
    payload: Row,
}

/// The versions each key may still need, and the rows waiting for theirs.
#[derive(Debug, Default)]
struct AsOfState {
    /// Per key, versions by the time they start (nanoseconds); of two with the same start, the
    /// greater row, so that the outcome does not depend on which came first.
    versions: StateMap<Row, BTreeMap<i64, Row>>,
    /// By event time, then arrival order.
    waiting: BTreeMap<(i64, u64), Waiting>,
    arrivals: u64,
    /// Rows that left stamped at or after a time a cut may still be taken at (see
    /// [`AsOfState::leave`]), until no cut can come before them.
    left_ahead: Vec<Waiting>,
}

/// The part a checkpoint keeps, in key order.
#[derive(Serialize, Deserialize)]
struct AsOfPart<V = Vec<(Row, BTreeMap<i64, Row>)>> {
    /// Owned when read back, borrowed from the state when written.
    versions: V,
    waiting: Vec<((i64, u64), Waiting)>,
}

impl AsOfState {
    /// Adds a version; forgets the key's versions that no row at or after `needed_from` can
    /// use: all but the last one starting at or before it.
    fn add_version(&mut self, key: Row, payload: Row, start: i64, needed_from: i64) {
        let versions = self.versions.entry(key).or_default();
        match versions.get_mut(&start) {
            Some(existing) if *existing >= payload => {}
            Some(existing) => *existing = payload,
            None => {
                versions.insert(start, payload);
            }
        }
        if let Some((&in_force, _)) = versions.range(..=needed_from).next_back() {
            *versions = versions.split_off(&in_force);
        }
    }

    /// The payload of the key's version in force at `time`.
    fn in_force(&self, key: &Row, time: i64) -> Option<&Row> {
        if key.iter().any(Datum::is_null) {
            return None;
        }
        let versions = self.versions.get(key)?;
        versions
            .range(..=time)
            .next_back()
            .map(|(_, payload)| payload)
    }

    /// The joined row of a stream row, if it leaves at all.
    fn joined(&self, spec: &AsOfSpec, key: &Row, payload: &Row) -> Option<Row> {
        let version = payload[spec.stream_time]
            .as_timestamp_nanos()
            .and_then(|time| self.in_force(key, time));
        match version {
            Some(version) => Some(concat(payload, version)),
            None if spec.keep_unmatched => {
                let nulls = vec![Datum::Null; spec.version_width];
                Some(concat(payload, &nulls))
            }
            None => None,
        }
    }

    fn wait(&mut self, time: i64, row: Waiting) {
        self.arrivals += 1;
        self.waiting.insert((time, self.arrivals), row);
    }

    /// Takes the waiting rows whose time is before `before`, in time order.
    fn ready(&mut self, before: i64) -> Vec<Waiting> {
        let later = self.waiting.split_off(&(before, 0));
        std::mem::replace(&mut self.waiting, later)
            .into_values()
            .collect()
    }

    /// The part of a cut at `cut`: the versions, the waiting rows, and the rows that left
    /// stamped after the cut, which a restored run must give again (the sources resume after
    /// them, and downstream's parts hold only what came before the cut).
    fn part(&self, spec: &AsOfSpec, cut: Option<u64>) -> Vec<u8> {
        let left = self
            .left_ahead
            .iter()
            .filter(|row| cut.is_some_and(|cut| row.at >= cut))
            .map(|row| {
                let time = row.payload[spec.stream_time]
                    .as_timestamp_nanos()
                    .unwrap_or(i64::MIN);
                ((time, 0), row.clone())
            });
        encode(&AsOfPart {
            versions: in_key_order(&self.versions),
            waiting: self
                .waiting
                .iter()
                .map(|(order, row)| (*order, row.clone()))
                .chain(left)
                .collect(),
        })
    }

    /// Adds what a restored part holds for the keys `ours` accepts.
    fn take_routed(&mut self, part: AsOfPart, ours: impl Fn(&Row) -> bool) {
        self.versions
            .extend(part.versions.into_iter().filter(|(key, _)| ours(key)));
        for ((time, _), row) in part.waiting {
            if ours(&row.key) {
                self.wait(time, row);
            }
        }
    }
}

fn concat(left: &Row, right: &Row) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend_from_slice(left);
    row.extend_from_slice(right);
    row
}

/// The earliest event time a row arriving at or after `frontier` can have (nanoseconds).
fn earliest_after(frontier: AntichainRef<'_, u64>, lateness_nanos: i64) -> i64 {
    match frontier.first() {
        None => i64::MAX,
        Some(&time) => i64::try_from(time)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000)
            .saturating_sub(lateness_nanos),
    }
}

impl AsOfSpec {
    /// The dataflow time a row arrived at `arrived` with event time `time` leaves stamped at if
    /// it waits: as late as the output's lateness allows, not its arrival. A worker may read
    /// rows far ahead of the versions (the end of a file split between workers); held at their
    /// arrival, they would hold the whole output back, and with it, through flow control, the
    /// very sources they wait for.
    fn leaves_at(&self, arrived: u64, time: i64) -> u64 {
        let latest = time.saturating_add(self.output_lateness_nanos).max(0) / 1_000_000;
        arrived.max(u64::try_from(latest).unwrap_or(0))
    }
}

/// Capabilities for the dataflow times waiting rows leave at, with how many rows each.
#[derive(Default)]
struct Held(BTreeMap<u64, (Capability<u64>, usize)>);

impl Held {
    fn hold(&mut self, capability: &Capability<u64>, at: u64) {
        self.0
            .entry(at)
            .or_insert_with(|| (capability.delayed(&at), 0))
            .1 += 1;
    }

    fn release(&mut self, at: u64, rows: usize) {
        if let Some((_, count)) = self.0.get_mut(&at) {
            *count = count.saturating_sub(rows);
            if *count == 0 {
                self.0.remove(&at);
            }
        }
    }

    /// Moves every row held before `cut` to `cut`.
    fn move_up_to(&mut self, cut: u64) {
        let later = self.0.split_off(&cut);
        let earlier = std::mem::replace(&mut self.0, later);
        let mut moved = 0;
        let mut capability = None;
        for (_, (held, count)) in earlier {
            moved += count;
            capability.get_or_insert(held);
        }
        if let Some(capability) = capability {
            let entry = self
                .0
                .entry(cut)
                .or_insert_with(|| (capability.delayed(&cut), 0));
            entry.1 += moved;
        }
    }
}

impl AsOfState {
    fn add_versions(&mut self, spec: &AsOfSpec, rows: Vec<Row>, needed_from: i64) {
        for mut key in rows {
            let payload = key.split_off(spec.key_columns);
            if let Some(start) = payload[spec.version_time].as_timestamp_nanos() {
                self.add_version(key, payload, start, needed_from);
            }
        }
    }

    /// Takes stream rows arrived at `at`: those before `joinable_before` leave joined now (the
    /// rows returned), the others wait, held at `at`.
    fn arrive(
        &mut self,
        spec: &AsOfSpec,
        held: &mut Held,
        capability: &Capability<u64>,
        rows: Vec<Row>,
        joinable_before: i64,
    ) -> Vec<Row> {
        let mut joined = Vec::with_capacity(rows.len());
        for mut key in rows {
            let payload = key.split_off(spec.key_columns);
            match payload[spec.stream_time].as_timestamp_nanos() {
                Some(time) if time >= joinable_before => {
                    let at = spec.leaves_at(*capability.time(), time);
                    held.hold(capability, at);
                    self.wait(time, Waiting { at, key, payload });
                }
                _ => joined.extend(self.joined(spec, &key, &payload)),
            }
        }
        joined
    }

    /// Joins the waiting rows before `before` and gives them, grouped by the time they leave
    /// at, releasing their holds.
    ///
    /// A waiting row leaves stamped later than it arrived. Stamped at or after a cut that is
    /// pending, or that may yet be taken (a cut comes after every time the sources hold, so
    /// at or after the stream's frontier), it counts downstream as after the cut while its
    /// source resumes after it: the part must hold it. Those rows are kept from `ahead_from`.
    fn leave(
        &mut self,
        spec: &AsOfSpec,
        held: &mut Held,
        before: i64,
        ahead_from: u64,
        mut give: impl FnMut(&Capability<u64>, Vec<Row>),
    ) {
        // Per time: how many rows leave, and the joined ones (an inner join drops the others).
        let mut leaving: BTreeMap<u64, (usize, Vec<Row>)> = BTreeMap::new();
        for row in self.ready(before) {
            let (count, rows) = leaving.entry(row.at).or_default();
            *count += 1;
            rows.extend(self.joined(spec, &row.key, &row.payload));
            if row.at >= ahead_from {
                self.left_ahead.push(row);
            }
        }
        for (at, (count, rows)) in leaving {
            let (capability, _) = held.0.get(&at).expect("a waiting row's time is held");
            give(capability, rows);
            held.release(at, count);
        }
    }

    /// The earliest event time a stream row still to be joined can have: rows to come, rows
    /// waiting, rows deferred until a snapshot, rows a part may give again.
    fn needed_from(
        &self,
        spec: &AsOfSpec,
        stream_frontier: AntichainRef<'_, u64>,
        deferred_from: Option<u64>,
    ) -> i64 {
        let mut earliest = earliest_after(stream_frontier, spec.stream_lateness_nanos);
        if let Some(((time, _), _)) = self.waiting.first_key_value() {
            earliest = earliest.min(*time);
        }
        if let Some(at) = deferred_from {
            let at = AntichainRef::new(std::slice::from_ref(&at));
            earliest = earliest.min(earliest_after(at, spec.stream_lateness_nanos));
        }
        // A part may hold rows that left: restored, they meet the same versions again.
        for row in &self.left_ahead {
            if let Some(time) = row.payload[spec.stream_time].as_timestamp_nanos() {
                earliest = earliest.min(time);
            }
        }
        earliest
    }
}

pub trait AsOfJoinExt<'scope> {
    /// Joins each row of this stream with the version of `versions` in force at its event
    /// time. With `checkpointing`, the versions and the waiting rows take part in checkpoints
    /// and are restored from the one the run resumes from.
    fn join_as_of(
        self,
        versions: Stream<'scope, u64, Vec<Row>>,
        spec: AsOfSpec,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// Batches stamped at or after a cut being taken, kept until the snapshot.
#[derive(Default)]
struct Deferred {
    versions: Vec<Vec<Row>>,
    rows: Vec<(Capability<u64>, Vec<Row>)>,
}

impl<'scope> AsOfJoinExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn join_as_of(
        self,
        versions: Stream<'scope, u64, Vec<Row>>,
        spec: AsOfSpec,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>> {
        let keys = spec.key_columns;
        let route = move |row: &Row| key_hash(&row[..keys]);
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        self.binary_frontier(
            versions,
            Exchange::new(route),
            Exchange::new(route),
            "AsOfJoin",
            move |initial, _| {
                let mut state = AsOfState::default();
                let restored: Vec<AsOfPart> =
                    Participant::restored_parts(checkpointing.as_ref(), "as-of join");
                for part in restored {
                    // Another worker count: keep the keys routed here now.
                    state.take_routed(part, |key| routed_to(key_hash(key), worker, peers));
                }
                let mut held = Held::default();
                for row in state.waiting.values() {
                    held.hold(&initial, row.at);
                }
                drop(initial);
                let mut deferred = Deferred::default();
                let mut answered = 0;
                let mut finished = false;
                let mut emitted_up_to = 0u64;
                move |(stream_input, stream_frontier),
                      (versions_input, versions_frontier),
                      output| {
                    let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                    let (stream_frontier, versions_frontier) =
                        (stream_frontier.frontier(), versions_frontier.frontier());
                    let deferred_from =
                        |deferred: &Deferred| deferred.rows.iter().map(|(at, _)| *at.time()).min();
                    // The earliest a cut can be at that this worker has not answered.
                    let ahead_from = match (&checkpointing, cut) {
                        (None, _) => u64::MAX,
                        (Some(_), cut) => stream_frontier
                            .first()
                            .copied()
                            .unwrap_or(u64::MAX)
                            .min(cut.map_or(u64::MAX, |cut| cut.time)),
                    };
                    state.left_ahead.retain(|row| row.at >= ahead_from);
                    versions_input.for_each(|time, data| {
                        let Some(&at) = time.least() else {
                            return;
                        };
                        if cut.is_some_and(|cut| at >= cut.time) {
                            deferred.versions.push(std::mem::take(data));
                        } else {
                            let needed =
                                state.needed_from(&spec, stream_frontier, deferred_from(&deferred));
                            state.add_versions(&spec, std::mem::take(data), needed);
                        }
                    });
                    // Rows before this time have every version that can apply to them.
                    let mut joinable_before =
                        earliest_after(versions_frontier, spec.version_lateness_nanos);
                    if let (Some(cut), false) = (cut, deferred.versions.is_empty()) {
                        let cut = AntichainRef::new(std::slice::from_ref(&cut.time));
                        joinable_before =
                            joinable_before.min(earliest_after(cut, spec.version_lateness_nanos));
                    }
                    stream_input.for_each(|time, data| {
                        let Some(at) = time.retain_least(0) else {
                            return;
                        };
                        if cut.is_some_and(|cut| *at.time() >= cut.time) {
                            deferred.rows.push((at, std::mem::take(data)));
                        } else {
                            let joined = state.arrive(
                                &spec,
                                &mut held,
                                &at,
                                std::mem::take(data),
                                joinable_before,
                            );
                            emitted_up_to = emitted_up_to.max(*at.time());
                            output.session(&at).give_iterator(joined.into_iter());
                        }
                    });
                    state.leave(&spec, &mut held, joinable_before, ahead_from, |at, rows| {
                        emitted_up_to = emitted_up_to.max(*at.time());
                        output.session(at).give_iterator(rows.into_iter());
                    });
                    if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                        && !stream_frontier.less_than(&cut.time)
                        && !versions_frontier.less_than(&cut.time)
                    {
                        // Rows still waiting are in the part: they leave after the cut.
                        held.move_up_to(cut.time);
                        for row in state.waiting.values_mut() {
                            row.at = row.at.max(cut.time);
                        }
                        participant.submit(cut, state.part(&spec, Some(cut.time)));
                        answered = cut.id;
                        let Deferred { versions, rows } = std::mem::take(&mut deferred);
                        let needed = state.needed_from(
                            &spec,
                            stream_frontier,
                            rows.iter().map(|(at, _)| *at.time()).min(),
                        );
                        for data in versions {
                            state.add_versions(&spec, data, needed);
                        }
                        let joinable_before =
                            earliest_after(versions_frontier, spec.version_lateness_nanos);
                        for (at, data) in rows {
                            let joined = state.arrive(&spec, &mut held, &at, data, joinable_before);
                            emitted_up_to = emitted_up_to.max(*at.time());
                            output.session(&at).give_iterator(joined.into_iter());
                        }
                        state.leave(&spec, &mut held, joinable_before, ahead_from, |at, rows| {
                            emitted_up_to = emitted_up_to.max(*at.time());
                            output.session(at).give_iterator(rows.into_iter());
                        });
                    }
                    if stream_frontier.is_empty() && versions_frontier.is_empty() && !finished {
                        finished = true;
                        if let Some(participant) = &checkpointing {
                            participant.submit_final_after(state.part(&spec, None), emitted_up_to);
                        }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Datum {
        Datum::Utf8(value.into())
    }

    const SPEC: AsOfSpec = AsOfSpec {
        key_columns: 1,
        stream_time: 0,
        version_time: 0,
        stream_lateness_nanos: 0,
        version_lateness_nanos: 0,
        output_lateness_nanos: 0,
        version_width: 2,
        keep_unmatched: false,
    };

    fn version(start: i64, value: f64) -> Row {
        vec![Datum::Timestamp(start), Datum::Float64(value)]
    }

    #[test]
    fn a_row_meets_the_version_in_force_at_its_time() {
        let mut state = AsOfState::default();
        let key = vec![text("z1")];
        state.add_version(key.clone(), version(10, 20.0), 10, 0);
        state.add_version(key.clone(), version(30, 22.0), 30, 0);
        let row = |time| vec![Datum::Timestamp(time)];
        assert_eq!(state.joined(&SPEC, &key, &row(5)), None);
        assert_eq!(
            state.joined(&SPEC, &key, &row(10)),
            Some(vec![
                Datum::Timestamp(10),
                Datum::Timestamp(10),
                Datum::Float64(20.0)
            ])
        );
        assert_eq!(
            state.joined(&SPEC, &key, &row(29)).unwrap()[2],
            Datum::Float64(20.0)
        );
        assert_eq!(
            state.joined(&SPEC, &key, &row(30)).unwrap()[2],
            Datum::Float64(22.0)
        );
        // Another key, a NULL key, a NULL time: no version; LEFT pads instead.
        assert_eq!(state.joined(&SPEC, &vec![text("z2")], &row(40)), None);
        assert_eq!(state.joined(&SPEC, &vec![Datum::Null], &row(40)), None);
        let left = AsOfSpec {
            keep_unmatched: true,
            ..SPEC
        };
        assert_eq!(
            state.joined(&left, &key, &vec![Datum::Null]),
            Some(vec![Datum::Null, Datum::Null, Datum::Null])
        );
    }

    #[test]
    fn a_key_keeps_the_version_in_force_when_rows_still_to_come_begin_and_those_after() {
        let mut state = AsOfState::default();
        let key = vec![text("z1")];
        for start in [10, 20, 30] {
            state.add_version(key.clone(), version(start, start as f64), start, 0);
        }
        // Rows still to come are at 25 or later: the version from 20 is in force then.
        state.add_version(key.clone(), version(40, 40.0), 40, 25);
        let starts: Vec<i64> = state.versions[&key].keys().copied().collect();
        assert_eq!(starts, vec![20, 30, 40]);
        assert_eq!(
            state
                .joined(&SPEC, &key, &vec![Datum::Timestamp(25)])
                .unwrap()[2],
            Datum::Float64(20.0)
        );
        // Two versions starting together: the greater row, whichever came first.
        state.add_version(key.clone(), version(40, 39.0), 40, 25);
        assert_eq!(state.versions[&key][&40], version(40, 40.0));
    }

    #[test]
    fn waiting_rows_leave_in_time_order_once_their_time_is_passed() {
        let mut state = AsOfState::default();
        for time in [30, 10, 20] {
            let row = Waiting {
                at: 0,
                key: vec![text("z1")],
                payload: vec![Datum::Timestamp(time)],
            };
            state.wait(time, row);
        }
        let times = |rows: Vec<Waiting>| -> Vec<i64> {
            rows.iter()
                .map(|row| row.payload[0].as_timestamp_nanos().unwrap())
                .collect()
        };
        assert_eq!(times(state.ready(20)), vec![10]);
        assert_eq!(times(state.ready(i64::MAX)), vec![20, 30]);
        assert!(state.waiting.is_empty());
    }
}
