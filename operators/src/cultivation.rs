//! The psychrometrics growers steer by: vapour pressure deficit, dew point, absolute humidity.
//!
//! Growers think in VPD (how hard the air pulls water from the leaf) and dew point (when
//! condensation, and with it botrytis, starts), not in relative humidity. These are the
//! standard formulas with their units fixed:
//! - temperatures in °C;
//! - relative humidity in % (0–100);
//! - pressures in kPa;
//! - absolute humidity in g/m³;
//! - enthalpy in kJ per kg of dry air.
//!
//! Inputs outside what the formulas are valid for give `None` and are counted (see
//! [`out_of_range`]). A greenhouse sensor reporting 140 % RH is broken, not humid, and a NaN
//! must not spread into an average. 0 °C and 0 % are values like any other.

use std::sync::atomic::{AtomicU64, Ordering};

/// How saturation vapour pressure is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SaturationFormula {
    /// Tetens (1930) with Murray's constants, as FAO-56 writes it: the one horticulture uses.
    #[default]
    Tetens,
    /// Buck (1981): closer to the reference tables, especially below 0 °C.
    Buck,
}

impl SaturationFormula {
    pub fn parse(text: &str) -> Option<SaturationFormula> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tetens" => Some(SaturationFormula::Tetens),
            "buck" => Some(SaturationFormula::Buck),
            _ => None,
        }
    }
}

/// Air temperatures the formulas are used for (°C).
const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = -50.0..=80.0;

/// Counts of inputs refused per function, since the process started.
pub struct OutOfRange {
    counts: [AtomicU64; FUNCTIONS.len()],
}

/// The functions whose refusals are counted, in the order of [`out_of_range`]'s counts.
pub const FUNCTIONS: [&str; 7] = [
    "vpd_air",
    "vpd_leaf",
    "vpd_leaf_offset",
    "dew_point",
    "abs_humidity",
    "humidity_deficit",
    "enthalpy",
];

static OUT_OF_RANGE: OutOfRange = OutOfRange {
    counts: [const { AtomicU64::new(0) }; FUNCTIONS.len()],
};

/// Inputs each function refused so far, by function name.
pub fn out_of_range() -> Vec<(&'static str, u64)> {
    FUNCTIONS
        .iter()
        .zip(&OUT_OF_RANGE.counts)
        .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
        .collect()
}

fn refuse(function: &str) -> Option<f64> {
    if let Some(index) = FUNCTIONS.iter().position(|name| *name == function) {
        OUT_OF_RANGE.counts[index].fetch_add(1, Ordering::Relaxed);
    }
    None
}

fn valid_temperature(temp_c: f64) -> bool {
    temp_c.is_finite() && TEMPERATURE_RANGE.contains(&temp_c)
}

fn valid_rh(rh: f64) -> bool {
    rh.is_finite() && (0.0..=100.0).contains(&rh)
}

/// Saturation vapour pressure over water at `temp_c` (kPa).
pub fn saturation_vapour_pressure(temp_c: f64, formula: SaturationFormula) -> f64 {
    match formula {
        SaturationFormula::Tetens => 0.6108 * (17.27 * temp_c / (temp_c + 237.3)).exp(),
        SaturationFormula::Buck => {
            0.61121 * ((18.678 - temp_c / 234.5) * (temp_c / (257.14 + temp_c))).exp()
        }
    }
}

/// Air VPD (kPa): saturation vapour pressure minus actual, at the air's temperature.
pub fn vpd_air(temp_c: f64, rh: f64, formula: SaturationFormula) -> Option<f64> {
    if !valid_temperature(temp_c) || !valid_rh(rh) {
        return refuse("vpd_air");
    }
    Some(saturation_vapour_pressure(temp_c, formula) * (1.0 - rh / 100.0))
}

/// Leaf VPD (kPa): saturation vapour pressure at the leaf's temperature minus the air's actual
/// vapour pressure: what the plant feels.
pub fn vpd_leaf(temp_c: f64, rh: f64, leaf_temp_c: f64) -> Option<f64> {
    if !valid_temperature(temp_c) || !valid_rh(rh) || !valid_temperature(leaf_temp_c) {
        return refuse("vpd_leaf");
    }
    let formula = SaturationFormula::Tetens;
    Some(
        saturation_vapour_pressure(leaf_temp_c, formula)
            - saturation_vapour_pressure(temp_c, formula) * rh / 100.0,
    )
}

/// Leaf VPD with the leaf `offset_c` degrees from the air (−2: a leaf 2 °C cooler).
pub fn vpd_leaf_offset(temp_c: f64, rh: f64, offset_c: f64) -> Option<f64> {
    if !offset_c.is_finite() || !(-20.0..=20.0).contains(&offset_c) {
        return refuse("vpd_leaf_offset");
    }
    vpd_leaf(temp_c, rh, temp_c + offset_c).or_else(|| refuse("vpd_leaf_offset"))
}

