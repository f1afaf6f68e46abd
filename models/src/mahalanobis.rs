//! Hotelling's T² online: how far a machine's readings together are from where they are
//! expected, given how they normally vary together.
//!
//! Pressure, flow and current of a pump (or supply and return temperatures of a chiller) move
//! together: a reading where each value is within its own range, but not in the usual
//! combination (pressure up while flow stays), is what a valve closing looks like. The raw
//! score is the squared Mahalanobis distance (all principal directions at once: T² and the
//! residual Q of a PCA model together) per dimension of the mean of the `recent` latest
//! innovations (a reading minus the level expected of it), under the covariance of normal
//! innovations learnt with exponential forgetting over a `horizon` of readings, so that a shift
//! that lasts a few readings stands out of noisy sensors. The covariance is shrunk towards its
//! diagonal, so a direction that barely varied in normal operation (a flow that sat still) does
//! not turn every small wobble into an alarm, and a sensor that was constant still scores when
//! it moves.
//!
//! Each value's expected level is followed by a local-level model (a Kalman filter per value).
//! Some values hold steady in normal operation (a flow), others wander slowly (the temperature
//! of water that warms as the pump runs). How fast each wanders is learnt from normal readings:
//! differences `lag` readings apart vary more than successive ones by the wander of `lag - 1`
//! steps. A steady value's level is its mean; a wandering value's level follows it. While
//! readings are not learnt (during a fault) a wandering value's level grows uncertain at the
//! rate it wanders, and that uncertainty joins the covariance: a temperature that went on
//! drifting through a long fault does not keep the alarm up after the fault ends, while a flow
//! that stays low scores for as long as it stays low.
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
/// The default lag, in readings, over which each value's wander is measured.
pub const DEFAULT_LAG: usize = 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mahalanobis {
    dimensions: usize,
    /// Readings the model is first learnt from.
    warm_up: usize,
    horizon: usize,
    learnt: usize,
    /// Each value's expected level. (Named `mean` in checkpoints written before levels were
    /// followed, when it was the exponentially weighted mean.)
    #[serde(alias = "mean")]
    level: Vec<f64>,
    /// The variance of each level's estimate: it grows by the value's wander at every reading
    /// and shrinks at each learnt one. Empty in older checkpoints: no uncertainty.
    #[serde(default)]
    level_variance: Vec<f64>,
    /// How fast each value wanders, learnt from normal readings.
    #[serde(default)]
    wander: Wander,
    /// The mean of normal innovations (near zero unless a value trends).
    #[serde(default)]
    innovation_mean: Vec<f64>,
    /// The covariance of normal innovations, row-major, `dimensions` × `dimensions`.
    covariance: Vec<f64>,
    tail: TailModel,
    /// How many of the latest innovations are averaged before their distance is taken.
    recent: usize,
    #[serde(default)]
    latest_innovations: VecDeque<Vec<f64>>,
    /// Readings in a row that were not learnt (during a fault): the levels' uncertainty, and
    /// how values wandered together meanwhile, grows with it.
    #[serde(default)]
    unlearnt: usize,
}

/// How much each value wanders per reading, from the mean squared differences of learnt
/// readings one and `lag` readings apart: for a level that wanders by `q` per reading under
/// noise of variance `r`, they are `2r + q` and `2r + lag·q`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Wander {
    lag: usize,
    /// The last `lag` learnt readings.
    history: VecDeque<Vec<f64>>,
    pairs: usize,
    /// Per value: the mean squared difference of successive readings.
    successive: Vec<f64>,
    /// Row-major, `dimensions` × `dimensions`: the mean product of differences `lag` readings
    /// apart, so that values that wander together (pressure and flow) are known to.
    lagged: Vec<f64>,
}

/// What a checkpoint from before levels were followed starts with: nothing learnt yet.
impl Default for Wander {
    fn default() -> Self {
        Wander::new(0, DEFAULT_LAG)
    }
}

impl Wander {
    fn new(dimensions: usize, lag: usize) -> Self {
        Wander {
            lag: lag.max(2),
            history: VecDeque::with_capacity(lag.max(2) + 1),
            pairs: 0,
            successive: vec![0.0; dimensions],
            lagged: vec![0.0; dimensions * dimensions],
        }
    }

    fn learn(&mut self, values: &[f64], horizon: usize) {
        let d = values.len();
        self.successive.resize(d, 0.0);
        self.lagged.resize(d * d, 0.0);
        if self.history.len() == self.lag {
            self.pairs += 1;
            let weight = 1.0 / self.pairs.min(horizon) as f64;
            let (Some(oldest), Some(last)) = (self.history.front(), self.history.back()) else {
                return;
            };
            for (i, value) in values.iter().enumerate() {
                self.successive[i] += weight * ((value - last[i]).powi(2) - self.successive[i]);
                for j in 0..d {
                    let product = (value - oldest[i]) * (values[j] - oldest[j]);
                    self.lagged[i * d + j] += weight * (product - self.lagged[i * d + j]);
                }
            }
            self.history.pop_front();
        }
        self.history.push_back(values.to_vec());
    }

