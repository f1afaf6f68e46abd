//! What every detector does, and how one is chosen by name with `key=value` options.

use serde::{Deserialize, Serialize};

use crate::calibration::{Beyond, Likelihood};
use crate::change::LevelChange;
use crate::half_space::HalfSpaceTrees;
use crate::mahalanobis::{DEFAULT_LAG, Mahalanobis};
use crate::{
    drift::Drift, ewma::Ewma, flatline::Flatline, gap::Gap, robust::Robust, seasonal::Seasonal,
    zscore::ZScore,
};

/// An online detector of one series.
pub trait Detector: Send {
    /// Takes the next reading (event time in nanoseconds); returns its raw score, or `None`
    /// while warming up.
    fn update(&mut self, ts: i64, value: f64) -> Option<f64>;

    /// Readings it needs before it scores.
    fn warm_up(&self) -> usize;

    /// Whether its scores are probabilities in [0, 1] already (no calibration needed).
    fn calibrated(&self) -> bool {
        false
    }
}

/// An online detector of several values of one place at once.
pub trait MultiDetector: Send {
    /// Takes the next readings (one per dimension); returns the raw score, or `None` while
    /// warming up.
    fn update(&mut self, ts: i64, values: &[f64]) -> Option<f64>;

    fn warm_up(&self) -> usize;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DetectorError {
    #[error(
        "unknown detector `{0}`: use auto, zscore, ewma, robust, seasonal, drift, flatline, gap, hst, mahalanobis or change"
    )]
    Unknown(String),
    #[error("detector `{detector}` has no option `{option}` (it takes: {known})")]
    UnknownOption {
        detector: String,
        option: String,
        known: String,
    },
    #[error("option `{option}`: {problem}")]
    BadOption { option: String, problem: String },
    #[error(
        "detector `{0}` scores one value; `hst`, `mahalanobis` and `change` score several together"
    )]
    OneValue(String),
}

fn number(
    option: &str,
    text: &str,
    valid: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<f64, DetectorError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|value| valid(*value))
        .ok_or_else(|| DetectorError::BadOption {
            option: option.to_string(),
            problem: format!("expected {expected}, found {text:?}"),
        })
}

/// The detectors, by name.
pub const DETECTORS: [&str; 11] = [
    "auto",
    "zscore",
    "ewma",
    "robust",
    "seasonal",
    "drift",
    "flatline",
    "gap",
    "hst",
    "mahalanobis",
    "change",
];

/// The detectors that score several values of one place together (and one value as well).
pub const JOINT: [&str; 3] = ["hst", "mahalanobis", "change"];

/// The options a detector takes, or `None` for an unknown detector.
pub fn options_of(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "zscore" | "robust" => Some(&["window", "history", "recent"]),
        "ewma" => Some(&["alpha", "history", "recent"]),
        "seasonal" => Some(&["slots", "days", "alpha", "history", "recent"]),
        "drift" => Some(&["slots", "days", "alpha"]),
        "flatline" | "gap" | "auto" => Some(&[]),
        "hst" => Some(&["trees", "depth", "window"]),
        "mahalanobis" => Some(&["warm_up", "horizon", "recent", "lag"]),
        "change" => Some(&["recent", "before", "horizon"]),
        _ => None,
    }
}

/// What `auto` combines: a value detector that knows the day, and the fault-specific ones.
const COMBINED: [&str; 4] = ["seasonal", "drift", "flatline", "gap"];

/// A detector with calibrated scores in [0, 1]: one, or `auto`, the highest score of several
/// (each calibrated, so the highest is the strongest evidence of any kind of fault).
///
/// A scorer's whole state serializes (serde), so it can be checkpointed and restored: a restored
/// scorer goes on exactly as the original would have.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Scorer {
    Single(Single),
    Combined(Vec<Single>),
    /// Several values scored together (`hst`).
    Multi {
        detector: Box<HalfSpaceTrees>,
        likelihood: Likelihood,
    },
    /// Several values (or one) against their normal operating point, with its own tail model.
    Mahalanobis(Box<Mahalanobis>),
    /// Several values (or one) at the moment they change level, with its own tail model.
    Change(Box<LevelChange>),
}

/// The single-series detectors, as one type so their state serializes.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum SeriesDetector {
    ZScore(ZScore),
    Ewma(Ewma),
    Robust(Robust),
    Seasonal(Seasonal),
    Drift(Drift),
    Flatline(Flatline),
    Gap(Gap),
}

