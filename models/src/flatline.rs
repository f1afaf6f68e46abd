//! Flatline score: a sensor that keeps reporting exactly the same value is more likely stuck
//! than steady.
//!
//! A live sensor repeats its last value now and then (its resolution sees to that). This
//! detector learns how often (the repeat rate `p`, from ordinary readings only, so a stuck
//! spell does not teach it that sticking is normal) and scores a run of `k` repeats by how
//! unlikely it is: `1 − p^k`. The score is a probability already and needs no calibration.

use serde::{Deserialize, Serialize};

use crate::detector::Detector;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flatline {
    previous: Option<f64>,
    /// Repeats of the current value so far.
    run: u32,
    repeat_rate: f64,
    seen: usize,
}

/// Readings before the repeat rate is trusted.
const WARM_UP: usize = 100;
/// How fast the repeat rate follows the series.
const ALPHA: f64 = 0.01;

impl Flatline {
    pub fn new() -> Self {
        Flatline {
            previous: None,
            run: 0,
            // A prior: one reading in twenty repeats the last.
            repeat_rate: 0.05,
            seen: 0,
        }
    }
}

impl Default for Flatline {
    fn default() -> Self {
        Flatline::new()
    }
}

impl Detector for Flatline {
    fn update(&mut self, _ts: i64, value: f64) -> Option<f64> {
        let repeated = self.previous == Some(value);
        self.run = if repeated { self.run + 1 } else { 0 };
        // Learn from ordinary readings: a fresh value, or a first repeat.
        if self.run <= 1 && self.previous.is_some() {
            let target = if repeated { 1.0 } else { 0.0 };
            self.repeat_rate += ALPHA * (target - self.repeat_rate);
        }
        self.previous = Some(value);
        self.seen += 1;
        let p = self.repeat_rate.clamp(1e-4, 0.5);
        (self.seen > WARM_UP).then(|| 1.0 - p.powi(self.run as i32))
    }

    fn warm_up(&self) -> usize {
        WARM_UP
    }

    fn calibrated(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_value_scores_higher_with_every_repeat() {
        let mut detector = Flatline::new();
        for i in 0..300 {
            detector.update(i, 20.0 + ((i * 7919) % 97) as f64 * 0.01);
        }
        let scores: Vec<f64> = (300..305)
            .map(|i| detector.update(i, 21.5).unwrap())
            .collect();
        assert_eq!(scores[0], 0.0, "a new value");
        assert!(scores[1] > 0.9 && scores[2] > 0.999, "{scores:?}");
        assert!(scores.windows(2).all(|pair| pair[1] >= pair[0]));
    }
}
