//! What is usual at each time of day, for `seasonal` and `drift`: per slot of the day, an
//! exponentially weighted mean and variance and the number of days the slot has been seen.
//!
//! Every series with such a detector holds one of these, so a facility with 100,000 sensors
//! holds 100,000 of them: a slot is kept in 16 bytes (the mean as `f64`, since a constant
//! series must deviate by exactly nothing from it; the variance as `f32`, which only scales a
//! score; the last day seen modulo 2¹⁶, which only has to differ from today's). Checkpoints
//! keep the wider form they always had, so checkpoints written before load unchanged.

use serde::{Deserialize, Serialize};

use crate::zscore::DEVIATION_FLOOR;

const DAY_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// One slot of the day.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(from = "SlotRecord", into = "SlotRecord")]
pub(crate) struct DaySlot {
    mean: f64,
    variance: f32,
    /// The last day seen, modulo 2¹⁶ (only compared with today's, and 2¹⁶ days apart never).
    last_day: u16,
    /// Days this slot has been seen (counted once per calendar day); 0 before its first reading.
    days: u16,
}

/// A slot as checkpoints store it.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct SlotRecord {
    mean: f64,
    variance: f64,
    days: u32,
    last_day: Option<i64>,
}

impl From<SlotRecord> for DaySlot {
    fn from(record: SlotRecord) -> Self {
        DaySlot {
            mean: record.mean,
            variance: record.variance as f32,
            last_day: record.last_day.map_or(0, |day| day as u16),
            days: record.days.min(u16::MAX as u32) as u16,
        }
    }
}

impl From<DaySlot> for SlotRecord {
    fn from(slot: DaySlot) -> Self {
        SlotRecord {
            mean: slot.mean,
            variance: slot.variance as f64,
            days: slot.days as u32,
            last_day: (slot.days > 0).then_some(slot.last_day as i64),
        }
    }
}

impl DaySlot {
    /// Whether the slot has seen `days` days: enough to score against.
    pub(crate) fn ready(&self, days: u32) -> bool {
        self.days as u32 >= days
    }

    /// How many of the slot's deviations `value` is from its mean (signed).
    pub(crate) fn z(&self, value: f64) -> f64 {
        (value - self.mean) / (self.variance as f64).sqrt().max(DEVIATION_FLOOR)
    }

    /// Counts `day` if it is a new one; the slot's first reading is its first mean.
    pub(crate) fn visit(&mut self, day: i64, value: f64) {
        if self.days == 0 {
            self.mean = value;
        } else if self.last_day == day as u16 {
            return;
        }
        self.days = self.days.saturating_add(1);
        self.last_day = day as u16;
    }

    /// Moves the mean and variance towards `value` by `alpha`.
    pub(crate) fn learn(&mut self, value: f64, alpha: f64) {
        let deviation = value - self.mean;
        self.mean += alpha * deviation;
        self.variance =
            ((1.0 - alpha) * (self.variance as f64 + alpha * deviation * deviation)) as f32;
    }
}

/// `count` slots dividing the day (UTC) evenly.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct DaySlots(Vec<DaySlot>);

impl DaySlots {
    pub(crate) fn new(count: usize) -> Self {
        DaySlots(vec![DaySlot::default(); count.max(1)])
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The slot of event time `ts` (nanoseconds), and its day.
    pub(crate) fn at(&mut self, ts: i64) -> (&mut DaySlot, i64) {
        let day = ts.div_euclid(DAY_NANOS);
        let into_day = ts.rem_euclid(DAY_NANOS);
        let index = (into_day as i128 * self.0.len() as i128 / DAY_NANOS as i128) as usize;
        let last = self.0.len() - 1;
        (&mut self.0[index.min(last)], day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_sixteen_bytes_and_reads_what_checkpoints_stored() {
        assert_eq!(std::mem::size_of::<DaySlot>(), 16);
        let mut slots = DaySlots::new(96);
        let hour = 3_600_000_000_000;
        for day in 0..3 {
            for reading in [20.0, 21.0, 22.0] {
                let (slot, today) = slots.at(day * 24 * hour + 13 * hour);
                slot.visit(today, reading);
                slot.learn(reading, 0.2);
            }
        }
        let slot = *slots.at(13 * hour + 60_000_000_000).0;
        assert!(slot.ready(3) && !slot.ready(4));
        // The record is the wider form checkpoints always had: the same slot comes back.
        let text = serde_json::to_string(&slots).unwrap();
        let record: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(record[52]["days"], 3);
        assert_eq!(record[52]["last_day"], 2);
        assert_eq!(record[52]["mean"], slot.mean);
        assert!(record[0]["last_day"].is_null());
        let back: DaySlots = serde_json::from_str(&text).unwrap();
        assert_eq!(format!("{:?}", back.0[52]), format!("{:?}", slots.0[52]));
    }

    #[test]
    fn a_constant_series_deviates_by_nothing() {
        let mut slot = DaySlot::default();
        for day in 0..5 {
            slot.visit(day, 23.7);
            slot.learn(23.7, 0.2);
        }
        assert_eq!(slot.z(23.7), 0.0);
    }
}
