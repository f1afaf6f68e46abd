//! A facility's local clock, for windows that follow it.
//!
//! A grower's day starts at local midnight, and where the clocks change it is 23 hours long in
//! spring and 25 in autumn: no fixed offset from UTC describes it. Windows in a time zone are
//! laid out on the local clock (every `size` from local midnight, moved by the window's offset)
//! and each local boundary is turned into the instant it names. Two local times need a rule:
//!
//! - one that never happens (the hour skipped in spring) names the instant the clocks jump, so a
//!   window starting or ending in the skipped hour starts or ends there, and one lying wholly in
//!   it is empty;
//! - one that happens twice (the hour repeated in autumn) names its first occurrence, so the
//!   window ending then holds the first pass and the next window both passes.
//!
//! Boundaries stay in order either way, so windows never overlap more than their layout says and
//! every instant falls in the windows it should. Times are nanoseconds since the Unix epoch; a
//! "local" time is the same count on the local clock (as if the local clock were UTC).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, Offset, TimeZone as _};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// The furthest any zone's clock has been from UTC, with a margin: the skipped local times of a
/// clock change lie within this of their instants.
const LONGEST_OFFSET_SECONDS: i64 = 26 * 3600;

/// An IANA time zone (`Europe/Amsterdam`), with its history of clock changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(Tz);

impl TimeZone {
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Seconds the local clock is ahead of UTC at `instant`.
    fn offset_seconds(&self, instant_seconds: i64) -> i64 {
        let utc = DateTime::from_timestamp(instant_seconds, 0)
            .unwrap_or_default()
            .naive_utc();
        i64::from(
            self.0
                .offset_from_utc_datetime(&utc)
                .fix()
                .local_minus_utc(),
        )
    }

    /// The local clock's reading at `instant`.
    pub fn local(&self, instant: i64) -> i64 {
        let offset = self.offset_seconds(instant.div_euclid(NANOS_PER_SECOND));
        instant.saturating_add(offset * NANOS_PER_SECOND)
    }

    /// The instant the local clock reads `local` (see the module's rules for the times a clock
    /// change skips or repeats).
    pub fn instant(&self, local: i64) -> i64 {
        let naive = DateTime::from_timestamp_nanos(local).naive_utc();
        match self.0.from_local_datetime(&naive) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                at.timestamp_nanos_opt().unwrap_or(local)
            }
            LocalResult::None => self.clock_jump_after(local),
        }
    }

    /// For a local time the clock skipped: the instant it jumped past it, the first whose local
    /// reading is later. Clocks change on whole seconds, so a search over seconds finds it.
    fn clock_jump_after(&self, local: i64) -> i64 {
        let local_seconds = local.div_euclid(NANOS_PER_SECOND);
        let reads_later = |instant: i64| instant + self.offset_seconds(instant) > local_seconds;
        let (mut before, mut after) = (
            local_seconds - LONGEST_OFFSET_SECONDS,
            local_seconds + LONGEST_OFFSET_SECONDS,
        );
        while after - before > 1 {
            let middle = before + (after - before) / 2;
            match reads_later(middle) {
                true => after = middle,
                false => before = middle,
            }
        }
        after.saturating_mul(NANOS_PER_SECOND)
    }
}

impl FromStr for TimeZone {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        name.parse::<Tz>().map(TimeZone).map_err(|_| {
            format!(
                "unknown time zone '{name}': give an IANA name such as 'Europe/Amsterdam' or \
                 'America/Los_Angeles'"
            )
        })
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kept by name, so a plan stays readable and a zone's rules come from the build that runs it.
impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    /// The same reading on the local clock, written as UTC.
    fn local(text: &str) -> i64 {
        at(&format!("{text}Z"))
    }

    #[test]
    fn local_times_name_their_instants_across_both_clock_changes() {
        let amsterdam: TimeZone = "Europe/Amsterdam".parse().unwrap();
        // Winter: one hour ahead; summer: two.
        assert_eq!(
            amsterdam.instant(local("2026-01-10T00:00:00")),
            at("2026-01-09T23:00:00Z")
        );
        assert_eq!(
            amsterdam.instant(local("2026-07-10T00:00:00")),
            at("2026-07-09T22:00:00Z")
        );
        assert_eq!(
            amsterdam.local(at("2026-07-09T22:00:00Z")),
            local("2026-07-10T00:00:00")
        );
        // 29 March 2026: 02:00 jumps to 03:00; a skipped time names the jump.
        let jump = at("2026-03-29T01:00:00Z");
        assert_eq!(amsterdam.instant(local("2026-03-29T02:00:00")), jump);
        assert_eq!(amsterdam.instant(local("2026-03-29T02:30:00")), jump);
        assert_eq!(amsterdam.instant(local("2026-03-29T03:00:00")), jump);
        // 25 October 2026: 03:00 goes back to 02:00; a repeated time names its first pass.
        assert_eq!(
            amsterdam.instant(local("2026-10-25T02:30:00")),
            at("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            amsterdam.local(at("2026-10-25T01:30:00Z")),
            local("2026-10-25T02:30:00")
        );
    }

    #[test]
    fn a_zone_is_named_and_a_wrong_name_says_what_to_give() {
        let zone: TimeZone = "America/Santiago".parse().unwrap();
        assert_eq!(zone.to_string(), "America/Santiago");
        let json = serde_json::to_string(&zone).unwrap();
        assert_eq!(json, "\"America/Santiago\"");
        assert_eq!(serde_json::from_str::<TimeZone>(&json).unwrap(), zone);
        let error = "Europe/Amsterdma".parse::<TimeZone>().unwrap_err();
        assert!(
            error.contains("unknown time zone 'Europe/Amsterdma'"),
            "{error}"
        );
    }

    #[test]
    fn a_midnight_the_clock_skips_names_the_first_instant_of_the_day() {
        // Santiago moved its clocks from 24:00 to 01:00 on 7 September 2025.
        let santiago: TimeZone = "America/Santiago".parse().unwrap();
        assert_eq!(
            santiago.instant(local("2025-09-07T00:00:00")),
            at("2025-09-07T04:00:00Z")
        );
        assert_eq!(
            santiago.local(at("2025-09-07T04:00:00Z")),
            local("2025-09-07T01:00:00")
        );
    }
}