impl SeriesDetector {
    fn get(&self) -> &dyn Detector {
        match self {
            SeriesDetector::ZScore(detector) => detector,
            SeriesDetector::Ewma(detector) => detector,
            SeriesDetector::Robust(detector) => detector,
            SeriesDetector::Seasonal(detector) => detector,
            SeriesDetector::Drift(detector) => detector,
            SeriesDetector::Flatline(detector) => detector,
            SeriesDetector::Gap(detector) => detector,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Detector {
        match self {
            SeriesDetector::ZScore(detector) => detector,
            SeriesDetector::Ewma(detector) => detector,
            SeriesDetector::Robust(detector) => detector,
            SeriesDetector::Seasonal(detector) => detector,
            SeriesDetector::Drift(detector) => detector,
            SeriesDetector::Flatline(detector) => detector,
            SeriesDetector::Gap(detector) => detector,
        }
    }
}

impl Scorer {
    /// Builds the named detector with `options` (see [`options_of`]); `auto` takes none.
    pub fn new(name: &str, options: &[(String, String)]) -> Result<Scorer, DetectorError> {
        Scorer::for_values(name, options, 1)
    }

    /// Builds the named detector for `values` values per reading: several only for `hst`.
    pub fn for_values(
        name: &str,
        options: &[(String, String)],
        values: usize,
    ) -> Result<Scorer, DetectorError> {
        if name == "hst" {
            let known = options_of(name).expect("known");
            let mut trees = 25.0;
            let mut depth = 10.0;
            let mut window = 250.0;
            for (option, value) in options {
                let whole = |v: f64| (1.0..=100_000.0).contains(&v) && v.fract() == 0.0;
                match option.as_str() {
                    "trees" => trees = number(option, value, whole, "a whole number from 1")?,
                    "depth" => {
                        depth = number(
                            option,
                            value,
                            |v| (1.0..=20.0).contains(&v) && v.fract() == 0.0,
                            "a whole number from 1 to 20",
                        )?
                    }
                    "window" => window = number(option, value, whole, "a whole number from 1")?,
                    _ => {
                        return Err(DetectorError::UnknownOption {
                            detector: name.to_string(),
                            option: option.clone(),
                            known: known.join(", "),
                        });
                    }
                }
            }
            return Ok(Scorer::Multi {
                detector: Box::new(HalfSpaceTrees::new(
                    values.max(1),
                    trees as usize,
                    depth as u32,
                    window as usize,
                )),
                likelihood: Likelihood::new(500, 1),
            });
        }
        if name == "mahalanobis" || name == "change" {
            return joint(name, options, values.max(1));
        }
        if values > 1 {
            return Err(DetectorError::OneValue(name.to_string()));
        }
        if name == "auto" {
            if let Some((option, _)) = options.first() {
                return Err(DetectorError::UnknownOption {
                    detector: name.to_string(),
                    option: option.clone(),
                    known: "none".to_string(),
                });
            }
            return COMBINED
                .iter()
                .map(|name| Single::new(name, &[]))
                .collect::<Result<Vec<_>, _>>()
                .map(Scorer::Combined);
        }
        Single::new(name, options).map(Scorer::Single)
    }

    /// The score of the next reading, or `None` while warming up.
    pub fn score(&mut self, ts: i64, value: f64) -> Option<f64> {
        self.score_values(ts, &[value])
    }

    /// The score of the next readings (one per value the detector was built for).
    pub fn score_values(&mut self, ts: i64, values: &[f64]) -> Option<f64> {
        if values.iter().any(|value| !value.is_finite()) {
            return None;
        }
        match self {
            Scorer::Single(single) => single.score(ts, *values.first()?),
            Scorer::Combined(all) => {
                let value = *values.first()?;
                all.iter_mut()
                    .filter_map(|single| single.score(ts, value))
                    .reduce(f64::max)
            }
            Scorer::Multi {
                detector,
                likelihood,
            } => {
                let raw = detector.update(ts, values)?;
                likelihood.update(raw, Beyond::HeavyTail)
            }
            Scorer::Mahalanobis(detector) => detector.update(values),
            Scorer::Change(detector) => detector.update(values),
        }
    }

    /// Readings before the first score.
    pub fn warm_up(&self) -> usize {
        match self {
            Scorer::Single(single) => single.warm_up(),
            Scorer::Combined(all) => all.iter().map(Single::warm_up).min().unwrap_or(0),
            Scorer::Multi {
                detector,
                likelihood,
            } => detector.warm_up() + likelihood.warm_up(),
            Scorer::Mahalanobis(detector) => detector.warm_up(),
            Scorer::Change(detector) => detector.warm_up(),
        }
    }
}

/// `mahalanobis` or `change` over `values` values, with their whole-number options.
fn joint(name: &str, options: &[(String, String)], values: usize) -> Result<Scorer, DetectorError> {
    let known = options_of(name).expect("known");
    let mut settings: Vec<(&str, f64)> = match name {
        "mahalanobis" => vec![
            ("warm_up", 200.0),
            ("horizon", 1_000.0),
            ("recent", 10.0),
            ("lag", DEFAULT_LAG as f64),
        ],
        _ => vec![("recent", 10.0), ("before", 30.0), ("horizon", 600.0)],
    };
    for (option, value) in options {
        let Some(setting) = settings.iter_mut().find(|(key, _)| key == option) else {
            return Err(DetectorError::UnknownOption {
                detector: name.to_string(),
                option: option.clone(),
                known: known.join(", "),
            });
        };
        setting.1 = number(
            option,
            value,
            |v| (1.0..=1_000_000.0).contains(&v) && v.fract() == 0.0,
            "a whole number from 1",
        )?;
    }
    let setting = |key: &str| {
        settings
            .iter()
            .find(|(name, _)| *name == key)
            .map_or(1, |(_, value)| *value as usize)
    };
    Ok(match name {
        "mahalanobis" => Scorer::Mahalanobis(Box::new(Mahalanobis::new(
            values,
            setting("warm_up"),
            setting("horizon"),
            setting("recent"),
            setting("lag"),
        ))),
        _ => Scorer::Change(Box::new(LevelChange::new(
            values,
            setting("recent"),
            setting("before"),
            setting("horizon"),
        ))),
    })
}

/// One detector and its calibration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Single {
    detector: SeriesDetector,
    likelihood: Likelihood,
}

impl Single {
    /// Builds the named detector with `options` (`window=60`, `alpha=0.1`, …, and for the
    /// calibrated ones the calibration's `history` and `recent`).
    pub fn new(name: &str, options: &[(String, String)]) -> Result<Single, DetectorError> {
        let known = options_of(name).ok_or_else(|| DetectorError::Unknown(name.to_string()))?;
        let mut window = 60.0;
        let mut alpha = if matches!(name, "seasonal" | "drift") {
            0.2
        } else {
            0.1
        };
        let mut slots = 96.0;
        let mut days = 2.0;
        let mut history = 500.0;
        let mut recent = 1.0;
        for (option, value) in options {
            let whole = |v: f64| (2.0..=100_000.0).contains(&v) && v.fract() == 0.0;
            match option.as_str() {
                key if !known.contains(&key) => {
                    return Err(DetectorError::UnknownOption {
                        detector: name.to_string(),
                        option: option.clone(),
                        known: known.join(", "),
                    });
                }
                "window" => window = number(option, value, whole, "a whole number from 2")?,
                "alpha" => {
                    alpha = number(
                        option,
                        value,
                        |v| v > 0.0 && v < 1.0,
                        "a number between 0 and 1",
                    )?
                }
                "history" => history = number(option, value, whole, "a whole number from 2")?,
                "slots" => {
                    slots = number(
                        option,
                        value,
                        |v| (1.0..=1440.0).contains(&v) && v.fract() == 0.0,
                        "a whole number from 1 to 1440",
                    )?
                }
                "days" => {
                    days = number(
                        option,
                        value,
                        |v| (1.0..=60.0).contains(&v) && v.fract() == 0.0,
                        "a whole number from 1 to 60",
                    )?
                }
                _ => {
                    recent = number(
                        option,
                        value,
                        |v| v >= 1.0 && v.fract() == 0.0,
                        "a whole number from 1",
                    )?
                }
            }
        }
        let detector = match name {
            "zscore" => SeriesDetector::ZScore(ZScore::new(window as usize)),
            "robust" => SeriesDetector::Robust(Robust::new(window as usize)),
            "seasonal" => {
                SeriesDetector::Seasonal(Seasonal::new(slots as usize, days as u32, alpha))
            }
            "drift" => SeriesDetector::Drift(Drift::new(slots as usize, days as u32, alpha)),
            "flatline" => SeriesDetector::Flatline(Flatline::new()),
            "gap" => SeriesDetector::Gap(Gap::new()),
            _ => SeriesDetector::Ewma(Ewma::new(alpha)),
        };
        Ok(Single {
            detector,
            likelihood: Likelihood::new(history as usize, recent as usize),
        })
    }

