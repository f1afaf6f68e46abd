//! Incremental `GROUP BY`: keyed accumulators that publish every change, and windows that close.
//!
//! Input rows are `key columns ++ argument columns` (planning puts a projection in front), routed
//! to workers by a hash of the key. Each batch of input updates the touched groups and emits, at the
//! batch's time, `-old` and `+new` for each group whose output changed — so a materialized view sees
//! a partial window within milliseconds of a row arriving.
//!
//! When the key holds a window bound, the group is a window and has a close time: its end plus the
//! allowed lateness, in watermark milliseconds. Sources only admit rows no older than
//! `watermark - lateness`, so once the input frontier reaches a close time no row for that window can
//! still arrive: the operator emits the window's row once on the second output (what sinks consume)
//! and drops its state. Without a window the group lives as long as it has rows.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use vibelux_interfaces::checkpoint::{Participant, in_key_order, routed_to};

use crate::accumulator::{Accumulator, AggregateSpec};
use crate::partial_aggregate::{CombineExt, Contribution};
use crate::row::{Datum, Row, Update};
use crate::session::{SessionColumns, SessionIndex, SessionMerge};
use crate::window::WindowKind;

/// How to find a group's window close time from its key.
#[derive(Clone, Serialize, Deserialize)]
pub struct WindowClose {
    /// Key column holding `window_start` or `window_end`.
    pub key_column: usize,
    /// When that column holds `window_start`: the windows, which say where each ends.
    pub ends_of_starts: Option<WindowKind>,
    /// The allowed lateness of the sources feeding the window.
    pub lateness_nanos: i64,
}

/// Checkpoints key a node's state by its plan's text: windows on the UTC clock print as they
/// did when their end was the start plus a fixed offset, so state taken then resumes.
impl std::fmt::Debug for WindowClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("WindowClose");
        out.field("key_column", &self.key_column);
        match self.ends_of_starts {
            None => out.field("end_offset_nanos", &0i64),
            Some(
                kind @ (WindowKind::Tumble { zone: None, .. }
                | WindowKind::Hop { zone: None, .. }
                | WindowKind::Session { .. }),
            ) => out.field("end_offset_nanos", &kind.size()),
            Some(kind) => out.field("ends_of_starts", &kind),
        };
        out.field("lateness_nanos", &self.lateness_nanos).finish()
    }
}

impl WindowClose {
    /// The watermark (milliseconds) at which the window holding `key` is complete.
    pub fn close_time(&self, key: &[Datum]) -> Option<u64> {
        let bound = key[self.key_column].as_timestamp_nanos()?;
        let end = match self.ends_of_starts {
            Some(windows) => windows.end_of(bound),
            None => bound,
        };
        let close_nanos = end.saturating_add(self.lateness_nanos);
        let whole_millis = close_nanos.div_euclid(1_000_000);
        let rounded_up = whole_millis + i64::from(close_nanos.rem_euclid(1_000_000) != 0);
        Some(u64::try_from(rounded_up).unwrap_or(0))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregatePlan {
    pub key_columns: usize,
    pub aggregates: Vec<AggregateSpec>,
    /// Whether input rows can be retracted (decides how order-dependent functions keep state).
    pub input_retracts: bool,
    pub window: Option<WindowClose>,
    /// For session windows: where the session bounds sit in the key (they merge).
    pub session: Option<SessionColumns>,
}

/// The state of one group, kept so it can be snapshotted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    rows: i64,
    accumulators: Vec<Accumulator>,
    emitted: Option<Row>,
    touched_in_batch: u64,
}

impl Group {
    fn new(plan: &AggregatePlan) -> Self {
        let accumulators = plan
            .aggregates
            .iter()
            .map(|spec| Accumulator::of(spec, plan.input_retracts))
            .collect();
        Group {
            rows: 0,
            accumulators,
            emitted: None,
            touched_in_batch: 0,
        }
    }

