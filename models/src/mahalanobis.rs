//! Hotelling's T² online: how far a machine's readings together are from their
//! normal operating point, given how they normally vary together.
//!
//! Pressure, flow and current of a pump (or supply and return temperatures of a chiller) move
//! together: a reading where each value is within its own range, but not in the usual
//! combination (pressure up while flow stays), is what a valve closing looks like. The model is
//! the mean and the covariance of the readings, learnt with exponential forgetting over a
//! `horizon` of readings; the raw score is the squared Mahalanobis distance from the mean (all
//! principal directions at once: T² and the residual Q of a PCA model together) per dimension,
//! of the mean of the `recent` latest readings, so that a shift that lasts a few readings
//! stands out of noisy sensors.
//! The covariance is shrunk towards its diagonal, so a direction that barely varied in normal
//! operation (a flow that sat still) does not turn every small wobble into an alarm, and a
//! sensor that was constant still scores when it moves.
//!
//! Scores come from a tail model of the normal raw scores ([`crate::tail`]), and only readings
//! that scored as normal teach the model: a fault that lasts keeps scoring for as long as it
//! lasts instead of becoming the new normal. The other side of that choice: a normal that moves
//! further than the warm-up showed (a zone's day after a warm-up at night) scores as a fault
//! and is not learnt, so this detector is for machines at a steady operating point, not for
//! values that follow the light schedule (`seasonal` is).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::tail::TailModel;

/// How far the covariance is pulled towards its diagonal.
const SHRINKAGE: f64 = 0.1;
/// Readings scored at or above this do not teach the model.
const LEARN_BELOW: f64 = 0.99;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mahalanobis {
    dimensions: usize,
    /// Readings the mean and covariance are first learnt from, equally weighted.
    warm_up: usize,
    horizon: usize,
    learnt: usize,
    mean: Vec<f64>,
    /// Row-major, `dimensions` × `dimensions`.
    covariance: Vec<f64>,
    tail: TailModel,
    /// How many of the latest readings are averaged before their distance is taken.
    recent: usize,
    latest: VecDeque<Vec<f64>>,
}

impl Mahalanobis {
    pub fn new(dimensions: usize, warm_up: usize, horizon: usize, recent: usize) -> Self {
        let dimensions = dimensions.max(1);
        Mahalanobis {
            dimensions,
            warm_up: warm_up.max(dimensions + 2),
            horizon: horizon.max(2),
            learnt: 0,
            mean: vec![0.0; dimensions],
            covariance: vec![0.0; dimensions * dimensions],
            tail: TailModel::new(horizon.max(2), warm_up.max(20)),
            recent: recent.max(1),
            latest: VecDeque::with_capacity(recent.max(1) + 1),
        }
    }

    /// Readings before the first score.
    pub fn warm_up(&self) -> usize {
        self.warm_up + self.tail.warm_up()
    }

    /// The score of the next reading (one value per dimension), or `None` while warming up.
    pub fn update(&mut self, values: &[f64]) -> Option<f64> {
        if values.len() != self.dimensions || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        if self.learnt < self.warm_up {
            self.learn(values);
            return None;
        }
        // The mean of the latest readings: a shift that lasts adds up over them, noise
        // averages out (scaled back by their count, the distance of noise alone is the same).
        self.latest.push_back(values.to_vec());
        if self.latest.len() > self.recent {
            self.latest.pop_front();
        }
        let count = self.latest.len() as f64;
        let averaged: Vec<f64> = (0..self.dimensions)
            .map(|i| self.latest.iter().map(|v| v[i]).sum::<f64>() / count)
            .collect();
        let raw = self.distance(&averaged) * count;
        let score = self.tail.update(raw);
        if score.is_none_or(|score| score < LEARN_BELOW) {
            self.learn(values);
        }
        score
    }

