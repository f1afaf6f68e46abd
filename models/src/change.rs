//! Change points: the moment one or several values move to another level together (a valve
//! closing, a pump starting, an HVAC setpoint drifting off), scored when it happens and not
//! for as long as the new level lasts.
//!
//! Two adjacent windows of the latest readings are compared: the mean of the last `recent`
//! against the mean of the `before` readings just ahead of them, per value, in units of the
//! value's noise. The noise is learnt from successive differences (half their mean square),
//! which a level shift barely touches, so a change does not hide behind the variance it would
//! otherwise add. Once both windows lie on the new level the difference is gone and the score
//! falls: one alarm per change, a rising score again when the level changes back. Scores come
//! from the tail model of normal raw scores ([`crate::tail`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::tail::TailModel;

/// Readings whose score is at or above this do not teach the noise level.
const LEARN_BELOW: f64 = 0.99;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelChange {
    dimensions: usize,
    recent: usize,
    before: usize,
    horizon: usize,
    /// The last `recent + before` readings, oldest first.
    window: VecDeque<Vec<f64>>,
    /// Per value: half the mean square of successive differences, and how many taught it.
    noise: Vec<f64>,
    learnt: usize,
    tail: TailModel,
}

impl LevelChange {
    pub fn new(dimensions: usize, recent: usize, before: usize, horizon: usize) -> Self {
        let dimensions = dimensions.max(1);
        let horizon = horizon.max(2);
        LevelChange {
            dimensions,
            recent: recent.max(1),
            before: before.max(1),
            horizon,
            window: VecDeque::with_capacity(recent + before + 1),
            noise: vec![0.0; dimensions],
            learnt: 0,
            tail: TailModel::new(horizon, (horizon / 5).max(20)),
        }
    }

    /// Readings before the first score.
    pub fn warm_up(&self) -> usize {
        self.recent + self.before - 1 + self.tail.warm_up()
    }

    /// The score of the next reading, or `None` while warming up.
    pub fn update(&mut self, values: &[f64]) -> Option<f64> {
        if values.len() != self.dimensions || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let step: Option<Vec<f64>> = self
            .window
            .back()
            .map(|last| values.iter().zip(last).map(|(v, l)| v - l).collect());
        self.window.push_back(values.to_vec());
        if self.window.len() > self.recent + self.before {
            self.window.pop_front();
        }
        let score = match self.window.len() == self.recent + self.before {
            true => self.tail.update(self.raw()),
            false => None,
        };
        if let Some(step) = step
            && score.is_none_or(|score| score < LEARN_BELOW)
        {
            self.learnt += 1;
            let weight = 1.0 / self.learnt.min(self.horizon) as f64;
            for (noise, step) in self.noise.iter_mut().zip(step) {
                *noise += weight * (step * step / 2.0 - *noise);
            }
        }
        score
    }

    /// The squared difference of the two windows' means per value, in units of its standard
    /// error, averaged over the values.
    fn raw(&self) -> f64 {
        let before = self.before as f64;
        let recent = self.recent as f64;
        let mut total = 0.0;
        for (i, noise) in self.noise.iter().enumerate() {
            let mean = |values: &mut dyn Iterator<Item = &Vec<f64>>, count: f64| {
                values.map(|values| values[i]).sum::<f64>() / count
            };
            let mean_before = mean(&mut self.window.iter().take(self.before), before);
            let mean_recent = mean(&mut self.window.iter().skip(self.before), recent);
            let scale = mean_before.abs().max(mean_recent.abs());
            let variance = noise.max(1e-12 * (1.0 + scale * scale));
            total +=
                (mean_recent - mean_before).powi(2) / (variance * (1.0 / recent + 1.0 / before));
        }
        total / self.dimensions as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(i: usize) -> f64 {
        ((i * 7919) % 101) as f64 / 101.0 - 0.5
    }

    #[test]
    fn a_level_shift_scores_when_it_happens_and_not_while_it_lasts() {
        let mut detector = LevelChange::new(2, 10, 30, 600);
        let mut flagged = Vec::new();
        for i in 0..3_000 {
            // Both values step up at 1500 and back down at 2300.
            let level = if (1_500..2_300).contains(&i) {
                3.0
            } else {
                0.0
            };
            let values = [level + noise(i), 10.0 + 2.0 * level + noise(i + 50)];
            if detector.update(&values).is_some_and(|score| score >= 0.999) {
                flagged.push(i);
            }
        }
        let near = |at: usize| flagged.iter().filter(|i| (at..at + 40).contains(i)).count();
        assert!(near(1_500) > 0 && near(2_300) > 0, "{flagged:?}");
        // Quiet while the new level lasts.
        assert!(
            flagged
                .iter()
                .all(|i| (1_500..1_540).contains(i) || (2_300..2_340).contains(i)),
            "{flagged:?}"
        );
    }
}