    /// Folds another group (a session merged into this one) into this group.
    fn absorb(&mut self, plan: &AggregatePlan, other: Group) {
        self.rows += other.rows;
        for ((spec, mine), theirs) in plan
            .aggregates
            .iter()
            .zip(&mut self.accumulators)
            .zip(other.accumulators)
        {
            mine.merge(theirs, spec.function);
        }
    }
}

/// Registers when a new group's window closes. False when it already closed: sources drop rows
/// beyond the lateness bound, so this is a guard (and how retractions from a join reach a window
/// that was final) rather than a path taken by admitted rows.
fn register_close(
    plan: &AggregatePlan,
    closing: &mut BTreeMap<u64, (Capability<u64>, Vec<Row>)>,
    key: &[Datum],
    now: u64,
    delay: impl FnOnce(u64) -> Capability<u64>,
) -> bool {
    let Some(window) = &plan.window else {
        return true;
    };
    let Some(close) = window.close_time(key) else {
        return false;
    };
    if close < now {
        return false;
    }
    closing
        .entry(close)
        .or_insert_with(|| (delay(close), Vec::new()))
        .1
        .push(key.to_vec());
    true
}

/// The group's key followed by its aggregate results.
fn output_row(plan: &AggregatePlan, mut key: Row, group: &Group) -> Row {
    key.extend(
        plan.aggregates
            .iter()
            .zip(&group.accumulators)
            .map(|(spec, accumulator)| accumulator.result(spec.function)),
    );
    key
}

/// Hash used to route a key to its worker: stable across processes and runs.
pub fn key_hash(key: &[Datum]) -> u64 {
    FixedState::default().hash_one(key)
}

/// Hash maps of operator state: a fast, fixed (unseeded) hash, as keys are not adversarial.
pub type StateMap<K, V> = HashMap<K, V, FixedState>;

/// Maintains a `GROUP BY` over a stream of updates.
///
/// Returns the view's changes and, for windowed groups, each window's final row once.
///
/// ```
/// use std::sync::Arc;
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::accumulator::{AggregateFunction, AggregateSpec};
/// use vibelux_operators::aggregate::{AggregateExt, AggregatePlan, AggregateSettings};
/// use vibelux_operators::row::Datum;
///
/// let plan = Arc::new(AggregatePlan {
///     key_columns: 1,
///     aggregates: vec![AggregateSpec { function: AggregateFunction::CountRows, argument: None, order_by: None, reference: None, filter: None }],
///     input_retracts: false,
///     window: None,
///     session: None,
/// });
/// let changes = timely::example(move |scope| {
///     let zone = |z: &str| vec![Datum::Utf8(z.into())];
///     vec![(zone("a"), 0, 1), (zone("a"), 0, 1), (zone("b"), 0, 1)]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .aggregate(plan, AggregateSettings::changes())
///         .0
///         .capture()
/// });
/// let mut rows: Vec<_> = changes.extract().into_iter().flat_map(|(_, updates)| updates).collect();
/// rows.sort();
/// assert_eq!(rows.len(), 2);
/// assert_eq!(rows[0].0, vec![Datum::Utf8("a".into()), Datum::Int64(2)]);
/// ```
pub trait AggregateExt<'scope> {
    fn aggregate(
        self,
        plan: Arc<AggregatePlan>,
        settings: AggregateSettings,
    ) -> (
        Stream<'scope, u64, Vec<Update>>,
        Stream<'scope, u64, Vec<Row>>,
    );
}

/// How an aggregate runs, beside what it computes.
pub struct AggregateSettings {
    /// With `emit_changes` false only final window rows are produced: the work of publishing
    /// every partial result is skipped when nothing reads it.
    pub emit_changes: bool,
    /// Set when the run stops: open windows are then incomplete and never published.
    pub discard_open_windows: Arc<AtomicBool>,
    /// The groups take part in checkpoints and resume from the one the run restored.
    pub checkpointing: Option<Participant>,
    /// Fold each batch into partial groups before the exchange ([`crate::partial_aggregate`]):
    /// worth it where the exchange serializes rows to other processes, not between threads.
    pub combine_before_exchange: bool,
}

