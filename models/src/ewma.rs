//! EWMA: a reading's distance from an exponentially weighted mean, in exponentially weighted
//! deviations. Adapts to drift at a rate set by `alpha`; no window to keep.

use serde::{Deserialize, Serialize};

use crate::detector::Detector;
use crate::zscore::DEVIATION_FLOOR;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    variance: f64,
    seen: usize,
}

/// Readings before the weighted moments are trusted.
const WARM_UP: usize = 20;

impl Ewma {
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha,
            mean: 0.0,
            variance: 0.0,
            seen: 0,
        }
    }
}

impl Detector for Ewma {
    fn update(&mut self, _ts: i64, value: f64) -> Option<f64> {
        if self.seen == 0 {
            self.mean = value;
        }
        let deviation = value - self.mean;
        let score = (self.seen >= WARM_UP)
            .then(|| deviation.abs() / self.variance.sqrt().max(DEVIATION_FLOOR));
        self.mean += self.alpha * deviation;
        self.variance = (1.0 - self.alpha) * (self.variance + self.alpha * deviation * deviation);
        self.seen += 1;
        score
    }

    fn warm_up(&self) -> usize {
        WARM_UP
    }
}
