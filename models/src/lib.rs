//! Anomaly detectors for sensor series: online (one reading at a time), keyed per series by
//! their user, with scores calibrated so that 0.99 means the same for every sensor.
//!
//! A detector ([`detector::Detector`]) turns each reading into a raw score, in its own units:
//! how many deviations from normal. Raw scores are not comparable across sensors or detectors,
//! so [`calibration::Likelihood`] maps each one to the probability that recent behaviour is
//! unusual given the series' own recent raw scores. The detectors:
//! - [`zscore`]: rolling mean and deviation;
//! - [`ewma`]: exponentially weighted;
//! - [`robust`]: median and MAD, which outliers cannot drag;
//! - [`seasonal`]: against what is usual at this time of day (the light schedule);
//! - [`drift`]: a slow, sustained departure from the usual day (CUSUM);
//! - [`flatline`]: a value that stops changing (a stuck sensor);
//! - [`gap`]: readings that stop arriving (a dropout).
//!
//! [`half_space`] (`hst`), [`mahalanobis`] and [`change`] score several values of one place
//! together: their joint density, their distance from the normal operating point, and the
//! moment they change level. The last two score through a tail model of their normal raw
//! scores ([`tail`], peaks over threshold), so that 0.999 means one normal reading in a
//! thousand rather than a rank among recent scores.
//!
//! The last three single-value ones score probabilities directly and skip calibration. `auto` takes the highest
//! score of `seasonal`, `drift`, `flatline` and `gap`.
//!
//! [`evaluation`] measures a detector against labelled data.

pub mod calibration;
pub mod change;
mod day_slots;
pub mod detector;
pub mod drift;
pub mod evaluation;
pub mod ewma;
pub mod flatline;
pub mod gap;
pub mod half_space;
pub mod mahalanobis;
pub mod nab;
pub mod onnx;
pub mod robust;
pub mod seasonal;
pub mod tail;
pub mod zscore;