impl AggregateSettings {
    /// Every change published, nothing checkpointed, rows exchanged as they are.
    pub fn changes() -> Self {
        AggregateSettings {
            emit_changes: true,
            discard_open_windows: Arc::new(AtomicBool::new(false)),
            checkpointing: None,
            combine_before_exchange: false,
        }
    }
}

/// What a checkpoint keeps of an aggregate: its groups (windows closing are found again from
/// their keys) and, for session windows, the index of open sessions.
#[derive(Serialize, Deserialize)]
struct Checkpointed<G = Vec<(Row, Group)>> {
    /// Owned when read back, borrowed from the state when written.
    groups: G,
    sessions: Option<SessionIndex>,
}

impl Checkpointed {
    /// The groups whose keys `ours` accepts, and the open sessions whose keys without their
    /// bounds `ours_unbounded` accepts.
    fn routed(
        self,
        ours: impl Fn(&[Datum]) -> bool,
        ours_unbounded: impl Fn(&[Datum]) -> bool,
    ) -> Self {
        Checkpointed {
            groups: self
                .groups
                .into_iter()
                .filter(|(key, _)| ours(key))
                .collect(),
            sessions: self
                .sessions
                .map(|sessions| sessions.routed(ours_unbounded)),
        }
    }
}

/// The groups of one worker and the windows waiting to close.
struct Groups {
    plan: Arc<AggregatePlan>,
    emit_changes: bool,
    global: bool,
    groups: StateMap<Row, Group>,
    closing: BTreeMap<u64, (Capability<u64>, Vec<Row>)>,
    sessions: Option<SessionIndex>,
    batch: u64,
    touched: Vec<Row>,
    retractions: Vec<Row>,
}

impl Groups {
    /// Applies a batch stamped `now`; returns the changes to publish at `now`. `finals` is a
    /// capability for the final-rows output at `now`, from which windows' closes are delayed.
    fn apply<C: Contribution>(
        &mut self,
        now: u64,
        finals: &Capability<u64>,
        data: &mut Vec<C>,
    ) -> Vec<Update> {
        let plan = self.plan.clone();
        let emit_changes = self.emit_changes;
        let key_columns = plan.key_columns;
        let mut changes = Vec::new();
        self.batch += 1;
        for mut contribution in data.drain(..) {
            if let (Some(index), Some(columns)) = (self.sessions.as_mut(), plan.session) {
                let merge = index.merge(columns, contribution.key(key_columns));
                if let Some(SessionMerge {
                    merged_key,
                    absorbed,
                }) = merge
                {
                    if !absorbed.is_empty() {
                        let mut merged = Group::new(&plan);
                        for old in absorbed {
                            let Some(mut group) = self.groups.remove(&old) else {
                                continue;
                            };
                            if let Some(emitted) = group.emitted.take().filter(|_| emit_changes) {
                                self.retractions.push(emitted);
                            }
                            merged.absorb(&plan, group);
                        }
                        let delay = |close: u64| finals.delayed(&close);
                        if register_close(&plan, &mut self.closing, &merged_key, now, delay) {
                            self.groups.insert(merged_key.clone(), merged);
                        }
                    }
                    contribution.rekey(key_columns, merged_key);
                }
            }
            let key = contribution.key(key_columns);
            let group = match self.groups.get_mut(key) {
                Some(group) => group,
                None => {
                    let key = key.to_vec();
                    let delay = |close: u64| finals.delayed(&close);
                    if !register_close(&plan, &mut self.closing, &key, now, delay) {
                        continue;
                    }
                    self.groups.entry(key).or_insert(Group::new(&plan))
                }
            };
            if emit_changes && group.touched_in_batch != self.batch {
                group.touched_in_batch = self.batch;
                self.touched.push(contribution.key(key_columns).to_vec());
            }
            contribution.fold_into(&plan.aggregates, &mut group.rows, &mut group.accumulators);
        }
        for old in self.retractions.drain(..) {
            changes.push((old, now, -1));
        }
        for key in self.touched.drain(..) {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            let current =
                (group.rows > 0 || self.global).then(|| output_row(&plan, key.clone(), group));
            if current != group.emitted {
                if let Some(old) = group.emitted.take() {
                    changes.push((old, now, -1));
                }
                if let Some(new) = &current {
                    changes.push((new.clone(), now, 1));
                }
                group.emitted = current;
            }
            // A group below zero rows holds retractions that overtook their rows (from another
            // worker, at a later time): it stays until they arrive.
            if group.rows == 0 && plan.window.is_none() && !self.global {
                self.groups.remove(&key);
            }
        }
        changes
    }

