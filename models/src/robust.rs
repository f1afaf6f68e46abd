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

/// The median of `values`, which it reorders: selected, not sorted for (a sort of each window
/// was most of the detector's cost).
fn median(values: &mut [f64]) -> f64 {
    let middle = values.len() / 2;
    let even = values.len().is_multiple_of(2);
    let (below, at, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    if even {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + *at) / 2.0
    } else {
        *at
    }
}

impl Detector for Robust {
    fn update(&mut self, _ts: i64, value: f64) -> Option<f64> {
        let score = (self.values.len() >= self.window).then(|| {
            let mut window: Vec<f64> = self.values.iter().copied().collect();
            let center = median(&mut window);
            for value in &mut window {
                *value = (*value - center).abs();
            }
            let spread = median(&mut window) * MAD_TO_DEVIATION;
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