    /// Value `i`'s wander per reading (a variance), 0 until `lag` readings are learnt.
    fn per_reading(&self, i: usize) -> f64 {
        let d = self.successive.len();
        match (
            self.pairs,
            self.lagged.get(i * d + i),
            self.successive.get(i),
        ) {
            (1.., Some(lagged), Some(successive)) => {
                ((lagged - successive) / (self.lag - 1) as f64).max(0.0)
            }
            _ => 0.0,
        }
    }

    /// How the values wander together: the correlations of their differences `lag` readings
    /// apart, row-major (none known: the identity). A pump's pressure and flow drift
    /// together, so the uncertainty of their levels does too, and flow falling away from
    /// pressure still stands out while both are uncertain.
    fn correlation(&self, d: usize) -> Vec<f64> {
        let mut correlation = vec![0.0; d * d];
        for i in 0..d {
            correlation[i * d + i] = 1.0;
        }
        if self.pairs == 0 || self.lagged.len() != d * d {
            return correlation;
        }
        for i in 0..d {
            for j in 0..d {
                let scale = (self.lagged[i * d + i] * self.lagged[j * d + j]).sqrt();
                if i != j && scale > 0.0 {
                    correlation[i * d + j] = self.lagged[i * d + j] / scale;
                }
            }
        }
        correlation
    }

    /// Value `i`'s noise variance around its level.
    fn noise(&self, i: usize) -> f64 {
        match (self.pairs, self.successive.get(i)) {
            (1.., Some(successive)) => ((successive - self.per_reading(i)) / 2.0).max(0.0),
            _ => 0.0,
        }
    }
}