    /// Closes the windows whose close time the frontier has passed and that close before
    /// `before`; returns each closing capability with the windows' final rows.
    fn close(
        &mut self,
        frontier: timely::progress::frontier::AntichainRef<'_, u64>,
        before: u64,
    ) -> Vec<(Capability<u64>, Vec<Row>)> {
        let mut closed = Vec::new();
        while let Some(entry) = self.closing.first_entry() {
            if frontier.less_than(entry.key()) || *entry.key() >= before {
                break;
            }
            let (capability, keys) = entry.remove();
            let mut rows = Vec::new();
            for key in keys {
                if let (Some(index), Some(columns)) = (self.sessions.as_mut(), self.plan.session) {
                    index.forget(columns, &key);
                }
                if let Some(group) = self.groups.remove(&key)
                    && group.rows > 0
                {
                    rows.push(output_row(&self.plan, key, &group));
                }
            }
            closed.push((capability, rows));
        }
        closed
    }

    fn checkpointed(&self) -> impl Serialize + '_ {
        Checkpointed {
            groups: in_key_order(&self.groups),
            sessions: self.sessions.clone(),
        }
    }

    /// Takes back a checkpoint's groups; windows wait to close again at their close times.
    fn restore(&mut self, checkpointed: Checkpointed, finals: &Capability<u64>) {
        match (&mut self.sessions, checkpointed.sessions) {
            (Some(sessions), Some(restored)) => sessions.extend(restored),
            (sessions, restored) => *sessions = restored,
        }
        for (key, group) in checkpointed.groups {
            let delay = |close: u64| finals.delayed(&close);
            register_close(&self.plan, &mut self.closing, &key, 0, delay);
            self.groups.insert(key, group);
        }
    }
}

impl<'scope> AggregateExt<'scope> for Stream<'scope, u64, Vec<Update>> {
    fn aggregate(
        self,
        plan: Arc<AggregatePlan>,
        mut settings: AggregateSettings,
    ) -> (
        Stream<'scope, u64, Vec<Update>>,
        Stream<'scope, u64, Vec<Row>>,
    ) {
        // Groups without a window have no final rows: their changes are all there is.
        settings.emit_changes |= plan.window.is_none();
        // A global aggregate has one owner, which would otherwise fold every worker's rows.
        let global = plan.key_columns == 0;
        let combine = settings.combine_before_exchange || global;
        if self.scope().peers() > 1 && combine && plan.session.is_none() {
            let partials = self.combine(plan.clone());
            aggregate_contributions(partials, plan, settings)
        } else {
            aggregate_contributions(self, plan, settings)
        }
    }
}

