//! Calibration: raw scores to a likelihood in [0, 1], per series.
//!
//! The average of the last few raw scores is compared with the distribution of the series'
//! raw scores over a longer history (its mean and deviation). The score is the normal CDF of
//! the difference: the probability that recent behaviour is as unusual as it looks, given how
//! this series usually scores. A noisy sensor and a quiet one both sit near 0.5 when normal,
//! and 0.99 is as rare for one as for the other.

use std::collections::VecDeque;

pub struct Likelihood {
    history: usize,
    recent: usize,
    raw: VecDeque<f64>,
}

impl Likelihood {
    pub fn new(history: usize, recent: usize) -> Self {
        Likelihood {
            history,
            recent: recent.min(history),
            raw: VecDeque::with_capacity(history + 1),
        }
    }

    /// Raw scores needed before scoring: a quarter of the history, at least ten.
    pub fn warm_up(&self) -> usize {
        (self.history / 4).max(10).min(self.history)
    }

    /// Takes the next raw score; returns the likelihood once warmed up.
    pub fn update(&mut self, raw: f64) -> Option<f64> {
        let raw = if raw.is_finite() {
            raw
        } else {
            f64::MAX.sqrt()
        };
        // The distribution is of the scores before this one.
        let n = self.raw.len();
        let ready = n >= self.warm_up();
        let (mean, deviation) = if ready {
            let mean = self.raw.iter().sum::<f64>() / n as f64;
            let variance = self.raw.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
            (mean, variance.sqrt().max(1e-3))
        } else {
            (0.0, 1.0)
        };
        self.raw.push_back(raw);
        if self.raw.len() > self.history {
            self.raw.pop_front();
        }
        if !ready {
            return None;
        }
        let recent: f64 = self.raw.iter().rev().take(self.recent).sum::<f64>()
            / self.recent.min(self.raw.len()) as f64;
        let z = (recent - mean) / deviation;
        Some(0.5 * libm::erfc(-z / std::f64::consts::SQRT_2))
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
        assert!(likelihood.update(50.0).unwrap() > 0.999);
        assert_eq!(Likelihood::new(100, 5).warm_up(), 25);
    }
}
