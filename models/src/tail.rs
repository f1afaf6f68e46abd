//! A tail model for raw scores (peaks over threshold, as in SPOT: Siffer et al., 2017).
//!
//! A rank among recent scores makes every threshold flag a fixed share of readings: a calm
//! series gets as many alarms as a noisy one. Here the score says how rare a raw score is
//! under the series' own normal behaviour, with extreme-value theory for the part no sample
//! covers: raw scores above a high quantile `t` of the normal ones are modelled as `t` plus a
//! generalized Pareto excess, so a raw score beyond anything seen gets a probability of being
//! exceeded that keeps falling the further out it is, instead of stopping at "the highest so
//! far". The score is one minus that probability: 0.999 means "rarer than one normal reading
//! in a thousand", on every series.
//!
//! Only readings the model finds normal join its sample, so a fault that lasts does not
//! become the new normal and stop scoring.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The share of normal raw scores above the threshold whose excesses are modelled.
const TAIL_SHARE: f64 = 0.05;
/// Scores at or above this are not normal: they stay out of the sample. Set beyond the usual
/// alarm thresholds, so that the rare but normal readings near them still shape the tail.
pub const NORMAL_BELOW: f64 = 0.9999;
/// The sample is refitted after this many new normal scores.
const REFIT_EVERY: usize = 25;

/// The generalized Pareto tail above a high quantile of normal raw scores, fitted by the
/// method of moments (enough for the few hundred excesses a sample holds, and with no iteration
/// that could fail). A few numbers: detectors that keep their sample anyway fit it and keep
/// only this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tail {
    /// Raw scores above this are in the tail.
    pub threshold: f64,
    shape: f64,
    scale: f64,
    /// The share of the sample above the threshold.
    share: f64,
}

impl Tail {
    /// Where the threshold falls among `n` normal raw scores in ascending order.
    pub(crate) fn threshold_index(n: usize) -> usize {
        (((1.0 - TAIL_SHARE) * n as f64).floor() as usize).min(n.saturating_sub(1))
    }

    /// Fits the tail of `sorted`: normal raw scores in ascending order, at least one.
    pub(crate) fn of_sorted(sorted: &[f64]) -> Tail {
        let threshold = sorted[Tail::threshold_index(sorted.len())];
        Tail::fit(threshold, sorted, spread(sorted), sorted.len())
    }

    /// Fits the tail of `values` (normal raw scores in any order, at least one), which it
    /// reorders: the threshold is selected, not sorted for.
    pub(crate) fn of(values: &mut [f64]) -> Tail {
        let n = values.len();
        let (low, high) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
                (low.min(*v), high.max(*v))
            });
        let (_, threshold, above) =
            values.select_nth_unstable_by(Tail::threshold_index(n), f64::total_cmp);
        Tail::fit(*threshold, above, (high - low) / n as f64, n)
    }

    /// The tail above `threshold` from the scores `candidates` holds above it, among `n`.
    fn fit(threshold: f64, candidates: &[f64], spread: f64, n: usize) -> Tail {
        let excesses: Vec<f64> = candidates
            .iter()
            .filter(|raw| **raw > threshold)
            .map(|raw| raw - threshold)
            .collect();
        let (shape, scale) = match excesses.len() {
            0 | 1 => (0.0, spread.max(f64::MIN_POSITIVE)),
            count => {
                let mean = excesses.iter().sum::<f64>() / count as f64;
                let variance =
                    excesses.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (count - 1) as f64;
                if variance <= 0.0 || mean <= 0.0 {
                    (0.0, mean.max(spread).max(f64::MIN_POSITIVE))
                } else {
                    let ratio = mean * mean / variance;
                    // A heavy tail is capped: a handful of excesses cannot support more.
                    let shape = (0.5 * (1.0 - ratio)).clamp(-0.5, 0.5);
                    (shape, (0.5 * mean * (ratio + 1.0)).max(f64::MIN_POSITIVE))
                }
            }
        };
        Tail {
            threshold,
            shape,
            scale,
            share: excesses.len().max(1) as f64 / n as f64,
        }
    }

    /// The probability that a normal raw score is at least `raw`, for `raw` above the threshold.
    pub(crate) fn exceeded(&self, raw: f64) -> f64 {
        let z = (raw - self.threshold) / self.scale;
        let survival = if self.shape.abs() < 1e-9 {
            (-z).exp()
        } else {
            let base = 1.0 + self.shape * z;
            if base <= 0.0 {
                0.0
            } else {
                base.powf(-1.0 / self.shape)
            }
        };
        self.share * survival
    }
}

/// A sample's empirical distribution with its tail (as checkpoints of [`TailModel`] store it).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fit {
    /// The normal raw scores, sorted: the empirical distribution below the threshold.
    sorted: Vec<f64>,
    threshold: f64,
    shape: f64,
    scale: f64,
}

