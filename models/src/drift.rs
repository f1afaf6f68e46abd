//! Drift score: a slow, sustained departure from what is usual at this time of day (an HVAC
//! unit losing its setpoint, a sensor ageing).
//!
//! Each reading's deviation from its slot of the day (as in `seasonal`, learnt while the series
//! is not drifting) is accumulated by a one-sided CUSUM in both directions: deviations beyond
//! half a slot deviation add up (at most 4 per reading, so a lone spike is not a drift), smaller
//! ones let the sum fall. A drift keeps adding; noise
//! does not. The score `1 − e^(−S/2)` grows with the evidence `S` and is a probability-like
//! score already: no calibration. When the evidence stops growing it is halved at each reading,
//! so the score falls quickly once the series is back to normal.

use serde::{Deserialize, Serialize};

use crate::day_slots::DaySlots;
use crate::detector::Detector;

/// The slack of the CUSUM, in slot deviations.
const SLACK: f64 = 0.5;
/// The evidence is capped so that it can fall back quickly.
const MOST_EVIDENCE: f64 = 40.0;
/// The most one reading can add: a spike is not a drift.
const MOST_STEP: f64 = 4.0;
/// Evidence above which the slots stop learning (the series is drifting).
const DRIFTING: f64 = 8.0;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Drift {
    slots: DaySlots,
    days: u32,
    alpha: f64,
    up: f64,
    down: f64,
}

impl Drift {
    pub fn new(slots: usize, days: u32, alpha: f64) -> Self {
        Drift {
            slots: DaySlots::new(slots),
            days: days.max(1),
            alpha,
            up: 0.0,
            down: 0.0,
        }
    }
}

fn accumulate(evidence: f64, step: f64) -> f64 {
    if step > 0.0 {
        (evidence + step.min(MOST_STEP)).min(MOST_EVIDENCE)
    } else {
        evidence / 2.0
    }
}

impl Detector for Drift {
    fn update(&mut self, ts: i64, value: f64) -> Option<f64> {
        let (slot, day) = self.slots.at(ts);
        let mut score = None;
        if slot.ready(self.days) {
            let z = slot.z(value);
            self.up = accumulate(self.up, z - SLACK);
            self.down = accumulate(self.down, -z - SLACK);
            score = Some(1.0 - (-self.up.max(self.down) / 2.0).exp());
        }
        slot.visit(day, value);
        // Learn the day only from ordinary readings, not from a drift in progress.
        if self.up.max(self.down) < DRIFTING {
            slot.learn(value, self.alpha);
        }
        score
    }

    fn warm_up(&self) -> usize {
        self.slots.len() * self.days as usize
    }

    fn calibrated(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rise_is_found_and_forgotten_when_it_ends() {
        let minute = 60_000_000_000;
        let mut detector = Drift::new(96, 2, 0.2);
        let base = |m: i64| {
            let hour = (m / 60) % 24;
            (if (6..18).contains(&hour) { 26.0 } else { 18.0 }) + ((m * 7919) % 11) as f64 * 0.02
        };
        let mut calm = Vec::new();
        for m in 0..(3 * 24 * 60) {
            if let Some(score) = detector.update(m * minute, base(m)) {
                calm.push(score);
            }
        }
        assert!(
            calm.iter().all(|score| *score < 0.9999),
            "no false alarm on ordinary days"
        );
        // Day 4, 09:00: +2 °C per hour for three hours, then back to normal.
        let start = 3 * 24 * 60 + 9 * 60;
        let mut during = Vec::new();
        for m in start..start + 180 {
            let drift = 2.0 * (m - start) as f64 / 60.0;
            during.push(detector.update(m * minute, base(m) + drift).unwrap());
        }
        let first = during.iter().position(|score| *score >= 0.9999).unwrap();
        assert!(first < 40, "found after {first} minutes");
        assert!(during[first..].iter().all(|score| *score >= 0.9999));
        let after: Vec<f64> = (start + 180..start + 200)
            .map(|m| detector.update(m * minute, base(m)).unwrap())
            .collect();
        assert!(after[5..].iter().all(|score| *score < 0.9999), "{after:?}");
    }
}