    /// The calibrated score of the next reading, or `None` while the detector or its
    /// calibration warms up.
    pub fn score(&mut self, ts: i64, value: f64) -> Option<f64> {
        if !value.is_finite() {
            return None;
        }
        let detector = self.detector.get_mut();
        let raw = detector.update(ts, value)?;
        if detector.calibrated() {
            return Some(raw);
        }
        // Windowed statistics score a machine's noise: their tail is fitted. A time-of-day
        // model's spread changes with the hour (docs/anomalies.md, "Calibration").
        let beyond = match self.detector {
            SeriesDetector::ZScore(_) | SeriesDetector::Ewma(_) | SeriesDetector::Robust(_) => {
                Beyond::FittedTail
            }
            _ => Beyond::HeavyTail,
        };
        self.likelihood.update(raw, beyond)
    }

    /// Readings before the first score.
    pub fn warm_up(&self) -> usize {
        let detector = self.detector.get();
        if detector.calibrated() {
            return detector.warm_up();
        }
        detector.warm_up() + self.likelihood.warm_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_are_chosen_by_name_and_options_are_checked() {
        assert!(Scorer::new("zscore", &[("window".into(), "30".into())]).is_ok());
        assert_eq!(
            Scorer::new("prophet", &[]).err(),
            Some(DetectorError::Unknown("prophet".into()))
        );
        let wrong = Scorer::new("ewma", &[("window".into(), "30".into())])
            .err()
            .unwrap();
        assert_eq!(
            wrong.to_string(),
            "detector `ewma` has no option `window` (it takes: alpha, history, recent)"
        );
        let bad = Scorer::new("ewma", &[("alpha".into(), "2".into())])
            .err()
            .unwrap();
        assert!(bad.to_string().contains("between 0 and 1"));
    }

    #[test]
    fn the_first_score_comes_after_exactly_the_documented_warm_up() {
        // Seasonal and drift warm up in days of each slot, not in readings.
        for name in [
            "zscore",
            "ewma",
            "robust",
            "flatline",
            "gap",
            "hst",
            "mahalanobis",
            "change",
        ] {
            let mut scorer = Scorer::new(name, &[]).unwrap();
            let first = (0..2_000)
                .position(|i: i64| {
                    let value = 21.0 + ((i * 7919) % 13) as f64 * 0.02;
                    scorer.score(i * 60_000_000_000, value).is_some()
                })
                .unwrap();
            assert_eq!(first, scorer.warm_up(), "{name}");
        }
    }

    #[test]
    fn a_spike_scores_near_one_and_calm_readings_do_not() {
        for name in ["zscore", "ewma", "robust"] {
            let mut scorer = Scorer::new(name, &[]).unwrap();
            let mut last = None;
            for i in 0..800 {
                // A daily-ish wobble with a little noise.
                let value = 22.0 + (i as f64 / 20.0).sin() + ((i * 7919) % 13) as f64 * 0.02;
                last = scorer.score(i * 60_000_000_000, value);
            }
            let calm = last.expect("warmed up");
            let spike = scorer.score(800 * 60_000_000_000, 35.0).unwrap();
            assert!(spike > 0.99, "{name}: spike {spike}");
            assert!(calm < 0.95, "{name}: calm {calm}");
        }
    }
    #[test]
    fn a_restored_checkpoint_scores_exactly_as_the_original() {
        let reading = |index: usize| {
            let day = index as f64 * 600.0 / 86_400.0 * std::f64::consts::TAU;
            let spike = if index == 2_600 { 8.0 } else { 0.0 };
            let values: Vec<f64> = (0..3)
                .map(|column| {
                    20.0 + column as f64
                        + 3.0 * day.sin()
                        + ((index * 7919 + column * 31) % 97) as f64 / 97.0
                        + spike
                })
                .collect();
            (index as i64 * 600_000_000_000, values)
        };
        for name in DETECTORS {
            let width = if JOINT.contains(&name) { 3 } else { 1 };
            let mut original = Scorer::for_values(name, &[], width).unwrap();
            for index in 0..2_000 {
                let (ts, values) = reading(index);
                original.score_values(ts, &values[..width]);
            }
            let checkpoint = serde_json::to_string(&original).unwrap();
            let mut restored: Scorer = serde_json::from_str(&checkpoint).unwrap();
            let mut scored = 0;
            for index in 2_000..3_000 {
                let (ts, values) = reading(index);
                let expected = original.score_values(ts, &values[..width]);
                let actual = restored.score_values(ts, &values[..width]);
                assert_eq!(
                    expected.map(f64::to_bits),
                    actual.map(f64::to_bits),
                    "{name} at reading {index}"
                );
                scored += usize::from(expected.is_some());
            }
            assert!(
                scored > 900,
                "{name} scored {scored} of 1000 after the restore"
            );
        }
    }
}
