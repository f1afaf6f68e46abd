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

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;

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
///     rows.to_stream(scope).raise_alarms(spec.clone(), Default::default()).capture()
/// });
/// let events: Vec<Row> = captured.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// // Active 3 minutes after the condition began (minute 5); cleared at the first cool reading.
/// assert_eq!(events[0][2], Datum::Utf8("active".into()));
/// assert_eq!(events[0][3], Datum::Timestamp(5 * minute));
/// assert_eq!(events[1][2], Datum::Utf8("cleared".into()));
/// assert_eq!(events[1][3], Datum::Timestamp(8 * minute));
/// ```
pub trait RaiseAlarmsExt<'scope> {
    /// `desk` delivers people's commands (acknowledge, shelve) to the instances.
    fn raise_alarms(
        self,
        spec: Arc<AlarmSpec>,
        desk: Arc<AlarmDesk>,
    ) -> Stream<'scope, u64, Vec<Row>>;
}

/// What wakes an instance, in event-time order: a delay or a shelf ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Delay,
    ShelfEnd,
}

impl<'scope> RaiseAlarmsExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn raise_alarms(
        self,
        spec: Arc<AlarmSpec>,
        desk: Arc<AlarmDesk>,
    ) -> Stream<'scope, u64, Vec<Row>> {
        let keys = spec.keys.clone();
        let exchange = Exchange::new(move |row: &Row| {
            let key: Row = keys.iter().map(|&column| row[column].clone()).collect();
            key_hash(&key)
        });
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
            let mut instances: StateMap<Row, Instance> = StateMap::default();
            // Readings by the dataflow time after which they can be taken in order.
            let mut waiting: BTreeMap<u64, Vec<Row>> = BTreeMap::new();
            // Delays and shelves by when they end (lazily cancelled: an instance knows its live
            // delay and shelf).
            let mut timers: BTreeMap<(i64, Row, Timer), ()> = BTreeMap::new();
            // The latest event time read: the alarm's "now", and the end of a replay.
            let mut latest_seen = i64::MIN;
            move |frontiers| {
                let mut handle = output.activate();
                input.for_each(|time, data| {
                    let Some(&now) = time.least() else { return };
                    for row in data.drain(..) {
                        let nanos = row[spec.time].as_timestamp_nanos().unwrap_or(0);
                        let release = release_millis(nanos, spec.lateness_nanos).max(now);
                        waiting.entry(release).or_default().push(row);
                    }
                });
                latest_input.for_each(|_, data| {
                    latest_seen = data.iter().copied().fold(latest_seen, i64::max);
                });
                let frontier = frontiers[0].frontier();
                let ended = frontier.is_empty() && frontiers[1].frontier().is_empty();
                let Some(capability) = standing.as_ref() else {
                    return;
                };
                // Readings and delays are taken together, in event-time order: when the readings
                // end before the latest event time arrives, both wait for it.
                let due =
                    |release: u64| ended || (!frontier.is_empty() && !frontier.less_than(&release));
                let mut rows: Vec<Row> = Vec::new();
                while let Some(entry) = waiting.first_entry() {
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
                let timer_due = |at: i64| {
                    if ended {
                        at <= latest_seen
                    } else if frontier.is_empty() {
                        false
                    } else {
                        !frontier.less_than(&release_millis(at, spec.lateness_nanos))
                    }
                };
                let mut out = Vec::new();
                let mut show = |instance: &mut Instance, key: &Row, transition: Transition| {
                    // A shelf hides the instance's own transitions, not people's commands.
                    if transition.by.is_some() || !instance.shelved_at(transition.at) {
                        out.push(instance.event(&spec, key, &transition));
                    }
                };
                let mut rows = rows.into_iter().peekable();
                loop {
                    let next_timer = timers
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
                        let ((at, key, timer), ()) = timers.pop_first().expect("peeked");
                        let Some(instance) = instances.get_mut(&key) else {
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
                                    timers.insert((next, key, Timer::Delay), ());
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
                    let instance = instances.entry(key.clone()).or_insert_with(Instance::new);
                    let before = instance.timer;
                    if let Some(transition) = instance.on_row(&spec, at, row) {
                        show(instance, &key, transition);
                    }
                    if let Some(timer) = instance.timer
                        && before != Some(timer)
                    {
                        timers.insert((timer, key, Timer::Delay), ());
                    }
                }
                // People's commands, at the alarm's "now": the latest event time read.
                while let Ok(command) = inbox.try_recv() {
                    let Some(instance) = instances.get_mut(&command.key) else {
                        continue; // another worker's key
                    };
                    let at = latest_seen.max(
                        instance
                            .latest
                            .as_ref()
                            .and_then(|row| row[spec.time].as_timestamp_nanos())
                            .unwrap_or(i64::MIN),
                    );
                    if let Some(transition) = instance.on_command(&command, at) {
                        if let Some(until) = instance.shelved_until {
                            timers.insert((until, command.key.clone(), Timer::ShelfEnd), ());
                        }
                        show(instance, &command.key, transition);
                    }
                }
                if !out.is_empty() {
                    handle.session(capability).give_container(&mut out);
                }
                match frontier.first() {
                    _ if ended => standing = None,
                    Some(time) if capability.time() < time => {
                        standing.as_mut().expect("held").downgrade(time);
                    }
                    _ => {}
                }
            }
        });
        events
    }
}
