//! One alarm instance's state machine: the semantics of `CREATE ALARM` for one key, fed its
//! readings in event-time order, the ends of its delays, and people's commands.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::commands::{AlarmAction, AlarmCommand};
use super::message::render;
use super::{AlarmSpec, Trigger};
use crate::row::{Datum, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Normal,
    /// Raise condition true since `since`; active once it has held for the on-delay.
    Pending {
        since: i64,
    },
    Active {
        since: i64,
    },
    /// Clear condition true since `since`; cleared once it has held for the off-delay.
    Clearing {
        since: i64,
        active_since: i64,
    },
}

/// One key's alarm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    phase: Phase,
    /// The latest reading: what messages show, held until the next one.
    pub(super) latest: Option<Row>,
    /// Recent gaps between readings, for a deadman without a fixed duration.
    intervals: VecDeque<i64>,
    /// When this instance's pending delay ends, if one is running.
    pub(super) timer: Option<i64>,
    /// Acknowledged since it last became active.
    acknowledged: bool,
    /// Shelved until then: its transitions are not shown.
    pub(super) shelved_until: Option<i64>,
    /// When its latest transition was shown: the next one is strictly later, so the order of
    /// an instance's transitions is the order of their `ts`.
    last_shown: Option<i64>,
}

/// A change of an instance's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub state: &'static str,
    pub at: i64,
    pub active_since: i64,
    /// Who made it, for a person's command.
    pub by: Option<(String, String)>,
}

const INTERVALS_KEPT: usize = 15;

impl Instance {
    pub(super) fn new() -> Self {
        Instance {
            phase: Phase::Normal,
            latest: None,
            intervals: VecDeque::new(),
            timer: None,
            acknowledged: false,
            shelved_until: None,
            last_shown: None,
        }
    }

    fn active_since(&self) -> Option<i64> {
        match self.phase {
            Phase::Active { since } => Some(since),
            Phase::Clearing { active_since, .. } => Some(active_since),
            _ => None,
        }
    }

    /// Whether transitions at `at` are suppressed by a shelf.
    pub fn shelved_at(&self, at: i64) -> bool {
        self.shelved_until.is_some_and(|until| at < until)
    }

    /// Applies a person's command at event time `at`.
    pub fn on_command(&mut self, command: &AlarmCommand, at: i64) -> Option<Transition> {
        let by = Some((command.by.clone(), command.note.clone()));
        match command.action {
            AlarmAction::Acknowledge => {
                let since = self.active_since()?;
                if self.acknowledged {
                    return None;
                }
                self.acknowledged = true;
                Some(Transition {
                    state: "acknowledged",
                    at,
                    active_since: since,
                    by,
                })
            }
            AlarmAction::Shelve { for_nanos } => {
                self.shelved_until = Some(at.saturating_add(for_nanos));
                Some(Transition {
                    state: "shelved",
                    at,
                    active_since: self.active_since().unwrap_or(at),
                    by,
                })
            }
            AlarmAction::Unshelve => {
                self.shelved_until.take()?;
                Some(self.current(at, by))
            }
        }
    }

    /// The instance's state now, as a transition: what a shelf hid.
    pub fn current(&self, at: i64, by: Option<(String, String)>) -> Transition {
        let (state, active_since) = match self.active_since() {
            Some(since) if self.acknowledged => ("acknowledged", since),
            Some(since) => ("active", since),
            None => ("cleared", at),
        };
        Transition {
            state,
            at,
            active_since,
            by,
        }
    }

    /// Ends a shelf that has expired by `at`; returns the state it hid.
    pub fn expire_shelf(&mut self, at: i64) -> Option<Transition> {
        let until = self.shelved_until?;
        if at < until {
            return None;
        }
        self.shelved_until = None;
        Some(self.current(until, None))
    }

    fn stale_after(&self, spec: &AlarmSpec) -> Option<i64> {
        match spec.trigger {
            Trigger::Stale {
                after_nanos: Some(after),
            } => Some(after),
            Trigger::Stale { after_nanos: None } if self.intervals.len() >= 2 => {
                let mut sorted: Vec<i64> = self.intervals.iter().copied().collect();
                sorted.sort_unstable();
                Some(3 * sorted[sorted.len() / 2])
            }
            _ => None,
        }
    }

