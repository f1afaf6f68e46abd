//! Robust score: distance from the median of the last `window` readings in units of their
//! median absolute deviation (scaled to a standard deviation for normal data). A burst of
//! outliers cannot drag the median along as it drags a mean.

use serde::{Deserialize, Serialize};

use std::collections::VecDeque;

use crate::detector::Detector;
use crate::zscore::DEVIATION_FLOOR;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Robust {
    window: usize,
    values: VecDeque<f64>,
}

/// MAD × 1.4826 estimates the standard deviation of normally distributed data.
const MAD_TO_DEVIATION: f64 = 1.4826;

impl Robust {
    pub fn new(window: usize) -> Self {
        Robust {
            window,
            values: VecDeque::with_capacity(window),
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

impl Detector for Robust {
    fn update(&mut self, _ts: i64, value: f64) -> Option<f64> {
        let score = (self.values.len() >= self.window).then(|| {
            let mut sorted: Vec<f64> = self.values.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let center = median(&sorted);
            let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - center).abs()).collect();
            deviations.sort_by(f64::total_cmp);
            let spread = median(&deviations) * MAD_TO_DEVIATION;
            (value - center).abs() / spread.max(DEVIATION_FLOOR)
        });
        self.values.push_back(value);
        if self.values.len() > self.window {
            self.values.pop_front();
        }
        score
    }

    fn warm_up(&self) -> usize {
        self.window
    }
}