impl Fit {
    /// Fits the normal raw scores in `sample` (at least one).
    fn of(sample: impl Iterator<Item = f64>) -> Fit {
        let mut sorted: Vec<f64> = sample.collect();
        sorted.sort_by(f64::total_cmp);
        let tail = Tail::of_sorted(&sorted);
        Fit {
            sorted,
            threshold: tail.threshold,
            shape: tail.shape,
            scale: tail.scale,
        }
    }

    /// The probability that a normal raw score is at least `raw`.
    fn exceeded(&self, raw: f64) -> f64 {
        let n = self.sorted.len() as f64;
        if raw <= self.threshold {
            let below = self.sorted.partition_point(|s| *s < raw) as f64;
            let at_most = self.sorted.partition_point(|s| *s <= raw) as f64;
            return 1.0 - (below + at_most) / (2.0 * n);
        }
        let above = self.sorted.len() - self.sorted.partition_point(|s| *s <= self.threshold);
        Tail {
            threshold: self.threshold,
            shape: self.shape,
            scale: self.scale,
            share: above.max(1) as f64 / n,
        }
        .exceeded(raw)
    }
}

/// A spread to fall back on when the tail has no excesses (a constant raw score).
fn spread(sorted: &[f64]) -> f64 {
    let (Some(low), Some(high)) = (sorted.first(), sorted.last()) else {
        return 0.0;
    };
    (high - low) / sorted.len().max(1) as f64
}

/// Raw scores to calibrated ones through a peaks-over-threshold model of normal raw scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TailModel {
    capacity: usize,
    warm_up: usize,
    sample: VecDeque<f64>,
    fit: Option<Fit>,
    added_since_fit: usize,
}

impl TailModel {
    /// Keeps the last `capacity` normal raw scores; scores after `warm_up` of them.
    pub fn new(capacity: usize, warm_up: usize) -> Self {
        TailModel {
            capacity: capacity.max(2),
            warm_up: warm_up.clamp(2, capacity.max(2)),
            sample: VecDeque::with_capacity(capacity + 1),
            fit: None,
            added_since_fit: 0,
        }
    }

    pub fn warm_up(&self) -> usize {
        self.warm_up
    }

    /// The score of `raw`: one minus the probability that a normal raw score is at least as
    /// high. `None` while warming up. A normal score joins the sample.
    pub fn update(&mut self, raw: f64) -> Option<f64> {
        let raw = if raw.is_nan() { 0.0 } else { raw };
        let score = self.score(raw);
        if score.is_none_or(|score| score < NORMAL_BELOW) {
            self.sample.push_back(raw);
            if self.sample.len() > self.capacity {
                self.sample.pop_front();
            }
            self.added_since_fit += 1;
        }
        score
    }

    /// The score of `raw` without learning from it.
    pub fn score(&mut self, raw: f64) -> Option<f64> {
        if self.sample.len() < self.warm_up {
            return None;
        }
        if self.fit.is_none() || self.added_since_fit >= REFIT_EVERY {
            self.fit = Some(Fit::of(self.sample.iter().copied()));
            self.added_since_fit = 0;
        }
        let fit = self.fit.as_ref()?;
        Some((1.0 - fit.exceeded(raw)).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for noise: exponential raw scores of mean 1.
    fn exponential(i: usize) -> f64 {
        let u = ((i * 7919 + 13) % 10_007) as f64 / 10_007.0;
        -(1.0 - u).ln()
    }

    #[test]
    fn a_score_is_one_minus_how_often_normal_behaviour_reaches_it() {
        let mut model = TailModel::new(2_000, 200);
        for i in 0..2_000 {
            model.update(exponential(i));
        }
        // Exponential(1): P(X >= 3) = e^-3 = 0.0498, P(X >= 7) = 0.00091.
        let median = model.score(std::f64::consts::LN_2).unwrap();
        assert!((median - 0.5).abs() < 0.03, "{median}");
        let three = model.score(3.0).unwrap();
        assert!((three - (1.0 - (-3.0f64).exp())).abs() < 0.01, "{three}");
        // Beyond every sample, the tail still tells further from nearer.
        let seven = model.score(7.0).unwrap();
        let twelve = model.score(12.0).unwrap();
        assert!(seven > 0.998 && seven < 0.9997, "{seven}");
        assert!(twelve > seven && twelve > 0.99995, "{twelve}");
    }

    #[test]
    fn a_lasting_fault_stays_out_of_what_is_normal() {
        let mut model = TailModel::new(500, 100);
        for i in 0..500 {
            model.update(exponential(i));
        }
        let scores: Vec<f64> = (0..400).filter_map(|_| model.update(40.0)).collect();
        assert!(scores.iter().all(|score| *score >= NORMAL_BELOW));
    }

    #[test]
    fn it_scores_after_its_warm_up_and_survives_a_constant_series() {
        let mut model = TailModel::new(100, 20);
        let first = (0..100).position(|_| model.update(1.0).is_some()).unwrap();
        assert_eq!(first, model.warm_up());
        assert!(model.score(1.0).unwrap() <= 0.5);
        assert_eq!(model.score(2.0), Some(1.0));
    }
}