    /// Takes a reading at `at`; returns the transition it causes, if any.
    pub fn on_row(&mut self, spec: &AlarmSpec, at: i64, row: Row) -> Option<Transition> {
        let previous = self
            .latest
            .as_ref()
            .and_then(|r| r[spec.time].as_timestamp_nanos());
        let is_true = |column: usize| matches!(row[column], Datum::Boolean(true));
        let (raise, clear) = match spec.trigger {
            Trigger::Condition { raise, clear } => {
                let raising = is_true(raise);
                (raising, clear.map_or(!raising, is_true))
            }
            // Any reading is the clear condition of a deadman.
            Trigger::Stale { .. } => (false, true),
        };
        self.latest = Some(row);
        if let Some(previous) = previous.filter(|previous| at > *previous) {
            self.intervals.push_back(at - previous);
            if self.intervals.len() > INTERVALS_KEPT {
                self.intervals.pop_front();
            }
        }
        let transition = match self.phase {
            Phase::Normal if raise && spec.on_delay_nanos == 0 => {
                self.phase = Phase::Active { since: at };
                Some(self.transition("active", at, at))
            }
            Phase::Normal if raise => {
                self.phase = Phase::Pending { since: at };
                self.timer = Some(at + spec.on_delay_nanos);
                None
            }
            Phase::Pending { .. } if !raise => {
                self.phase = Phase::Normal;
                self.timer = None;
                None
            }
            Phase::Active { since } if clear && spec.off_delay_nanos == 0 => {
                self.phase = Phase::Normal;
                Some(self.transition("cleared", at, since))
            }
            Phase::Active { since } if clear => {
                self.phase = Phase::Clearing {
                    since: at,
                    active_since: since,
                };
                self.timer = Some(at + spec.off_delay_nanos);
                None
            }
            Phase::Clearing { active_since, .. } if !clear => {
                self.phase = Phase::Active {
                    since: active_since,
                };
                self.timer = None;
                None
            }
            _ => None,
        };
        if matches!(spec.trigger, Trigger::Stale { .. }) && self.phase == Phase::Normal {
            self.timer = self.stale_after(spec).map(|after| at + after);
        }
        transition
    }

    /// The pending delay that ends at `at` has ended.
    pub fn on_timer(&mut self, spec: &AlarmSpec, at: i64) -> Option<Transition> {
        if self.timer != Some(at) {
            return None; // superseded by a reading
        }
        self.timer = None;
        match self.phase {
            Phase::Pending { .. } => {
                self.phase = Phase::Active { since: at };
                Some(self.transition("active", at, at))
            }
            Phase::Clearing { active_since, .. } => {
                self.phase = Phase::Normal;
                Some(self.transition("cleared", at, active_since))
            }
            Phase::Normal if matches!(spec.trigger, Trigger::Stale { .. }) => {
                if spec.on_delay_nanos == 0 {
                    self.phase = Phase::Active { since: at };
                    Some(self.transition("active", at, at))
                } else {
                    self.phase = Phase::Pending { since: at };
                    self.timer = Some(at + spec.on_delay_nanos);
                    None
                }
            }
            _ => None,
        }
    }

    fn transition(&mut self, state: &'static str, at: i64, active_since: i64) -> Transition {
        if state == "active" {
            self.acknowledged = false;
        }
        Transition {
            state,
            at,
            active_since,
            by: None,
        }
    }

