//! Seasonal score: a reading against what is usual at this time of day.
//!
//! A grow room's day is its light schedule: temperature, humidity and CO2 follow the lights
//! on and off every day. What is normal at noon is not normal at midnight, and a detector
//! that only knows the last hour flags every lights-on transition. This one learns, per slot
//! of the day (`slots`, default 96: a quarter of an hour each), an exponentially weighted
//! mean and deviation, and scores a reading against its slot's. It scores once each slot has
//! seen `days` (default 2) days of readings.

use serde::{Deserialize, Serialize};

use crate::day_slots::DaySlots;
use crate::detector::Detector;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seasonal {
    slots: DaySlots,
    days: u32,
    alpha: f64,
}

impl Seasonal {
    pub fn new(slots: usize, days: u32, alpha: f64) -> Self {
        Seasonal {
            slots: DaySlots::new(slots),
            days: days.max(1),
            alpha,
        }
    }
}

impl Detector for Seasonal {
    fn update(&mut self, ts: i64, value: f64) -> Option<f64> {
        let (alpha, days) = (self.alpha, self.days);
        let (slot, day) = self.slots.at(ts);
        let score = slot.ready(days).then(|| slot.z(value).abs());
        slot.visit(day, value);
        slot.learn(value, alpha);
        score
    }

    /// Readings are counted in days, not readings: reported as the slots × days it needs.
    fn warm_up(&self) -> usize {
        self.slots.len() * self.days as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lights_on_is_usual_at_its_hour_and_unusual_at_another() {
        let mut detector = Seasonal::new(96, 2, 0.2);
        let minute = 60_000_000_000;
        // Three days: 18 °C at night, 26 °C from 06:00 to 18:00, a little noise.
        let temp = |m: i64| {
            let hour = (m / 60) % 24;
            let base = if (6..18).contains(&hour) { 26.0 } else { 18.0 };
            base + ((m * 7919) % 11) as f64 * 0.02
        };
        let mut at_lights_on = None;
        for m in 0..(3 * 24 * 60) {
            let score = detector.update(m * minute, temp(m));
            if m == 2 * 24 * 60 + 6 * 60 + 5 {
                at_lights_on = score;
            }
        }
        assert!(at_lights_on.unwrap() < 3.0, "{at_lights_on:?}");
        // Day 4, 02:00: lights (and heat) on outside the schedule.
        let night = detector.update((3 * 24 * 60 + 120) * minute, 26.0).unwrap();
        assert!(night > 10.0, "{night}");
    }
}
