//! Days of the proleptic Gregorian calendar as integer arithmetic.
//!
//! Every reading's timestamp is read and every window's bounds are written on the hot path; a
//! general date library parses a format or builds a date object per value, where a day number
//! needs a handful of integer operations (400-year eras of 146,097 days, with years taken to
//! start in March so the leap day ends them). chrono remains the reference the tests hold these
//! to.

/// Days from 1970-01-01 to `year-month-day` (month 1–12, day 1–31; not validated).
pub const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (month as i64, day as i64);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year, month (1–12) and day (1–31) of a day counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The number of days in `month` (1–12) of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Appends a timestamp (nanoseconds since the epoch) as ISO 8601 with milliseconds and no zone,
/// `2026-06-01T06:00:00.250`: the form sinks and query results use.
pub fn push_timestamp(nanos: i64, out: &mut String) {
    let seconds = nanos.div_euclid(1_000_000_000);
    let millis = nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    // An i64 of nanoseconds spans the years 1677 to 2262: always four digits.
    push_digits(year, 4, out);
    out.push('-');
    push_digits(i64::from(month), 2, out);
    out.push('-');
    push_digits(i64::from(day), 2, out);
    out.push('T');
    push_digits(second_of_day / 3_600, 2, out);
    out.push(':');
    push_digits(second_of_day / 60 % 60, 2, out);
    out.push(':');
    push_digits(second_of_day % 60, 2, out);
    out.push('.');
    push_digits(millis, 3, out);
}

/// Appends the last `width` decimal digits of a non-negative `value`, zero-padded.
fn push_digits(value: i64, width: u32, out: &mut String) {
    for place in (0..width).rev() {
        let digit = (value / 10i64.pow(place) % 10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate};

    #[test]
    fn day_numbers_agree_with_chrono_both_ways_over_six_centuries() {
        let mut date = NaiveDate::from_ymd_opt(1660, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2270, 1, 1).unwrap();
        while date < end {
            let days = i64::from(date.to_epoch_days());
            assert_eq!(
                days_from_civil(i64::from(date.year()), date.month(), date.day()),
                days
            );
            assert_eq!(
                civil_from_days(days),
                (i64::from(date.year()), date.month(), date.day())
            );
            assert_eq!(
                days_in_month(i64::from(date.year()), date.month()),
                date.num_days_in_month() as u32
            );
            date = date.succ_opt().unwrap();
        }
    }

    #[test]
    fn timestamps_are_written_as_chrono_formats_them() {
        for nanos in [
            0,
            -1_000_000,
            -1,
            1_780_272_001_250_999_999,
            i64::MIN,
            i64::MAX,
            951_782_400_000_000_000,
        ] {
            let mut text = String::new();
            push_timestamp(nanos, &mut text);
            let expected = chrono::DateTime::from_timestamp_nanos(nanos)
                .naive_utc()
                .format("%Y-%m-%dT%H:%M:%S%.3f")
                .to_string();
            assert_eq!(text, expected, "{nanos}");
        }
    }
}
