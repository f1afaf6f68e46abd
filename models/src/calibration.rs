//! Calibration: raw scores to a score in [0, 1], per series.
//!
//! A raw score (the average of the last `recent` ones) is placed in the distribution of the
//! series' own normal raw scores, the last `history` of them: the score is one minus the
//! probability that a normal raw score is at least as high. Within the body of the history that
//! is its rank (ties count half), whatever the sensor's noise and the detector's units. Beyond
//! it the history has no resolution left, and the detector says which tail goes on ([`Beyond`]):
//! a generalized Pareto tail fitted to the history's highest 5 % (peaks over threshold,
//! `tail.rs`) where raw scores are as steady as the history, so 0.9999 means "rarer than one
//! normal reading in ten thousand"; or, where their spread moves with the hour, a heavy power
//! law from the highest score, which asks for three times it. Scores of 0.9999 and up are kept
//! out of the history, so one spike, or a fault that lasts, does not become normal and hide
//! the next.
//!
//! The history is most of a calibrated detector's memory, one per series: raw scores are kept
//! as `f32` (a rank needs no more), 2 KB for 500, allocated as they arrive (a detector that
//! needs no calibration holds none). The fitted tail is not kept: it is fitted when a score
//! reaches the history's highest 5 %. Checkpoints store the history as `f64`s, as they always
//! did.

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

use crate::tail::Tail;

/// How rare a raw score beyond the body of the history is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beyond {
    /// Above the history's highest 5 %, a generalized Pareto tail fitted to them (`tail.rs`):
    /// 0.9999 is about one normal reading in ten thousand where raw scores are as steady as
    /// the history (a windowed z-score on a machine's sensor).
    FittedTail,
    /// Beyond the history's highest score, a power law of exponent 2 from it: 0.9999 needs a raw
    /// score over three times the highest of the last `history`. For raw scores whose spread
    /// changes with the hour (a time-of-day model learnt from two days), where a fitted tail
    /// takes the next regime's ordinary scores for faults.
    HeavyTail,
}

/// Scores this high are kept out of the history.
const EXTREME: f64 = 0.9999;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Likelihood {
    history: usize,
    recent: usize,
    #[serde(with = "wide")]
    raw: VecDeque<f32>,
}

