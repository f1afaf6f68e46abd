//! `WITH (…)` options of the simulator: the facility's size, pace, start and faults.

use std::path::PathBuf;

use vibelux_interfaces::options::{OptionError, Options, nanos};

use super::{FaultKind, SimulatorConfig, Speed};
use crate::payload::parse_timestamp;

pub const OPTIONS: &[&str] = &[
    "connector",
    "rooms",
    "zones_per_room",
    "sensors_per_zone",
    "seed",
    "interval",
    "speed",
    "start",
    "duration",
    "faults",
    "faults_path",
    "disorder",
    "duplicates",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
];

/// The facility the options describe.
pub fn simulator_config(options: &mut Options) -> Result<SimulatorConfig, OptionError> {
    let mut config = SimulatorConfig::default();
    if let Some(rooms) = options.count("rooms")? {
        config.rooms = rooms;
    }
    if let Some(zones) = options.count("zones_per_room")? {
        config.zones_per_room = zones;
    }
    if let Some(sensors) = options.count("sensors_per_zone")? {
        config.sensors_per_zone = sensors;
    }
    if config.sensor_count() == 0 {
        return Err(OptionError::new(
            options.statement,
            "the simulated facility has no sensors",
        ));
    }
    if let Some(seed) = options.parsed("seed", |text| {
        text.parse::<u64>()
            .map_err(|_| format!("expected a whole number, found {text:?}"))
    })? {
        config.seed = seed;
    }
    if let Some(interval) = options.duration("interval")? {
        if interval.is_zero() {
            return Err(OptionError::new(
                options.statement,
                "option `interval` must be positive",
            ));
        }
        config.interval_nanos = nanos(interval);
    }
    if let Some(speed) = options.parsed("speed", parse_speed)? {
        config.speed = speed;
    }
    config.start_nanos = options.parsed("start", parse_timestamp)?;
    config.duration_nanos = options.duration("duration")?.map(nanos);
    if let Some(faults) = options.parsed("faults", |text| {
        text.split(',')
            .filter(|name| !name.trim().is_empty())
            .map(|name| {
                FaultKind::parse(name).ok_or_else(|| {
                    format!("unknown fault {name:?}; faults are hvac_drift, stuck, spike, dropout")
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })? {
        config.faults = faults;
    }
    config.faults_path = options
        .take("faults_path")
        .map(|(path, _)| PathBuf::from(path));
    if let Some(disorder) = options.duration("disorder")? {
        config.disorder_nanos = nanos(disorder);
    }
    if let Some(fraction) =
        options.parsed("duplicates", |text| match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
            _ => Err(format!(
                "expected a fraction between 0 and 1, found {text:?}"
            )),
        })?
    {
        config.duplicate_fraction = fraction;
    }
    Ok(config)
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.as_str() {
        "realtime" | "real-time" | "1x" => Ok(Speed::Realtime),
        "max" | "fast" => Ok(Speed::Max),
        other => match other.trim_end_matches('x').parse::<f64>() {
            Ok(factor) if factor > 0.0 => Ok(Speed::Factor(factor)),
            _ => Err(format!(
                "expected 'realtime', 'max' or a factor such as '60x', found {text:?}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_accept_factors() {
        assert_eq!(parse_speed("60x").unwrap(), Speed::Factor(60.0));
        assert_eq!(parse_speed("max").unwrap(), Speed::Max);
        assert!(parse_speed("-1").is_err());
    }
}
