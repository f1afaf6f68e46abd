//! Gap score: readings that stop arriving. A dropout leaves nothing to score, so the reading
//! after it carries the news: how many readings were missed, against how often this series
//! misses any.
//!
//! The detector learns the series' usual interval (from ordinary intervals) and its missing
//! rate `q` (missed readings per reading). A reading after `m` missed ones scores `1 − q^m`: a
//! probability already, needing no calibration.

use serde::{Deserialize, Serialize};

use crate::detector::Detector;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gap {
    previous: Option<i64>,
    /// The usual interval, seconds.
    interval: Option<f64>,
    missing_rate: f64,
    seen: usize,
}

/// Intervals before the usual one is trusted.
const WARM_UP: usize = 20;
const ALPHA: f64 = 0.05;

impl Gap {
    pub fn new() -> Self {
        Gap {
            previous: None,
            interval: None,
            // A prior: one reading in a thousand goes missing.
            missing_rate: 1e-3,
            seen: 0,
        }
    }
}

impl Default for Gap {
    fn default() -> Self {
        Gap::new()
    }
}

impl Detector for Gap {
    fn update(&mut self, ts: i64, _value: f64) -> Option<f64> {
        let previous = self.previous.replace(ts)?;
        let elapsed = (ts - previous) as f64 / 1e9;
        if elapsed <= 0.0 {
            return None;
        }
        self.seen += 1;
        let interval = *self.interval.get_or_insert(elapsed);
        let missed = ((elapsed / interval).round() - 1.0).max(0.0);
        if missed == 0.0 {
            self.interval = Some(interval + ALPHA * (elapsed - interval));
        }
        let q = self.missing_rate.clamp(1e-6, 0.5);
        let score = 1.0 - q.powf(missed);
        // Learn the missing rate slowly, so one long dropout does not make the next normal.
        self.missing_rate += 0.001 * (missed.min(1.0) - self.missing_rate);
        (self.seen > WARM_UP).then_some(score)
    }

    fn warm_up(&self) -> usize {
        WARM_UP + 1
    }

    fn calibrated(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reading_after_a_gap_scores_high_and_regular_ones_zero() {
        let minute = 60_000_000_000;
        let mut detector = Gap::new();
        let mut last = None;
        for i in 0..100 {
            last = detector.update(i * minute + (i % 3) * 1_000_000_000, 20.0);
        }
        assert_eq!(last, Some(0.0));
        let after = detector.update(130 * minute, 20.0).unwrap();
        assert!(after > 0.999, "{after}");
        assert_eq!(detector.update(131 * minute, 20.0), Some(0.0));
    }
}
