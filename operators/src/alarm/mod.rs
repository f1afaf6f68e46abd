//! Alarms: a condition held for a duration raises an alarm per key, a clear condition held for a
//! duration clears it, and every change of state leaves as an event row.
//!
//! Semantics follow ISA-18.2 alarm management, in event time:
//! - **On-delay** (`FOR`). The raise condition must hold continuously for the duration before the
//!   alarm becomes active. The alarm's time is the instant it had held that long, not the next
//!   reading after it.
//! - **Hysteresis** (`CLEAR WHEN`). A separate clear condition, so a value hovering at the
//!   threshold does not chatter. Without one, the alarm clears when the raise condition is false.
//! - **Off-delay** (`CLEAR AFTER`). The clear condition must hold that long.
//! - **Re-alarm.** Once cleared, the next raise is a new activation.
//! - **Deadman** (`WHEN STALE`). The alarm raises when a key has sent nothing for a duration
//!   (by default 3 × its usual interval between readings).
//!
//! A condition holds from a reading until the next reading of the same key
//! (sample-and-hold). Readings are taken in event-time order once the frontier has passed them
//! (and the lateness bound), so results do not depend on arrival order or the number of workers.
//! Delays end at timers, which fire when the frontier passes them. A live source's watermark
//! advances with the clock while it is idle, so a deadman fires while nothing arrives at all.

mod commands;
mod instance;
mod message;

pub use commands::{AlarmAction, AlarmCommand, AlarmDesk};
pub use instance::{Instance, Transition};
pub use message::{TemplatePart, parse_template};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;

use vibelux_interfaces::checkpoint::{Participant, in_key_order, routed_to};

use crate::aggregate::{StateMap, key_hash};
use crate::row::Row;

/// What raises the alarm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Trigger {
    /// A boolean column: the raise condition; with `clear`, the clear condition's column.
    Condition { raise: usize, clear: Option<usize> },
    /// No reading for `after`; when `None`, 3 × the key's median interval between readings.
    Stale { after_nanos: Option<i64> },
}

/// An alarm over its input, projected to the view's columns, then the key, then the conditions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub name: String,
    pub keys: Vec<usize>,
    pub time: usize,
    pub trigger: Trigger,
    pub on_delay_nanos: i64,
    pub off_delay_nanos: i64,
    pub severity: String,
    pub message: Vec<TemplatePart>,
    /// How far behind the frontier a row may arrive (the sources' allowed lateness).
    pub lateness_nanos: i64,
}

/// The output columns after the key: what changed, when, and who changed it (for
/// acknowledgements and shelving; NULL otherwise).
pub const EVENT_COLUMNS: [&str; 8] = [
    "alarm",
    "state",
    "ts",
    "active_since",
    "severity",
    "message",
    "actor",
    "note",
];

fn release_millis(nanos: i64, lateness_nanos: i64) -> u64 {
    let millis = (nanos.saturating_add(lateness_nanos))
        .div_euclid(1_000_000)
        .max(0) as u64;
    millis + 1
}

/// Raises and clears `spec`'s alarm per key; emits one row per transition.
///
/// ```
/// use std::sync::Arc;
/// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
/// use vibelux_operators::alarm::{AlarmSpec, RaiseAlarmsExt, Trigger};
/// use vibelux_operators::row::{Datum, Row};
///
/// // zone, ts, temp_c > 30: hot from minute 2 to minute 8 (readings every minute).
/// let minute = 60_000_000_000i64;
/// let spec = Arc::new(AlarmSpec {
///     name: "too_hot".into(), keys: vec![0], time: 1,
///     trigger: Trigger::Condition { raise: 2, clear: None },
///     on_delay_nanos: 3 * minute, off_delay_nanos: 0,
///     severity: "high".into(), message: vec![], lateness_nanos: 0,
/// });
/// let captured = timely::example(move |scope| {
///     let rows: Vec<Row> = (0..12)
///         .map(|m| vec![Datum::Utf8("z1".into()), Datum::Timestamp(m * minute), Datum::Boolean((2..8).contains(&m))])
///         .collect();
///     rows.to_stream(scope).raise_alarms(spec.clone(), Default::default(), Default::default()).capture()
/// });
/// let events: Vec<Row> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// // Active 3 minutes after the condition began (minute 5); cleared at the first cool reading.
/// assert_eq!(events[0][2], Datum::Utf8("active".into()));
/// assert_eq!(events[0][3], Datum::Timestamp(5 * minute));
/// assert_eq!(events[1][2], Datum::Utf8("cleared".into()));
/// assert_eq!(events[1][3], Datum::Timestamp(8 * minute));
/// ```
pub trait RaiseAlarmsExt<'scope> {
    /// `desk` delivers people's commands (acknowledge, shelve) to the instances. With
    /// `checkpointing`, the instances (acknowledgements and shelves included), readings waiting
    /// and timers take part in checkpoints, and resume from the one the run restored.
    fn raise_alarms(
        self,
        spec: Arc<AlarmSpec>,
        desk: Arc<AlarmDesk>,
        controls: AlarmControls,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// What an alarm operator answers to besides its specification and desk.
#[derive(Clone, Default)]
pub struct AlarmControls {
    /// Set when the run stops; a checkpointed run then keeps what waits for its next run.
    pub stop: Arc<AtomicBool>,
    pub checkpointing: Option<Participant>,
}

/// What wakes an instance, in event-time order: a delay or a shelf ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Timer {
    Delay,
    ShelfEnd,
}