/// The aggregate operator over rows or over partial groups.
fn aggregate_contributions<'scope, C: Contribution>(
    input: Stream<'scope, u64, Vec<C>>,
    plan: Arc<AggregatePlan>,
    settings: AggregateSettings,
) -> (
    Stream<'scope, u64, Vec<Update>>,
    Stream<'scope, u64, Vec<Row>>,
) {
    let AggregateSettings {
        emit_changes,
        discard_open_windows,
        checkpointing,
        ..
    } = settings;
    let worker = input.scope().index();
    let mut builder = OperatorBuilder::new("Aggregate".to_owned(), input.scope());
    let key_columns = plan.key_columns;
    // A global aggregate (no keys) lives on worker 0, which also publishes its empty row.
    let global = key_columns == 0 && plan.window.is_none();
    let session = plan.session;
    let route = move |key: &[Datum]| match session {
        _ if key_columns == 0 => 0,
        // Sessions of one key must meet on one worker to merge: route without their bounds.
        Some(columns) => {
            let rest: Row = key
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != columns.start && *i != columns.end)
                .map(|(_, datum)| datum.clone())
                .collect();
            key_hash(&rest)
        }
        None => key_hash(key),
    };
    let exchange = Exchange::new(move |c: &C| route(c.key(key_columns)));
    let peers = input.scope().peers();
    let mut input = builder.new_input(input, exchange);
    let (changes_output, changes) = builder.new_output();
    let (finals_output, finals) = builder.new_output();
    let mut changes_output = OutputBuilder::from(changes_output);
    let mut finals_output = OutputBuilder::from(finals_output);

    builder.build(move |initial_capabilities| {
        let mut state = Groups {
            plan: plan.clone(),
            emit_changes,
            global,
            groups: StateMap::default(),
            closing: BTreeMap::new(),
            sessions: plan.session.map(|_| SessionIndex::default()),
            batch: 0,
            touched: Vec::new(),
            retractions: Vec::new(),
        };
        let restored: Vec<Checkpointed> =
            Participant::restored_parts(checkpointing.as_ref(), "aggregate");
        let mut empty_row = None;
        if !restored.is_empty() {
            for checkpointed in restored {
                // Another worker count: keep the groups routed here now.
                let ours = |key: &[Datum]| routed_to(route(key), worker, peers);
                let ours_unbounded = |key: &[Datum]| routed_to(key_hash(key), worker, peers);
                let checkpointed = checkpointed.routed(ours, ours_unbounded);
                state.restore(checkpointed, &initial_capabilities[1]);
            }
        } else if global && worker == 0 {
            // SQL gives a global aggregate one row even over no input (`count(*)` is 0):
            // publish it at the start, then update it like any group.
            let accumulators: Vec<Accumulator> = plan
                .aggregates
                .iter()
                .map(|spec| Accumulator::of(spec, plan.input_retracts))
                .collect();
            let row: Row = plan
                .aggregates
                .iter()
                .zip(&accumulators)
                .map(|(spec, a)| a.result(spec.function))
                .collect();
            state.groups.insert(
                Vec::new(),
                Group {
                    rows: 0,
                    accumulators,
                    emitted: Some(row.clone()),
                    touched_in_batch: 0,
                },
            );
            empty_row = Some((initial_capabilities[0].clone(), row));
        }
        // Batches stamped at or after a cut being taken wait here until the snapshot.
        let mut waiting: Vec<(Capability<u64>, Capability<u64>, Vec<C>)> = Vec::new();
        let mut answered = 0;
        let mut finished = false;
        // The latest time an output was stamped at, for the final part.
        let mut emitted_up_to = 0u64;
        move |frontiers| {
            let mut changes_handle = changes_output.activate();
            let mut finals_handle = finals_output.activate();
            if let Some((capability, row)) = empty_row.take() {
                emitted_up_to = emitted_up_to.max(*capability.time());
                changes_handle
                    .session(&capability)
                    .give((row, *capability.time(), 1));
            }
            input.for_each(|time, data| {
                let (Some(changes_at), Some(finals_at)) =
                    (time.retain_least(0), time.retain_least(1))
                else {
                    return;
                };
                let now = *changes_at.time();
                let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                if cut.is_some_and(|cut| now >= cut.time) {
                    waiting.push((changes_at, finals_at, std::mem::take(data)));
                    return;
                }
                let mut changes = state.apply(now, &finals_at, data);
                if !changes.is_empty() {
                    emitted_up_to = emitted_up_to.max(now);
                    changes_handle
                        .session(&changes_at)
                        .give_container(&mut changes);
                }
            });

            let frontier = frontiers[0].frontier();
            // Interrupted: open windows are incomplete, so nothing of them is final; they
            // are kept in the checkpoint, if there is one, and closed after a restart. From
            // the moment the run stops, not only once every input has: each worker's source
            // lets go of its time as it stops, and one that was ahead would otherwise move
            // the frontier past windows another worker's rows have yet to reach.
            let stopped = discard_open_windows.load(Ordering::Relaxed);
            let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
            if !stopped {
                let before = cut.map_or(u64::MAX, |cut| cut.time);
                for (capability, mut rows) in state.close(frontier, before) {
                    emitted_up_to = emitted_up_to.max(*capability.time());
                    finals_handle.session(&capability).give_container(&mut rows);
                }
            }
            if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                && !frontier.less_than(&cut.time)
            {
                // Everything stamped before the cut is in, and nothing after it: snapshot,
                // then take the batches that waited for it.
                participant.submit_encoded(cut, &state.checkpointed());
                answered = cut.id;
                for (changes_at, finals_at, mut data) in waiting.drain(..) {
                    let mut changes = state.apply(*changes_at.time(), &finals_at, &mut data);
                    if !changes.is_empty() {
                        emitted_up_to = emitted_up_to.max(*changes_at.time());
                        changes_handle
                            .session(&changes_at)
                            .give_container(&mut changes);
                    }
                }
                if !stopped {
                    for (capability, mut rows) in state.close(frontier, u64::MAX) {
                        emitted_up_to = emitted_up_to.max(*capability.time());
                        finals_handle.session(&capability).give_container(&mut rows);
                    }
                }
            }
            if frontier.is_empty() && !finished {
                finished = true;
                if let Some(participant) = &checkpointing {
                    participant.submit_final_encoded(&state.checkpointed(), Some(emitted_up_to));
                }
                state.closing.clear();
                state.groups.clear();
            }
        }
    });
    (changes, finals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_its_end_plus_lateness_rounded_up_to_a_millisecond() {
        let close = WindowClose {
            key_column: 0,
            ends_of_starts: Some(WindowKind::Tumble {
                size: 60_000_000_000,
                offset: 0,
                zone: None,
            }),
            lateness_nanos: 1,
        };
        assert_eq!(close.close_time(&[Datum::Timestamp(0)]), Some(60_001));
        let close = WindowClose {
            key_column: 0,
            ends_of_starts: None,
            lateness_nanos: 0,
        };
        assert_eq!(close.close_time(&[Datum::Timestamp(5_000_000)]), Some(5));
        assert_eq!(close.close_time(&[Datum::Null]), None);
    }

    #[test]
    fn a_window_close_on_the_utc_clock_prints_as_before_time_zones() {
        let close = WindowClose {
            key_column: 2,
            ends_of_starts: Some(WindowKind::Tumble {
                size: 60,
                offset: 0,
                zone: None,
            }),
            lateness_nanos: 5,
        };
        assert_eq!(
            format!("{close:?}"),
            "WindowClose { key_column: 2, end_offset_nanos: 60, lateness_nanos: 5 }"
        );
        let zoned = WindowKind::Tumble {
            size: 60,
            offset: 0,
            zone: Some("Europe/Amsterdam".parse().unwrap()),
        };
        assert_eq!(
            format!("{zoned:?}"),
            "Tumble { size: 60, offset: 0, zone: \"Europe/Amsterdam\" }"
        );
    }
}