/// Dew point (°C): Magnus with the constants of Sonntag (1990), a = 17.62, b = 243.12 °C.
/// Dry air (0 % RH) has no dew point: `None`, without counting it as an error.
pub fn dew_point(temp_c: f64, rh: f64) -> Option<f64> {
    if !valid_temperature(temp_c) || !valid_rh(rh) {
        return refuse("dew_point");
    }
    if rh == 0.0 {
        return None;
    }
    let (a, b) = (17.62, 243.12);
    let gamma = (rh / 100.0).ln() + a * temp_c / (b + temp_c);
    Some(b * gamma / (a - gamma))
}

/// Water vapour per cubic metre of air (g/m³), from the ideal gas law
/// (water's gas constant 461.4 J/(kg·K)).
fn vapour_density(vapour_pressure_kpa: f64, temp_c: f64) -> f64 {
    vapour_pressure_kpa * 1000.0 / (461.4 * (temp_c + 273.15)) * 1000.0
}

/// Absolute humidity (g/m³).
pub fn abs_humidity(temp_c: f64, rh: f64) -> Option<f64> {
    if !valid_temperature(temp_c) || !valid_rh(rh) {
        return refuse("abs_humidity");
    }
    let actual = saturation_vapour_pressure(temp_c, SaturationFormula::Tetens) * rh / 100.0;
    Some(vapour_density(actual, temp_c))
}

/// Humidity deficit (g/m³): how much more water the air could hold before saturating.
pub fn humidity_deficit(temp_c: f64, rh: f64) -> Option<f64> {
    if !valid_temperature(temp_c) || !valid_rh(rh) {
        return refuse("humidity_deficit");
    }
    let deficit =
        saturation_vapour_pressure(temp_c, SaturationFormula::Tetens) * (1.0 - rh / 100.0);
    Some(vapour_density(deficit, temp_c))
}

/// Specific enthalpy of moist air (kJ per kg of dry air) at `pressure_kpa` (sea level:
/// 101.325).
pub fn enthalpy(temp_c: f64, rh: f64, pressure_kpa: f64) -> Option<f64> {
    if !valid_temperature(temp_c)
        || !valid_rh(rh)
        || !pressure_kpa.is_finite()
        || !(50.0..=110.0).contains(&pressure_kpa)
    {
        return refuse("enthalpy");
    }
    let vapour = saturation_vapour_pressure(temp_c, SaturationFormula::Tetens) * rh / 100.0;
    let mixing_ratio = 0.622 * vapour / (pressure_kpa - vapour);
    Some(1.006 * temp_c + mixing_ratio * (2501.0 + 1.86 * temp_c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(value: Option<f64>, expected: f64, places: i32) {
        let value = value.expect("a value");
        let tolerance = 0.5 * 10f64.powi(-places);
        assert!(
            (value - expected).abs() <= tolerance,
            "{value} is not {expected} to {places} places"
        );
    }

    #[test]
    fn golden_values_at_25_degrees_and_60_percent() {
        close(
            Some(saturation_vapour_pressure(25.0, SaturationFormula::Tetens)),
            3.1678,
            4,
        );
        close(vpd_air(25.0, 60.0, SaturationFormula::Tetens), 1.267, 3);
        close(vpd_leaf(25.0, 60.0, 23.0), 0.909, 3);
        close(vpd_leaf_offset(25.0, 60.0, -2.0), 0.909, 3);
        close(dew_point(25.0, 60.0), 16.69, 2);
        close(abs_humidity(25.0, 60.0), 13.82, 2);
        close(humidity_deficit(25.0, 60.0), 9.21, 2);
    }

    #[test]
    fn buck_agrees_with_tetens_where_both_hold() {
        let tetens = vpd_air(25.0, 60.0, SaturationFormula::Tetens).unwrap();
        let buck = vpd_air(25.0, 60.0, SaturationFormula::Buck).unwrap();
        assert!((tetens - buck).abs() < 0.005, "{tetens} vs {buck}");
        close(
            Some(saturation_vapour_pressure(0.0, SaturationFormula::Buck)),
            0.6112,
            4,
        );
    }

    #[test]
    fn zero_is_a_value_and_out_of_range_is_refused_and_counted() {
        close(vpd_air(0.0, 0.0, SaturationFormula::Tetens), 0.6108, 4);
        close(vpd_air(20.0, 100.0, SaturationFormula::Tetens), 0.0, 6);
        assert_eq!(dew_point(20.0, 0.0), None);
        let before = out_of_range()[0].1;
        assert_eq!(vpd_air(20.0, 140.0, SaturationFormula::Tetens), None);
        assert_eq!(vpd_air(f64::NAN, 50.0, SaturationFormula::Tetens), None);
        assert_eq!(vpd_air(120.0, 50.0, SaturationFormula::Tetens), None);
        assert_eq!(out_of_range()[0], ("vpd_air", before + 3));
    }

    #[test]
    fn enthalpy_of_air_at_25_degrees_and_60_percent() {
        // About 55.5 kJ/kg, as a psychrometric chart reads.
        let h = enthalpy(25.0, 60.0, 101.325).unwrap();
        assert!((55.0..56.0).contains(&h), "{h}");
        assert_eq!(enthalpy(25.0, 60.0, 10.0), None);
    }
}
