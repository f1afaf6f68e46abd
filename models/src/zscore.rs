//! Rolling z-score: how many standard deviations a reading is from the mean of the last
//! `window` readings (before it).

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

use crate::detector::Detector;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ZScore {
    window: usize,
    values: VecDeque<f64>,
    sum: f64,
    sum_of_squares: f64,
}

impl ZScore {
    pub fn new(window: usize) -> Self {
        ZScore {
            window,
            values: VecDeque::with_capacity(window),
            sum: 0.0,
            sum_of_squares: 0.0,
        }
    }
}

/// A deviation below this is treated as this: a sensor that has read exactly the same for a
/// while is not infinitely surprised by the next decimal.
pub(crate) const DEVIATION_FLOOR: f64 = 1e-6;

impl Detector for ZScore {
    fn update(&mut self, _ts: i64, value: f64) -> Option<f64> {
        let n = self.values.len() as f64;
        let score = (self.values.len() >= self.window).then(|| {
            let mean = self.sum / n;
            let variance = (self.sum_of_squares / n - mean * mean).max(0.0);
            (value - mean).abs() / variance.sqrt().max(DEVIATION_FLOOR)
        });
        self.values.push_back(value);
        self.sum += value;
        self.sum_of_squares += value * value;
        if self.values.len() > self.window
            && let Some(old) = self.values.pop_front()
        {
            self.sum -= old;
            self.sum_of_squares -= old * old;
        }
        score
    }

    fn warm_up(&self) -> usize {
        self.window
    }
}
