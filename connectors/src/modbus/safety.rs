//! Safety limits on PLC writes, declared beside the tag in the tag map.
//!
//! Automation must not be able to hurt a crop, so a write is checked before it reaches the PLC:
//! - **Range** (`min`, `max`, engineering units). A CO₂ setpoint of 5,000 ppm is refused, not
//!   clamped, because a silent change of the value is a surprise too.
//! - **Rate** (`max_writes_per_minute`). A flapping rule cannot wear out a valve.
//! - **Minimum on and off times** (`min_on`, `min_off`, for coils and booleans). A compressor
//!   or a lamp is not cycled faster than it can bear.
//! - **Interlocks** (`interlock = ["exhaust_fan"]`). The write is refused while any named tag
//!   reads true or non-zero, e.g. no CO₂ dosing while the exhaust fans run. The sink reads
//!   those tags from the PLC just before writing.
//!
//! A refused write is never silent. The sink logs it, counts it, and records it in its audit log
//! with the reason.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use super::codec::RawValue;
use super::tags::Tag;

/// What a tag's writes must respect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteLimits {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_writes_per_minute: Option<u32>,
    pub min_on: Option<Duration>,
    pub min_off: Option<Duration>,
    /// Tags that block writes to this one while they read true (non-zero).
    pub interlocks: Vec<String>,
}

impl WriteLimits {
    pub fn is_empty(&self) -> bool {
        *self == WriteLimits::default()
    }
}

/// Recent writes per tag: what rate limits and minimum on/off times are checked against.
#[derive(Debug, Default)]
pub struct WriteHistory {
    tags: HashMap<String, TagHistory>,
}

#[derive(Debug, Default)]
struct TagHistory {
    /// When writes went through, within the last minute.
    recent: VecDeque<Instant>,
    /// The last switched state of an on/off tag, and since when.
    switched: Option<(bool, Instant)>,
}

fn is_on(value: &RawValue) -> Option<bool> {
    value.number().map(|number| number != 0.0)
}

impl WriteHistory {
    /// Whether `value` may be written to `tag` at `now`; the reason when not. Interlocks are
    /// checked by the caller, which reads them from the device.
    pub fn check(&mut self, tag: &Tag, value: &RawValue, now: Instant) -> Result<(), String> {
        let limits = &tag.limits;
        if let Some(number) = value.number() {
            if let Some(min) = limits.min
                && number < min
            {
                return Err(format!("{number} is below the tag's minimum {min}"));
            }
            if let Some(max) = limits.max
                && number > max
            {
                return Err(format!("{number} is above the tag's maximum {max}"));
            }
        }
        let history = self.tags.entry(tag.name.clone()).or_default();
        while history
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            history.recent.pop_front();
        }
        if let Some(most) = limits.max_writes_per_minute
            && history.recent.len() >= most as usize
        {
            return Err(format!("rate limit: {most} writes per minute already made"));
        }
        if let (Some(on), Some((was_on, since))) = (is_on(value), history.switched)
            && on != was_on
        {
            let held = now.duration_since(since);
            let (least, state) = if was_on {
                (limits.min_on, "on")
            } else {
                (limits.min_off, "off")
            };
            if let Some(least) = least
                && held < least
            {
                return Err(format!(
                    "minimum {state} time: {state} for {held:.1?} of the {least:?} it must stay"
                ));
            }
        }
        Ok(())
    }

    /// Records a write that went through.
    pub fn record(&mut self, tag: &Tag, value: &RawValue, now: Instant) {
        self.record_named(&tag.name, is_on(value), Some(now));
    }

    /// Records a write to the tag `name` at `at` (`None`: before this machine booted, too long
    /// ago to be measured by `Instant`), switching it on or off if it is an on/off tag.
    fn record_named(&mut self, name: &str, on: Option<bool>, at: Option<Instant>) {
        let history = self.tags.entry(name.to_string()).or_default();
        let Some(at) = at else {
            // Older than anything a rate or a minimum time looks at: it limits nothing.
            return;
        };
        history.recent.push_back(at);
        if let Some(on) = on
            && history.switched.is_none_or(|(was_on, _)| was_on != on)
        {
            history.switched = Some((on, at));
        }
    }

    /// The writes the audit log at `path` records for `device`, so that a restart does not
    /// reset a rate limit or a minimum on/off time: every `written` (or `shadow`) record counts
    /// as a write made when it was recorded. Only the log's last [`RESTORE_TAIL`] bytes are
    /// read: a log of years is not read at every start, and what a rate or a minimum time looks
    /// at is minutes old.
    pub fn restore(path: &Path, device: &str) -> std::io::Result<WriteHistory> {
        let mut history = WriteHistory::default();
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(history),
            Err(error) => return Err(error),
        };
        let length = file.metadata()?.len();
        let start = length.saturating_sub(RESTORE_TAIL);
        file.seek(SeekFrom::Start(start))?;
        let mut lines = BufReader::new(file).lines();
        if start > 0 {
            // The first line read may be cut: skip it.
            lines.next();
        }
        let (wall_now, now) = (chrono::Utc::now(), Instant::now());
        for line in lines {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&line?) else {
                continue;
            };
            let written = matches!(record["outcome"].as_str(), Some("written" | "shadow"));
            let (Some(tag), Some(at)) = (record["tag"].as_str(), record["at"].as_str()) else {
                continue;
            };
            if !written || record["device"].as_str() != Some(device) {
                continue;
            }
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
                continue;
            };
            let age = (wall_now - at.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default();
            let on = match record["value"].as_str().map(str::trim) {
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(text) => text.parse::<f64>().ok().map(|number| number != 0.0),
                None => None,
            };
            history.record_named(tag, on, now.checked_sub(age));
        }
        Ok(history)
    }
}