/// What a checkpoint keeps of one worker's alarm.
#[derive(Serialize, Deserialize)]
struct Checkpointed<I = Vec<(Row, Instance)>> {
    /// Owned when read back, borrowed from the state when written.
    instances: I,
    waiting: Vec<(u64, Vec<Row>)>,
    timers: Vec<(i64, Row, Timer)>,
    latest_seen: i64,
}

/// The instances of one worker's keys, the readings waiting to be taken in order, and timers.
struct Alarms {
    spec: Arc<AlarmSpec>,
    instances: StateMap<Row, Instance>,
    /// Readings by the dataflow time after which they can be taken in order.
    waiting: BTreeMap<u64, Vec<Row>>,
    /// Delays and shelves by when they end (lazily cancelled: an instance knows its live delay
    /// and shelf).
    timers: BTreeMap<(i64, Row, Timer), ()>,
    /// The latest event time read: the alarm's "now", and the end of a replay.
    latest_seen: i64,
}

impl Alarms {
    fn take(&mut self, now: u64, data: &mut Vec<Row>) {
        for row in data.drain(..) {
            let nanos = row[self.spec.time].as_timestamp_nanos().unwrap_or(0);
            let release = release_millis(nanos, self.spec.lateness_nanos).max(now);
            self.waiting.entry(release).or_default().push(row);
        }
    }

