//! Calibration: raw scores to a score in [0, 1], per series.
//!
//! A raw score is placed in the distribution of the series' own recent raw scores: the score is
//! the fraction of the last `history` raw scores below the average of the last `recent` ones
//! (ties count half). So 0.99 means "higher than 99% of what this series usually scores",
//! whatever the sensor's noise and whatever the detector's units: the same for every sensor.
//! The step function is distribution-free and past anomalies in the history cannot inflate a
//! spread that would hide the next one. Beyond the history's highest score a power-law tail
//! takes over, so extreme raw scores are told apart from merely high ones; and extreme ones
//! (0.9999 and up) are kept out of the history, so one spike does not hide the next.
//!
//! The history is most of a calibrated detector's memory, one per series: raw scores are kept
//! as `f32` (a rank needs no more), 2 KB for 500, allocated as they arrive (a detector that
//! needs no calibration holds none). Checkpoints store them as `f64`, as they always did.

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

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
    pub fn update(&mut self, raw: f64) -> Option<f64> {
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
            let recent = (sum / self.recent.min(self.raw.len() + 1) as f64) as f32;
            let n = self.raw.len() as f64;
            let highest = self.raw.iter().copied().fold(f32::MIN, f32::max);
            if recent > highest && highest > 0.0 {
                // Beyond everything in the history the step has no more resolution: the tail
                // goes on as a power law from the last step, so a raw score far beyond the
                // series' worst scores much closer to 1 than one just past it.
                return 1.0 - (0.5 / n) * (highest as f64 / recent as f64).powi(2);
            }
            let below = self.raw.iter().filter(|r| **r < recent).count() as f64;
            let equal = self.raw.iter().filter(|r| **r == recent).count() as f64;
            (below + equal / 2.0) / n
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
            last = likelihood.update(1.0 + (i % 5) as f64 * 0.1);
        }
        let typical = last.unwrap();
        assert!((typical - 0.5).abs() < 0.01, "{typical}");
        // Far beyond the history: past 0.9999.
        let far = likelihood.update(50.0).unwrap();
        assert!(far > 0.9999, "{far}");
        // The outlier, now in the history, does not mask the next one.
        let next = likelihood.update(40.0).unwrap();
        assert!(next > 0.9999, "{next}");
        assert_eq!(Likelihood::new(100, 5).warm_up(), 25);
    }
}
