//! Seasonal score: a reading against what is usual at this time of day.
//!
//! A grow room's day is its light schedule: temperature, humidity and CO2 follow the lights
//! on and off every day. What is normal at noon is not normal at midnight, and a detector
//! that only knows the last hour flags every lights-on transition. This one learns, per slot
//! of the day (`slots`, default 96: a quarter of an hour each), an exponentially weighted
//! mean and deviation, and scores a reading against its slot's. It scores once each slot has
//! seen `days` (default 2) days of readings.

use serde::{Deserialize, Serialize};

use crate::detector::Detector;
use crate::zscore::DEVIATION_FLOOR;

const DAY_NANOS: i64 = 24 * 3600 * 1_000_000_000;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Slot {
    mean: f64,
    variance: f64,
    /// Days this slot has been seen (counted once per calendar day).
    days: u32,
    last_day: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seasonal {
    slots: Vec<Slot>,
    days: u32,
    alpha: f64,
}

impl Seasonal {
    pub fn new(slots: usize, days: u32, alpha: f64) -> Self {
        Seasonal {
            slots: vec![Slot::default(); slots.max(1)],
            days: days.max(1),
            alpha,
        }
    }

    fn slot_of(&self, ts: i64) -> (usize, i64) {
        let day = ts.div_euclid(DAY_NANOS);
        let into_day = ts.rem_euclid(DAY_NANOS);
        let slot = (into_day as i128 * self.slots.len() as i128 / DAY_NANOS as i128) as usize;
        (slot.min(self.slots.len() - 1), day)
    }
}

impl Detector for Seasonal {
    fn update(&mut self, ts: i64, value: f64) -> Option<f64> {
        let (index, day) = self.slot_of(ts);
        let (alpha, days) = (self.alpha, self.days);
        let slot = &mut self.slots[index];
        let score = (slot.days >= days)
            .then(|| (value - slot.mean).abs() / slot.variance.sqrt().max(DEVIATION_FLOOR));
        if slot.last_day.is_none() {
            slot.mean = value;
        }
        if slot.last_day != Some(day) {
            slot.days += 1;
            slot.last_day = Some(day);
        }
        let deviation = value - slot.mean;
        slot.mean += alpha * deviation;
        slot.variance = (1.0 - alpha) * (slot.variance + alpha * deviation * deviation);
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