/// The history as checkpoints store it: `f64`s.
mod wide {
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(raw: &VecDeque<f32>, to: S) -> Result<S::Ok, S::Error> {
        to.collect_seq(raw.iter().map(|score| *score as f64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<VecDeque<f32>, D::Error> {
        let wide = Vec::<f64>::deserialize(from)?;
        Ok(wide.into_iter().map(|score| score as f32).collect())
    }
}

impl Likelihood {
    pub fn new(history: usize, recent: usize) -> Self {
        Likelihood {
            history,
            recent: recent.clamp(1, history),
            raw: VecDeque::new(),
        }
    }

    /// Raw scores needed before scoring: a quarter of the history, at least ten.
    pub fn warm_up(&self) -> usize {
        (self.history / 4).max(10).min(self.history)
    }

    /// Takes the next raw score; returns its calibrated score once warmed up.
    pub fn update(&mut self, raw: f64, beyond: Beyond) -> Option<f64> {
        let raw = if raw.is_nan() { 0.0 } else { raw as f32 };
        let ready = self.raw.len() >= self.warm_up();
        let score = ready.then(|| {
            let sum = raw as f64
                + self
                    .raw
                    .iter()
                    .rev()
                    .take(self.recent - 1)
                    .map(|r| *r as f64)
                    .sum::<f64>();
            let recent = sum / self.recent.min(self.raw.len() + 1) as f64;
            1.0 - self.exceeded(recent, beyond)
        });
        // An anomaly does not join the history: it would raise the bar for the next one.
        if score.is_some_and(|score| score >= EXTREME) {
            return score;
        }
        self.raw.push_back(raw);
        if self.raw.len() > self.history {
            self.raw.pop_front();
        }
        score
    }

    /// The probability that a normal raw score is at least `raw` (the history is not empty):
    /// its rank within the history, and above it what `beyond` says.
    fn exceeded(&self, raw: f64, beyond: Beyond) -> f64 {
        let n = self.raw.len();
        let below = self.raw.iter().filter(|r| (**r as f64) < raw).count();
        let equal = self.raw.iter().filter(|r| **r as f64 == raw).count();
        let rank = 1.0 - (below as f64 + equal as f64 / 2.0) / n as f64;
        match beyond {
            Beyond::FittedTail => {
                // The tail is fitted afresh when asked for, which the rank makes rare (one
                // reading in twenty, while normal), so the score depends on the history alone:
                // a restored checkpoint scores exactly as the run it came from.
                if below + equal <= Tail::threshold_index(n) {
                    return rank;
                }
                let mut values: Vec<f64> = self.raw.iter().map(|r| *r as f64).collect();
                let tail = Tail::of(&mut values);
                if raw > tail.threshold {
                    tail.exceeded(raw)
                } else {
                    rank
                }
            }
            Beyond::HeavyTail => {
                let highest = self.raw.iter().copied().fold(f32::MIN, f32::max) as f64;
                if raw > highest && highest > 0.0 {
                    (0.5 / n as f64) * (highest / raw).powi(2)
                } else {
                    rank
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typical_scores_sit_near_the_middle_and_outliers_near_one() {
        let mut likelihood = Likelihood::new(100, 1);
        let mut last = None;
        // Raw scores cycling 1.0 … 1.4; the last one is the middle of the cycle.
        for i in 0..198 {
            last = likelihood.update(1.0 + (i % 5) as f64 * 0.1, Beyond::HeavyTail);
        }
        let typical = last.unwrap();
        assert!((typical - 0.5).abs() < 0.01, "{typical}");
        // Far beyond the history: past 0.9999.
        let far = likelihood.update(50.0, Beyond::HeavyTail).unwrap();
        assert!(far > 0.9999, "{far}");
        // The outlier, now in the history, does not mask the next one.
        let next = likelihood.update(40.0, Beyond::HeavyTail).unwrap();
        assert!(next > 0.9999, "{next}");
        assert_eq!(Likelihood::new(100, 5).warm_up(), 25);
    }

    /// Deterministic stand-in for Gaussian noise: |z| of a standard normal (Box–Muller over a
    /// fixed sequence).
    fn half_normal(i: usize) -> f64 {
        let u1 = ((i * 7919 + 13) % 10_007) as f64 / 10_007.0 + 1e-6;
        let u2 = ((i * 104_729 + 7) % 9_973) as f64 / 9_973.0;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()).abs()
    }

    #[test]
    fn a_fitted_tail_flags_what_normal_noise_rarely_reaches_and_a_heavy_one_asks_for_more() {
        let fitted = |raw: f64| {
            let mut likelihood = Likelihood::new(500, 1);
            for i in 0..500 {
                likelihood.update(half_normal(i), Beyond::FittedTail);
            }
            likelihood.update(raw, Beyond::FittedTail).unwrap()
        };
        let heavy = |raw: f64| {
            let mut likelihood = Likelihood::new(500, 1);
            for i in 0..500 {
                likelihood.update(half_normal(i), Beyond::HeavyTail);
            }
            likelihood.update(raw, Beyond::HeavyTail).unwrap()
        };
        // |z| ≥ 2: about one normal reading in twenty, by rank either way.
        assert!((fitted(2.0) - 0.95).abs() < 0.02, "{}", fitted(2.0));
        assert_eq!(fitted(2.0), heavy(2.0));
        // |z| = 6 happens about twice in a billion: the fitted tail says so, the heavy one
        // (three times the highest |z| of the 500) does not yet.
        assert!(fitted(6.0) >= 0.9999, "{}", fitted(6.0));
        assert!(heavy(6.0) < 0.9999, "{}", heavy(6.0));
        assert!(heavy(20.0) >= 0.9999, "{}", heavy(20.0));
        // |z| = 3.5, beyond most of the history but within what 500 readings may hold: no flag.
        assert!(fitted(3.5) < 0.9999, "{}", fitted(3.5));
    }
}