    /// The event row of `transition` for `key`.
    pub(super) fn event(&mut self, spec: &AlarmSpec, key: &Row, transition: &Transition) -> Row {
        let at = match self.last_shown {
            Some(last) if transition.at <= last => last + 1,
            _ => transition.at,
        };
        self.last_shown = Some(at);
        let mut row = key.clone();
        let message = self
            .latest
            .as_ref()
            .map(|latest| render(&spec.message, latest))
            .unwrap_or_default();
        row.extend([
            Datum::Utf8(spec.name.as_str().into()),
            Datum::Utf8(transition.state.into()),
            Datum::Timestamp(at),
            Datum::Timestamp(transition.active_since),
            Datum::Utf8(spec.severity.as_str().into()),
            Datum::Utf8(message.into()),
        ]);
        match &transition.by {
            Some((by, note)) => row.extend([
                Datum::Utf8(by.as_str().into()),
                if note.is_empty() {
                    Datum::Null
                } else {
                    Datum::Utf8(note.as_str().into())
                },
            ]),
            None => row.extend([Datum::Null, Datum::Null]),
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::commands::{AlarmAction, AlarmCommand};
    use crate::alarm::{AlarmSpec, Trigger};
    use crate::row::Datum;

    const MINUTE: i64 = 60_000_000_000;

    fn spec(trigger: Trigger, on: i64, off: i64) -> AlarmSpec {
        AlarmSpec {
            name: "a".into(),
            keys: vec![],
            time: 0,
            trigger,
            on_delay_nanos: on,
            off_delay_nanos: off,
            severity: "high".into(),
            message: vec![],
            lateness_nanos: 0,
        }
    }

    /// Feeds readings `(minute, raise, clear)`, firing due timers in order; returns transitions.
    fn run(
        spec: &AlarmSpec,
        readings: &[(i64, bool, bool)],
        until: i64,
    ) -> Vec<(&'static str, i64)> {
        let mut instance = Instance::new();
        let mut seen = Vec::new();
        let fire = |instance: &mut Instance, before: i64, seen: &mut Vec<(&'static str, i64)>| {
            while let Some(at) = instance.timer.filter(|at| *at <= before) {
                if let Some(t) = instance.on_timer(spec, at) {
                    seen.push((t.state, t.at / MINUTE));
                }
            }
        };
        for (minute, raise, clear) in readings {
            fire(&mut instance, minute * MINUTE, &mut seen);
            let row = vec![
                Datum::Timestamp(minute * MINUTE),
                Datum::Boolean(*raise),
                Datum::Boolean(*clear),
            ];
            if let Some(t) = instance.on_row(spec, minute * MINUTE, row) {
                seen.push((t.state, t.at / MINUTE));
            }
        }
        fire(&mut instance, until * MINUTE, &mut seen);
        seen
    }

    #[test]
    fn a_condition_must_hold_for_the_on_delay_and_a_blip_resets_it() {
        let spec = spec(
            Trigger::Condition {
                raise: 1,
                clear: None,
            },
            10 * MINUTE,
            0,
        );
        // True from 0 to 7, false at 8, true again from 9: active at 19, not at 10.
        let readings: Vec<(i64, bool, bool)> = (0..30).map(|m| (m, m != 8, false)).collect();
        assert_eq!(run(&spec, &readings, 30), [("active", 19)]);
    }

    #[test]
    fn hysteresis_and_off_delay_clear_only_when_the_clear_condition_holds() {
        // Raise above 30 (column 1), clear below 28 (column 2), for 2 minutes.
        let spec = spec(
            Trigger::Condition {
                raise: 1,
                clear: Some(2),
            },
            0,
            2 * MINUTE,
        );
        let temps = [25, 31, 29, 29, 27, 29, 27, 27, 27, 27, 31];
        let readings: Vec<(i64, bool, bool)> = temps
            .iter()
            .enumerate()
            .map(|(m, t)| (m as i64, *t > 30, *t < 28))
            .collect();
        // 29 between thresholds keeps it active; 27 at minute 4 is undone by 29 at 5; from 6
        // it holds for 2 minutes: cleared at 8. A new activation (re-alarm) at 10.
        assert_eq!(
            run(&spec, &readings, 12),
            [("active", 1), ("cleared", 8), ("active", 10)]
        );
    }

    #[test]
    fn a_deadman_fires_after_three_usual_intervals_of_silence() {
        let spec = spec(Trigger::Stale { after_nanos: None }, 0, 0);
        // Every minute until 5, then nothing until 20.
        let readings: Vec<(i64, bool, bool)> = (0..=5)
            .map(|m| (m, false, false))
            .chain([(20, false, false)])
            .collect();
        assert_eq!(run(&spec, &readings, 22), [("active", 8), ("cleared", 20)]);
        let fixed = super::tests::spec(
            Trigger::Stale {
                after_nanos: Some(4 * MINUTE),
            },
            0,
            0,
        );
        assert_eq!(run(&fixed, &readings[..1], 30), [("active", 4)]);
    }

    #[test]
    fn acknowledgements_and_shelves_follow_the_lifecycle() {
        let spec = spec(
            Trigger::Condition {
                raise: 1,
                clear: None,
            },
            0,
            0,
        );
        let mut instance = Instance::new();
        let reading = |minute: i64, hot: bool| {
            vec![
                Datum::Timestamp(minute * MINUTE),
                Datum::Boolean(hot),
                Datum::Boolean(false),
            ]
        };
        let command = |action| AlarmCommand {
            key: vec![],
            action,
            by: "maria".into(),
            note: String::new(),
        };
        // Nothing to acknowledge before it is active.
        assert_eq!(
            instance.on_command(&command(AlarmAction::Acknowledge), 0),
            None
        );
        instance.on_row(&spec, MINUTE, reading(1, true)).unwrap();
        let ack = instance
            .on_command(&command(AlarmAction::Acknowledge), 2 * MINUTE)
            .unwrap();
        assert_eq!((ack.state, ack.active_since), ("acknowledged", MINUTE));
        assert_eq!(
            instance.on_command(&command(AlarmAction::Acknowledge), 2 * MINUTE),
            None
        );
        // Shelved for 10 minutes: it clears and raises again unseen; the shelf's end shows the
        // new, unacknowledged activation.
        let shelve = AlarmAction::Shelve {
            for_nanos: 10 * MINUTE,
        };
        instance.on_command(&command(shelve), 3 * MINUTE).unwrap();
        assert!(instance.shelved_at(4 * MINUTE));
        instance
            .on_row(&spec, 4 * MINUTE, reading(4, false))
            .unwrap();
        instance
            .on_row(&spec, 5 * MINUTE, reading(5, true))
            .unwrap();
        assert_eq!(instance.expire_shelf(12 * MINUTE), None, "not yet");
        let back = instance.expire_shelf(13 * MINUTE).unwrap();
        assert_eq!(
            (back.state, back.at, back.active_since),
            ("active", 13 * MINUTE, 5 * MINUTE)
        );
        assert!(!instance.shelved_at(13 * MINUTE));
    }
}