    fn learn(&mut self, values: &[f64]) {
        self.learnt += 1;
        let weight = 1.0 / (self.learnt.min(self.horizon)) as f64;
        let d = self.dimensions;
        let deltas: Vec<f64> = values.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        for (mean, delta) in self.mean.iter_mut().zip(&deltas) {
            *mean += weight * delta;
        }
        // The exponentially weighted covariance update (West, 1979), which with equal weights
        // is Welford's.
        for i in 0..d {
            for j in 0..d {
                let cell = &mut self.covariance[i * d + j];
                *cell = (1.0 - weight) * (*cell + weight * deltas[i] * deltas[j]);
            }
        }
    }

    /// The squared Mahalanobis distance of `values` from the mean, per dimension, under the
    /// shrunk covariance.
    fn distance(&self, values: &[f64]) -> f64 {
        let d = self.dimensions;
        let mut matrix = self.covariance.clone();
        for i in 0..d {
            for j in 0..d {
                if i != j {
                    matrix[i * d + j] *= 1.0 - SHRINKAGE;
                }
            }
            // A floor relative to the value's size keeps a constant sensor invertible.
            let floor = 1e-6 * (1.0 + self.mean[i].abs()).powi(2);
            matrix[i * d + i] = matrix[i * d + i].max(floor);
        }
        let deltas: Vec<f64> = values.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        match cholesky_solve(&mut matrix, d, &deltas) {
            Some(solved) => deltas.iter().zip(&solved).map(|(a, b)| a * b).sum::<f64>() / d as f64,
            None => 0.0,
        }
    }
}

/// Solves `matrix · x = rhs` for a symmetric positive definite `matrix` (row-major, `d` × `d`,
/// overwritten by its Cholesky factor); `None` when it is not positive definite.
fn cholesky_solve(matrix: &mut [f64], d: usize, rhs: &[f64]) -> Option<Vec<f64>> {
    for j in 0..d {
        let mut diagonal = matrix[j * d + j];
        for k in 0..j {
            diagonal -= matrix[j * d + k] * matrix[j * d + k];
        }
        if diagonal <= 0.0 || !diagonal.is_finite() {
            return None;
        }
        let diagonal = diagonal.sqrt();
        matrix[j * d + j] = diagonal;
        for i in j + 1..d {
            let mut value = matrix[i * d + j];
            for k in 0..j {
                value -= matrix[i * d + k] * matrix[j * d + k];
            }
            matrix[i * d + j] = value / diagonal;
        }
    }
    // L y = rhs, then Lᵀ x = y.
    let mut y = rhs.to_vec();
    for i in 0..d {
        for k in 0..i {
            y[i] -= matrix[i * d + k] * y[k];
        }
        y[i] /= matrix[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            y[i] -= matrix[k * d + i] * y[k];
        }
        y[i] /= matrix[i * d + i];
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two values that move together (flow follows pressure), with a little noise.
    fn reading(i: usize) -> [f64; 2] {
        let pressure = 1.0 + 0.3 * (i as f64 / 17.0).sin();
        let noise = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
        [pressure + 0.02 * noise, 30.0 * pressure + 0.5 * noise]
    }

    #[test]
    fn solves_a_small_system() {
        let mut matrix = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut matrix, 2, &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn a_broken_relationship_scores_high_though_each_value_is_in_its_range() {
        let mut detector = Mahalanobis::new(2, 200, 1_000, 1);
        let mut calm = Vec::new();
        for i in 0..1_500 {
            if let Some(score) = detector.update(&reading(i)) {
                calm.push(score);
            }
        }
        let alarms = calm.iter().filter(|score| **score >= 0.999).count();
        assert!(alarms * 100 < calm.len(), "{alarms} of {}", calm.len());
        // Pressure high, flow low: each within its normal range, never together.
        let broken = detector.update(&[1.25, 22.0]).unwrap();
        assert!(broken > 0.9999, "{broken}");
    }

    #[test]
    fn a_lasting_fault_keeps_scoring_and_a_constant_sensor_that_moves_scores() {
        let mut detector = Mahalanobis::new(2, 100, 500, 5);
        for i in 0..800 {
            detector.update(&[reading(i)[0], 32.0]);
        }
        let fault: Vec<f64> = (0..300)
            .filter_map(|i| detector.update(&[reading(i)[0], 31.0]))
            .collect();
        assert!(fault.iter().all(|score| *score >= 0.999), "{fault:?}");
    }
}