/// How much of the end of an audit log [`WriteHistory::restore`] reads.
pub const RESTORE_TAIL: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::tags::TagMap;

    fn tags() -> TagMap {
        TagMap::parse(
            r#"
            [[tag]]
            name = "co2_setpoint"
            register = "holding"
            address = 10
            min = 400
            max = 1500
            max_writes_per_minute = 2

            [[tag]]
            name = "compressor"
            register = "coil"
            address = 1
            min_on = "3m"
            min_off = "5m"
            interlock = ["exhaust_fan"]

            [[tag]]
            name = "exhaust_fan"
            register = "coil"
            address = 2
            "#,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn a_restart_keeps_rate_limits_and_minimum_times_from_the_audit_log() {
        let map = tags();
        let (setpoint, compressor) = (&map.tags[0], &map.tags[1]);
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("room1.audit.jsonl");
        let at = |seconds_ago: i64| {
            (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let line = |seconds_ago: i64, device: &str, tag: &str, value: &str, outcome: &str| {
            format!(
                "{{\"at\":\"{}\",\"device\":\"{device}\",\"tag\":\"{tag}\",\"value\":\"{value}\",\"outcome\":\"{outcome}\"}}\n",
                at(seconds_ago)
            )
        };
        let log = [
            line(3600, "room1", "compressor", "false", "written"),
            line(40, "room1", "co2_setpoint", "800", "written"),
            line(30, "room1", "co2_setpoint", "900", "written"),
            line(20, "room1", "co2_setpoint", "950", "refused"),
            line(20, "room2", "co2_setpoint", "950", "written"),
            line(60, "room1", "compressor", "true", "written"),
        ]
        .concat();
        std::fs::write(&audit, log).unwrap();
        let mut history = WriteHistory::restore(&audit, "room1").unwrap();
        let now = Instant::now();
        assert_eq!(
            history
                .check(setpoint, &RawValue::Float(1000.0), now)
                .unwrap_err(),
            "rate limit: 2 writes per minute already made"
        );
        let off = history.check(compressor, &RawValue::Bool(false), now);
        assert!(
            off.unwrap_err().starts_with("minimum on time"),
            "switched on a minute ago, min_on is 3 minutes"
        );
        // No log yet: nothing to restore.
        let fresh = WriteHistory::restore(&dir.path().join("none.jsonl"), "room1").unwrap();
        assert!(fresh.tags.is_empty());
    }

    #[test]
    fn range_and_rate_are_enforced() {
        let map = tags();
        let setpoint = &map.tags[0];
        let mut history = WriteHistory::default();
        let start = Instant::now();
        let high = history.check(setpoint, &RawValue::Float(5000.0), start);
        assert_eq!(high.unwrap_err(), "5000 is above the tag's maximum 1500");
        for second in 0..2 {
            let at = start + Duration::from_secs(second);
            history
                .check(setpoint, &RawValue::Float(800.0), at)
                .unwrap();
            history.record(setpoint, &RawValue::Float(800.0), at);
        }
        let third = history.check(
            setpoint,
            &RawValue::Float(900.0),
            start + Duration::from_secs(30),
        );
        assert_eq!(
            third.unwrap_err(),
            "rate limit: 2 writes per minute already made"
        );
        // A minute after the first write, one more is allowed.
        let later = start + Duration::from_secs(60);
        history
            .check(setpoint, &RawValue::Float(900.0), later)
            .unwrap();
    }

    #[test]
    fn on_off_tags_keep_their_minimum_times() {
        let map = tags();
        let compressor = &map.tags[1];
        assert_eq!(compressor.limits.interlocks, ["exhaust_fan"]);
        let mut history = WriteHistory::default();
        let start = Instant::now();
        history.record(compressor, &RawValue::Bool(true), start);
        let early = history.check(
            compressor,
            &RawValue::Bool(false),
            start + Duration::from_secs(60),
        );
        assert!(
            early.unwrap_err().starts_with("minimum on time: on for 60"),
            ""
        );
        // Writing "on" again is not a switch.
        history
            .check(
                compressor,
                &RawValue::Bool(true),
                start + Duration::from_secs(60),
            )
            .unwrap();
        history
            .check(
                compressor,
                &RawValue::Bool(false),
                start + Duration::from_secs(180),
            )
            .unwrap();
    }
}