    /// Takes the readings and timers that are due (released before `before`), in event-time
    /// order; `ended` when every input has ended. Events go to `out`.
    fn advance(
        &mut self,
        frontier: timely::progress::frontier::AntichainRef<'_, u64>,
        ended: bool,
        before: u64,
        out: &mut Vec<Row>,
    ) {
        let spec = self.spec.clone();
        // Readings and delays are taken together, in event-time order: when the readings end
        // before the latest event time arrives, both wait for it.
        let due = |release: u64| {
            release < before && (ended || (!frontier.is_empty() && !frontier.less_than(&release)))
        };
        let mut rows: Vec<Row> = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if !due(*entry.key()) {
                break;
            }
            rows.extend(entry.remove());
        }
        rows.sort_by(|a, b| {
            (&a[spec.time], a)
                .partial_cmp(&(&b[spec.time], b))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let latest_seen = self.latest_seen;
        let timer_due = |at: i64| {
            let release = release_millis(at, spec.lateness_nanos);
            if release >= before {
                false
            } else if ended {
                at <= latest_seen
            } else if frontier.is_empty() {
                false
            } else {
                !frontier.less_than(&release)
            }
        };
        let mut show = |instance: &mut Instance, key: &Row, transition: Transition| {
            // A shelf hides the instance's own transitions, not people's commands.
            if transition.by.is_some() || !instance.shelved_at(transition.at) {
                out.push(instance.event(&spec, key, &transition));
            }
        };
        let mut rows = rows.into_iter().peekable();
        loop {
            let next_timer = self
                .timers
                .first_key_value()
                .map(|((at, _, _), _)| *at)
                .filter(|at| timer_due(*at));
            let next_row = rows
                .peek()
                .map(|row| row[spec.time].as_timestamp_nanos().unwrap_or(0));
            // A delay ending at the same instant as a reading ends first.
            let take_timer = match (next_timer, next_row) {
                (Some(at), Some(ts)) => at <= ts,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_timer {
                let ((at, key, timer), ()) = self.timers.pop_first().expect("peeked");
                let Some(instance) = self.instances.get_mut(&key) else {
                    continue;
                };
                match timer {
                    Timer::Delay => {
                        if let Some(transition) = instance.on_timer(&spec, at) {
                            show(instance, &key, transition);
                        }
                        if let Some(next) = instance.timer
                            && next != at
                        {
                            self.timers.insert((next, key, Timer::Delay), ());
                        }
                    }
                    Timer::ShelfEnd => {
                        if let Some(transition) = instance.expire_shelf(at) {
                            show(instance, &key, transition);
                        }
                    }
                }
                continue;
            }
            let row = rows.next().expect("peeked");
            let at = row[spec.time].as_timestamp_nanos().unwrap_or(0);
            let key: Row = spec
                .keys
                .iter()
                .map(|&column| row[column].clone())
                .collect();
            let instance = self
                .instances
                .entry(key.clone())
                .or_insert_with(Instance::new);
            let before_timer = instance.timer;
            if let Some(transition) = instance.on_row(&spec, at, row) {
                show(instance, &key, transition);
            }
            if let Some(timer) = instance.timer
                && before_timer != Some(timer)
            {
                self.timers.insert((timer, key, Timer::Delay), ());
            }
        }
    }

    /// Applies a person's command at the alarm's "now": the latest event time read.
    fn command(&mut self, command: AlarmCommand, out: &mut Vec<Row>) {
        let Some(instance) = self.instances.get_mut(&command.key) else {
            return; // another worker's key
        };
        let at = self.latest_seen.max(
            instance
                .latest
                .as_ref()
                .and_then(|row| row[self.spec.time].as_timestamp_nanos())
                .unwrap_or(i64::MIN),
        );
        if let Some(transition) = instance.on_command(&command, at) {
            if let Some(until) = instance.shelved_until {
                self.timers
                    .insert((until, command.key.clone(), Timer::ShelfEnd), ());
            }
            if transition.by.is_some() || !instance.shelved_at(transition.at) {
                out.push(instance.event(&self.spec, &command.key, &transition));
            }
        }
    }

    fn checkpointed(&self) -> impl Serialize + '_ {
        Checkpointed {
            instances: in_key_order(&self.instances),
            waiting: self
                .waiting
                .iter()
                .map(|(release, rows)| (*release, rows.clone()))
                .collect(),
            timers: self
                .timers
                .keys()
                .map(|(at, key, timer)| (*at, key.clone(), *timer))
                .collect(),
            latest_seen: self.latest_seen,
        }
    }

    fn restore(&mut self, checkpointed: Checkpointed) {
        self.instances.extend(checkpointed.instances);
        for (release, rows) in checkpointed.waiting {
            if !rows.is_empty() {
                self.waiting.entry(release).or_default().extend(rows);
            }
        }
        self.timers.extend(
            checkpointed
                .timers
                .into_iter()
                .map(|(at, key, timer)| ((at, key, timer), ())),
        );
        self.latest_seen = self.latest_seen.max(checkpointed.latest_seen);
    }
}

impl<'scope> RaiseAlarmsExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn raise_alarms(
        self,
        spec: Arc<AlarmSpec>,
        desk: Arc<AlarmDesk>,
        controls: AlarmControls,
    ) -> Stream<'scope, u64, Vec<Row>> {
        let AlarmControls {
            stop,
            checkpointing,
        } = controls;
        let keys = spec.keys.clone();
        let route = move |row: &Row| {
            let key: Row = keys.iter().map(|&column| row[column].clone()).collect();
            key_hash(&key)
        };
        let exchange = Exchange::new(route.clone());
        let (worker, peers) = (self.scope().index(), self.scope().peers());
        // Every worker learns the latest event time read anywhere: at the end of the input, a
        // delay ends only if some reading came after it, whichever worker read it.
        let time_column = spec.time;
        let latest_times = self
            .clone()
            .unary(Pipeline, "LatestEventTime", move |_, _| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let latest = data
                            .iter()
                            .filter_map(|row: &Row| row[time_column].as_timestamp_nanos())
                            .max();
                        if let Some(latest) = latest {
                            output.session(&time).give(latest);
                        }
                    });
                }
            })
            .broadcast();
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("RaiseAlarms".to_owned(), self.scope());
        let mut input = builder.new_input(self, exchange);
        let mut latest_input = builder.new_input(latest_times, Pipeline);
        let (output, events) = builder.new_output();
        let mut output = OutputBuilder::from(output);
        let address = builder.operator_info().address;
        let inbox = desk.register(
            &spec.name,
            scope.worker().sync_activator_for(address.to_vec()),
        );
        builder.build(move |mut initial_capabilities| {
            // Held at the input frontier while it lasts: transitions from readings, delays and
            // commands are all emitted at it, however long nothing arrives.
            let mut standing: Option<Capability<u64>> = initial_capabilities.pop();
            let mut state = Alarms {
                spec: spec.clone(),
                instances: StateMap::default(),
                waiting: BTreeMap::new(),
                timers: BTreeMap::new(),
                latest_seen: i64::MIN,
            };
            let restored: Vec<Checkpointed> =
                Participant::restored_parts(checkpointing.as_ref(), "alarm instances");
            for mut checkpointed in restored {
                // Another worker count: keep the instances routed here now.
                let ours = |key: &Row| routed_to(key_hash(key), worker, peers);
                checkpointed.instances.retain(|(key, _)| ours(key));
                checkpointed.timers.retain(|(_, key, _)| ours(key));
                for (_, rows) in &mut checkpointed.waiting {
                    rows.retain(|row| routed_to(route(row), worker, peers));
                }
                state.restore(checkpointed);
            }
            // Batches stamped at or after a cut being taken wait here until the snapshot.
            let mut held: Vec<(u64, Vec<Row>)> = Vec::new();
            let mut held_latest = i64::MIN;
            let mut answered = 0;
            // The latest time an output was stamped at, for the final part.
            let mut emitted_up_to = 0u64;
            let mut finished = false;
            move |frontiers| {
                let mut handle = output.activate();
                input.for_each(|time, data| {
                    let Some(&now) = time.least() else { return };
                    let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                    if cut.is_some_and(|cut| now >= cut.time) {
                        held.push((now, std::mem::take(data)));
                    } else {
                        state.take(now, data);
                    }
                });
                latest_input.for_each(|time, data| {
                    let latest = data.iter().copied().fold(i64::MIN, i64::max);
                    let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                    if cut.is_some_and(|cut| time.least().is_some_and(|now| *now >= cut.time)) {
                        held_latest = held_latest.max(latest);
                    } else {
                        state.latest_seen = state.latest_seen.max(latest);
                    }
                });
                let frontier = frontiers[0].frontier();
                let inputs_ended = frontier.is_empty() && frontiers[1].frontier().is_empty();
                // A checkpointed run that stops keeps its readings waiting and its delays
                // running for the next run, from the moment it stops (each worker's source lets
                // go of its time as it stops): its inputs have not really ended.
                let stopped = checkpointing.is_some() && stop.load(Ordering::Relaxed);
                let ended = inputs_ended && !stopped;
                let Some(capability) = standing.as_mut() else {
                    return;
                };
                let cut = checkpointing.as_ref().and_then(|p| p.pending(answered));
                let mut out = Vec::new();
                if !stopped {
                    state.advance(
                        frontier,
                        ended,
                        cut.map_or(u64::MAX, |cut| cut.time),
                        &mut out,
                    );
                }
                if let (Some(participant), Some(cut)) = (&checkpointing, cut)
                    && !frontier.less_than(&cut.time)
                    && !frontiers[1].frontier().less_than(&cut.time)
                {
                    // Everything before the cut is taken: emit it, snapshot, and from now on
                    // emit at the cut or later.
                    if !out.is_empty() {
                        emitted_up_to = emitted_up_to.max(*capability.time());
                        handle.session(&*capability).give_container(&mut out);
                    }
                    participant.submit_encoded(cut, &state.checkpointed());
                    answered = cut.id;
                    if *capability.time() < cut.time {
                        capability.downgrade(&cut.time);
                    }
                    for (now, mut data) in held.drain(..) {
                        state.take(now, &mut data);
                    }
                    state.latest_seen = state.latest_seen.max(held_latest);
                    held_latest = i64::MIN;
                    if !stopped {
                        state.advance(frontier, ended, u64::MAX, &mut out);
                    }
                }
                // People's commands, at the alarm's "now": the latest event time read.
                while let Ok(command) = inbox.try_recv() {
                    state.command(command, &mut out);
                }
                if !out.is_empty() {
                    emitted_up_to = emitted_up_to.max(*capability.time());
                    handle.session(&*capability).give_container(&mut out);
                }
                if inputs_ended && !finished {
                    finished = true;
                    if let Some(participant) = &checkpointing {
                        participant
                            .submit_final_encoded(&state.checkpointed(), Some(emitted_up_to));
                    }
                }
                match frontier.first() {
                    _ if inputs_ended => standing = None,
                    Some(time) if capability.time() < time => capability.downgrade(time),
                    _ => {}
                }
            }
        });
        events
    }
}