impl Mahalanobis {
    pub fn new(
        dimensions: usize,
        warm_up: usize,
        horizon: usize,
        recent: usize,
        lag: usize,
    ) -> Self {
        let dimensions = dimensions.max(1);
        Mahalanobis {
            dimensions,
            warm_up: warm_up.max(dimensions + 2),
            horizon: horizon.max(2),
            learnt: 0,
            level: vec![0.0; dimensions],
            level_variance: vec![0.0; dimensions],
            wander: Wander::new(dimensions, lag),
            innovation_mean: vec![0.0; dimensions],
            covariance: vec![0.0; dimensions * dimensions],
            tail: TailModel::new(horizon.max(2), warm_up.max(20)),
            recent: recent.max(1),
            latest_innovations: VecDeque::with_capacity(recent.max(1) + 1),
            unlearnt: 0,
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
        // A checkpoint from before levels were followed has none of their state yet.
        self.level_variance.resize(self.dimensions, 0.0);
        self.innovation_mean.resize(self.dimensions, 0.0);
        // Each level grows uncertain by its wander, learnt or not.
        for (i, variance) in self.level_variance.iter_mut().enumerate() {
            *variance += self.wander.per_reading(i);
        }
        let innovations: Vec<f64> = values.iter().zip(&self.level).map(|(v, l)| v - l).collect();
        if self.learnt < self.warm_up {
            self.learn(values, &innovations);
            return None;
        }
        // The mean of the latest innovations: a shift that lasts adds up over them, noise
        // averages out (under a covariance divided by their count, the distance of noise alone
        // is the same).
        self.latest_innovations.push_back(innovations.clone());
        if self.latest_innovations.len() > self.recent {
            self.latest_innovations.pop_front();
        }
        let count = self.latest_innovations.len() as f64;
        let averaged: Vec<f64> = (0..self.dimensions)
            .map(|i| self.latest_innovations.iter().map(|v| v[i]).sum::<f64>() / count)
            .collect();
        let raw = self.distance(&averaged, count);
        let score = self.tail.update(raw);
        if score.is_none_or(|score| score < LEARN_BELOW) {
            self.learn(values, &innovations);
        } else {
            self.unlearnt += 1;
        }
        score
    }

    fn learn(&mut self, values: &[f64], innovations: &[f64]) {
        self.learnt += 1;
        self.unlearnt = 0;
        let weight = 1.0 / (self.learnt.min(self.horizon)) as f64;
        let d = self.dimensions;
        // The covariance of innovations, from the second reading on (the first has no level
        // to differ from): the exponentially weighted update (West, 1979), which with equal
        // weights is Welford's.
        if self.learnt > 1 {
            let weight = 1.0 / ((self.learnt - 1).min(self.horizon)) as f64;
            let deltas: Vec<f64> = innovations
                .iter()
                .zip(&self.innovation_mean)
                .map(|(v, m)| v - m)
                .collect();
            for (mean, delta) in self.innovation_mean.iter_mut().zip(&deltas) {
                *mean += weight * delta;
            }
            for i in 0..d {
                for j in 0..d {
                    let cell = &mut self.covariance[i * d + j];
                    *cell = (1.0 - weight) * (*cell + weight * deltas[i] * deltas[j]);
                }
            }
        }
        self.wander.learn(values, self.horizon);
        // Each level moves towards the reading by the Kalman gain of its uncertainty against
        // the value's noise, and at least as far as a mean over the horizon would.
        for (i, value) in values.iter().enumerate() {
            let variance = self.level_variance[i];
            let noise = self.wander.noise(i);
            let gain = if variance + noise > 0.0 {
                (variance / (variance + noise)).max(weight)
            } else {
                weight
            };
            self.level[i] += gain * (value - self.level[i]);
            self.level_variance[i] = (1.0 - gain) * variance;
        }
    }

    /// The squared Mahalanobis distance of the mean of `count` innovations from their normal
    /// mean, per dimension, under the shrunk covariance of such a mean plus the uncertainty of
    /// the levels.
    fn distance(&self, averaged: &[f64], count: f64) -> f64 {
        let d = self.dimensions;
        let mut matrix = self.covariance.clone();
        let correlation = self.wander.correlation(d);
        let uncertain = &self.level_variance;
        for i in 0..d {
            for j in 0..d {
                let cell = i * d + j;
                if i != j {
                    let together = correlation[cell] * (uncertain[i] * uncertain[j]).sqrt();
                    matrix[cell] = (1.0 - SHRINKAGE) * (matrix[cell] / count + together);
                }
            }
            // A floor relative to the value's size keeps a constant sensor invertible.
            let floor = 1e-6 * (1.0 + self.level[i].abs()).powi(2);
            matrix[i * d + i] = matrix[i * d + i].max(floor) / count + uncertain[i];
        }
        let deltas: Vec<f64> = averaged
            .iter()
            .zip(&self.innovation_mean)
            .map(|(v, m)| v - m)
            .collect();
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
        let mut detector = Mahalanobis::new(2, 200, 1_000, 1, DEFAULT_LAG);
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
        let mut detector = Mahalanobis::new(2, 100, 500, 5, DEFAULT_LAG);
        for i in 0..800 {
            detector.update(&[reading(i)[0], 32.0]);
        }
        let fault: Vec<f64> = (0..300)
            .filter_map(|i| detector.update(&[reading(i)[0], 31.0]))
            .collect();
        assert!(fault.iter().all(|score| *score >= 0.999), "{fault:?}");
    }

    /// A pump's flow, steady with noise, and its water's temperature, which wanders slowly
    /// (a random walk) under noise of its own.
    fn pump(i: usize, walk: &mut f64) -> [f64; 2] {
        let a = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
        let b = ((i * 104_729) % 103) as f64 / 103.0 - 0.5;
        let c = ((i * 1_299_709) % 107) as f64 / 107.0 - 0.5;
        *walk += 0.02 * c;
        [32.0 + 0.4 * a, 70.0 + *walk + 0.1 * b]
    }

    #[test]
    fn a_value_that_wandered_on_through_a_fault_does_not_keep_the_alarm_up() {
        let mut detector = Mahalanobis::new(2, 200, 1_000, 10, DEFAULT_LAG);
        let mut walk = 0.0;
        let calm: Vec<f64> = (0..800)
            .filter_map(|i| detector.update(&pump(i, &mut walk)))
            .collect();
        let alarms = calm.iter().filter(|score| **score >= 0.9999).count();
        assert!(alarms * 100 < calm.len(), "{alarms} of {}", calm.len());
        // A valve half closed: flow down by about three of its deviations, for 400 readings,
        // while the temperature goes on wandering.
        let fault: Vec<f64> = (800..1_200)
            .filter_map(|i| {
                let [flow, temperature] = pump(i, &mut walk);
                detector.update(&[flow - 0.35, temperature])
            })
            .collect();
        let flagged = fault.iter().filter(|score| **score >= 0.9999).count();
        assert!(
            flagged * 10 >= fault.len() * 9,
            "{flagged} of {}",
            fault.len()
        );
        // The valve opens: past the readings the latest ones are averaged over, the alarm is down.
        let after: Vec<f64> = (1_200..1_400)
            .filter_map(|i| detector.update(&pump(i, &mut walk)))
            .collect();
        let alarms = after[20..].iter().filter(|score| **score >= 0.9999).count();
        assert!(
            alarms * 50 < after.len(),
            "{alarms} of {}: {after:?}",
            after.len()
        );
    }

    #[test]
    fn a_checkpoint_from_before_levels_were_followed_restores_and_scores() {
        // Written by the detector as it was before it followed levels: the pump's first 300
        // readings, with a warm-up of 30 and a horizon of 60.
        let old = include_str!("../tests/fixtures/mahalanobis-before-levels.json");
        let mut detector: Mahalanobis = serde_json::from_str(old).unwrap();
        let mut walk = 0.0;
        for i in 0..300 {
            pump(i, &mut walk);
        }
        let calm: Vec<f64> = (300..500)
            .filter_map(|i| detector.update(&pump(i, &mut walk)))
            .collect();
        assert_eq!(calm.len(), 200);
        let alarms = calm.iter().filter(|score| **score >= 0.9999).count();
        assert!(
            alarms * 50 < calm.len(),
            "{alarms} of {}: {calm:?}",
            calm.len()
        );
        let fault: Vec<f64> = (500..530)
            .filter_map(|i| {
                let [flow, temperature] = pump(i, &mut walk);
                detector.update(&[flow - 1.0, temperature])
            })
            .collect();
        assert!(fault[10..].iter().all(|score| *score > 0.9999), "{fault:?}");
    }
}
