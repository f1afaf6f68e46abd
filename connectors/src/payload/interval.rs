//! Lengths of time in input (`INTERVAL` columns): a hold time, a dose's duration, the gap a
//! setpoint allows.
//!
//! Read as the engine writes them (PostgreSQL's interval output: `01:02:03.250`,
//! `2 days 03:00:00`, a sign before the whole), so a sink's output reads back unchanged, or as
//! people write them (`5 minutes`, `1h 30m`, `250ms`).

/// Nanoseconds of an interval written as text.
pub fn parse_interval(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let (negative, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, trimmed),
    };
    let nanos = clock_form(rest)
        .or_else(|| {
            vibelux_interfaces::options::parse_duration(rest)
                .ok()
                .and_then(|duration| i64::try_from(duration.as_nanos()).ok())
        })
        .ok_or_else(|| {
            format!(
                "expected an interval such as '00:05:00', '2 days 03:00:00' or '5 minutes', \
                 found {text:?}"
            )
        })?;
    Ok(if negative { -nanos } else { nanos })
}

/// `[N day[s] ]HH:MM:SS[.fraction]`.
fn clock_form(text: &str) -> Option<i64> {
    const SECOND: i64 = 1_000_000_000;
    let (days, clock) = match text.split_once(' ') {
        Some((count, rest)) => {
            let (unit, clock) = rest.trim_start().split_once(' ')?;
            if !matches!(unit, "day" | "days") {
                return None;
            }
            (count.parse::<i64>().ok()?, clock.trim())
        }
        None => (0, text),
    };
    let mut parts = clock.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours)
        || !digits(minutes)
        || !digits(whole)
        || !(fraction.is_empty() || digits(fraction))
    {
        return None;
    }
    let (minutes, whole): (i64, i64) = (minutes.parse().ok()?, whole.parse().ok()?);
    if minutes >= 60 || whole >= 60 || fraction.len() > 9 {
        return None;
    }
    let fraction_nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    let seconds = days
        .checked_mul(86_400)?
        .checked_add(hours.parse::<i64>().ok()?.checked_mul(3_600)?)?
        .checked_add(minutes * 60 + whole)?;
    seconds.checked_mul(SECOND)?.checked_add(fraction_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibelux_interfaces::row::format_duration;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn what_the_engine_writes_reads_back_the_same() {
        for nanos in [
            0,
            45 * SECOND,
            3_723 * SECOND + 250_000_000,
            -300 * SECOND,
            86_400 * SECOND + 7_200 * SECOND,
            -(3 * 86_400 * SECOND),
        ] {
            assert_eq!(parse_interval(&format_duration(nanos)), Ok(nanos));
        }
    }

    #[test]
    fn intervals_as_people_write_them() {
        assert_eq!(parse_interval("5 minutes"), Ok(300 * SECOND));
        assert_eq!(parse_interval("1h 30m"), Ok(5_400 * SECOND));
        assert_eq!(parse_interval("250ms"), Ok(250_000_000));
        assert_eq!(parse_interval(" 1 day 00:00:01 "), Ok(86_401 * SECOND));
        assert_eq!(parse_interval("00:00:00.5"), Ok(500_000_000));
        for wrong in ["warm", "00:61:00", "1:2", "3 weeks ago", ""] {
            assert!(
                parse_interval(wrong)
                    .unwrap_err()
                    .starts_with("expected an interval such as"),
                "{wrong}"
            );
        }
    }
}
