//! The Numenta Anomaly Benchmark's scoring of change-point detections, standard profile
//! (Lavin and Ahmad, 2015), as SKAB reports its change-point problem.
//!
//! Each labelled change point opens a window of `window` to its right. The first detection in
//! a window earns a reward that is larger the earlier it comes (a scaled sigmoid of its place
//! in the window: nearly 1 at the change, 0 at the window's end); later detections in the same
//! window count for nothing; a window without a detection costs 1. A detection outside every
//! window costs 0.11, less when it comes just after a window (the sigmoid again). The raw sum
//! is normalized between a detector that never fires (0) and one that fires exactly at every
//! change (100), over all series together.

/// The standard profile's weights.
const TRUE_POSITIVE: f64 = 1.0;
const FALSE_POSITIVE: f64 = 0.11;
const FALSE_NEGATIVE: f64 = 1.0;

/// NAB's scaled sigmoid: 2 / (1 + e^(5y)) − 1, for y the place relative to a window's end in
/// window lengths (−1 at its start, 0 at its end, above 0 after it).
fn scaled_sigmoid(y: f64) -> f64 {
    2.0 / (1.0 + (5.0 * y).exp()) - 1.0
}

/// The NAB scoring of one or more series, added up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NabScore {
    /// The raw weighted sum.
    pub raw: f64,
    /// What a detector that fires at the start of every window would get.
    pub perfect: f64,
    /// What a detector that never fires gets.
    pub null: f64,
    pub windows: usize,
    pub missed: usize,
    pub false_positives: usize,
}

impl NabScore {
    /// Scores `detections` (times, ascending) against `changes` (labelled change points,
    /// ascending) with windows of `window` to the right of each; times in any unit.
    pub fn of(changes: &[i64], detections: &[i64], window: i64) -> NabScore {
        // Windows that overlap are one window from the first start to the last end.
        let mut windows: Vec<(i64, i64)> = Vec::new();
        for &change in changes {
            match windows.last_mut() {
                Some((_, end)) if change <= *end => *end = change + window,
                _ => windows.push((change, change + window)),
            }
        }
        let mut score = NabScore {
            windows: windows.len(),
            ..NabScore::default()
        };
        let mut detected = vec![false; windows.len()];
        for &at in detections {
            match windows
                .iter()
                .position(|(start, end)| (*start..=*end).contains(&at))
            {
                Some(index) => {
                    if !detected[index] {
                        detected[index] = true;
                        let (start, end) = windows[index];
                        let length = (end - start).max(1) as f64;
                        let y = (at - end) as f64 / length;
                        score.raw += TRUE_POSITIVE * scaled_sigmoid(y);
                    }
                }
                None => {
                    score.false_positives += 1;
                    let before = windows.iter().rev().find(|(_, end)| *end < at);
                    let weight = match before {
                        Some((start, end)) => {
                            let length = (end - start).max(1) as f64;
                            -scaled_sigmoid((at - end) as f64 / length)
                        }
                        None => 1.0,
                    };
                    score.raw -= FALSE_POSITIVE * weight;
                }
            }
        }
        for found in &detected {
            if !found {
                score.missed += 1;
                score.raw -= FALSE_NEGATIVE;
            }
        }
        score.perfect = windows.len() as f64 * TRUE_POSITIVE * scaled_sigmoid(-1.0);
        score.null = -(windows.len() as f64) * FALSE_NEGATIVE;
        score
    }

    /// Adds another series' scoring.
    pub fn add(&mut self, other: &NabScore) {
        self.raw += other.raw;
        self.perfect += other.perfect;
        self.null += other.null;
        self.windows += other.windows;
        self.missed += other.missed;
        self.false_positives += other.false_positives;
    }

    /// The normalized score: 0 for never firing, 100 for firing at every change; negative for
    /// worse than never firing.
    pub fn normalized(&self) -> Option<f64> {
        let span = self.perfect - self.null;
        (span > 0.0).then(|| 100.0 * (self.raw - self.null) / span)
    }
}

/// The detections of a flagged series: each reading flagged after one that was not.
pub fn rising_edges(times: &[i64], flagged: &[bool]) -> Vec<i64> {
    let mut before = false;
    let mut edges = Vec::new();
    for (&at, &now) in times.iter().zip(flagged) {
        if now && !before {
            edges.push(at);
        }
        before = now;
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_is_better_missing_costs_one_and_false_alarms_a_little() {
        let perfect = NabScore::of(&[100, 500], &[100, 500], 60);
        assert!((perfect.normalized().unwrap() - 100.0).abs() < 1e-9);
        let never = NabScore::of(&[100, 500], &[], 60);
        assert_eq!(never.normalized(), Some(0.0));
        assert_eq!(never.missed, 2);
        // At the end of the window a detection is worth nothing more than a miss.
        let late = NabScore::of(&[100], &[160], 60);
        assert!((late.raw - 0.0).abs() < 1e-9, "{late:?}");
        let early = NabScore::of(&[100], &[110], 60);
        let later = NabScore::of(&[100], &[140], 60);
        assert!(early.raw > later.raw && later.raw > 0.0);
        // A second detection in the window is free; one far from any window costs 0.11.
        let twice = NabScore::of(&[100], &[100, 120], 60);
        assert_eq!(twice.raw, perfect.raw / 2.0);
        let stray = NabScore::of(&[100], &[10], 60);
        assert!((stray.raw - (-1.0 - 0.11)).abs() < 1e-9, "{stray:?}");
        assert_eq!(stray.false_positives, 1);
        // Just after a window, a false alarm costs less than far after it.
        let near = NabScore::of(&[100], &[100, 170], 60);
        let far = NabScore::of(&[100], &[100, 1_000], 60);
        assert!(near.raw > far.raw);
    }

    #[test]
    fn detections_are_where_flags_start() {
        let edges = rising_edges(
            &[1, 2, 3, 4, 5, 6],
            &[false, true, true, false, true, false],
        );
        assert_eq!(edges, vec![2, 5]);
    }
}
