//! How well a detector finds labelled anomalies: point-wise precision, recall and F1, and how
//! long after an anomaly starts the detector says so.

/// One scored reading with its label.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    /// Event time, nanoseconds.
    pub ts: i64,
    /// `None` while the detector warmed up (not counted).
    pub score: Option<f64>,
    pub anomalous: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    pub readings: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// Anomalous runs (consecutive labelled readings), and how many were flagged at all.
    pub events: usize,
    pub events_detected: usize,
    /// Seconds from each detected event's first labelled reading to its first flag.
    pub times_to_detect: Vec<f64>,
}

impl Evaluation {
    /// Folds another series' evaluation into this one.
    pub fn add(&mut self, other: Evaluation) {
        self.readings += other.readings;
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
        self.events += other.events;
        self.events_detected += other.events_detected;
        self.times_to_detect.extend(other.times_to_detect);
    }

    pub fn precision(&self) -> Option<f64> {
        let flagged = self.true_positives + self.false_positives;
        (flagged > 0).then(|| self.true_positives as f64 / flagged as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        let actual = self.true_positives + self.false_negatives;
        (actual > 0).then(|| self.true_positives as f64 / actual as f64)
    }

    pub fn f1(&self) -> Option<f64> {
        let (p, r) = (self.precision()?, self.recall()?);
        (p + r > 0.0).then(|| 2.0 * p * r / (p + r))
    }

    /// The share of normal readings flagged (SKAB's FAR).
    pub fn false_alarm_rate(&self) -> Option<f64> {
        let normal = self.readings - self.true_positives - self.false_negatives;
        (normal > 0).then(|| self.false_positives as f64 / normal as f64)
    }

    /// The share of anomalous readings not flagged (SKAB's MAR).
    pub fn missed_alarm_rate(&self) -> Option<f64> {
        self.recall().map(|recall| 1.0 - recall)
    }

    /// The median time to detect, seconds.
    pub fn median_time_to_detect(&self) -> Option<f64> {
        let mut times = self.times_to_detect.clone();
        times.sort_by(f64::total_cmp);
        times.get(times.len() / 2).copied()
    }
}

/// Scores `series` (in time order) against its labels at `threshold`.
pub fn evaluate(series: &[Scored], threshold: f64) -> Evaluation {
    let mut evaluation = Evaluation::default();
    // The current labelled run: its start, and whether it has been flagged.
    let mut event: Option<(i64, bool)> = None;
    for reading in series {
        let flagged = reading.score.is_some_and(|score| score >= threshold);
        if reading.score.is_some() {
            evaluation.readings += 1;
            match (flagged, reading.anomalous) {
                (true, true) => evaluation.true_positives += 1,
                (true, false) => evaluation.false_positives += 1,
                (false, true) => evaluation.false_negatives += 1,
                (false, false) => {}
            }
        }
        match (&mut event, reading.anomalous) {
            (None, true) => {
                evaluation.events += 1;
                event = Some((reading.ts, false));
                if flagged {
                    evaluation.events_detected += 1;
                    evaluation.times_to_detect.push(0.0);
                    event = Some((reading.ts, true));
                }
            }
            (Some((start, detected)), true) => {
                if flagged && !*detected {
                    *detected = true;
                    evaluation.events_detected += 1;
                    evaluation
                        .times_to_detect
                        .push((reading.ts - *start) as f64 / 1e9);
                }
            }
            (_, false) => event = None,
        }
    }
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(second: i64, score: f64, anomalous: bool) -> Scored {
        Scored {
            ts: second * 1_000_000_000,
            score: Some(score),
            anomalous,
        }
    }

    #[test]
    fn counts_points_and_events() {
        let series = [
            reading(0, 0.2, false),
            reading(1, 0.995, false), // false positive
            reading(2, 0.5, true),    // an event starts, missed at first
            reading(3, 0.999, true),  // detected after 1 s
            reading(4, 0.3, false),
            reading(5, 0.1, true), // a second event, never detected
        ];
        let result = evaluate(&series, 0.99);
        assert_eq!(
            (
                result.true_positives,
                result.false_positives,
                result.false_negatives
            ),
            (1, 1, 2)
        );
        assert_eq!((result.events, result.events_detected), (2, 1));
        assert_eq!(result.times_to_detect, vec![1.0]);
        assert_eq!(result.precision(), Some(0.5));
        assert_eq!(result.recall(), Some(1.0 / 3.0));
        assert!((result.f1().unwrap() - 0.4).abs() < 1e-9);
    }
}
