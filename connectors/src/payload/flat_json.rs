//! The fast path for the JSON that devices send: one flat object of plain strings, numbers,
//! booleans and nulls.
//!
//! Nearly every reading is such an object, and reading it through serde's visitor (a trait call
//! per token, an escape scan and a `Cow` per key, chrono's general RFC 3339 parser per
//! timestamp) was the largest share of the reference pipeline's time. This scanner knows the
//! columns: it walks the bytes once and reads each value as its column's type, and it reads the
//! one timestamp shape devices write itself.
//!
//! It decides nothing it is unsure of. At anything else (an escape, a nested value, a number
//! out of range or written as `-0`, an unusual timestamp, a malformed line) it gives up, and the
//! general decoder reads the line from its start: values, errors and dead letters are exactly
//! those of that one decoder (the unit tests hold the two to the same answers), only faster.

use datafusion::arrow::datatypes::DataType;
use vibelux_interfaces::calendar::{days_from_civil, days_in_month};
use vibelux_operators::row::{Datum, Row};

use super::shared_text::shared_text;
use super::{RowLayout, parse_date, timestamp_from_millis};

/// Decodes `line` if it is a flat object of plain values; `None` leaves it to the general decoder.
pub(super) fn decode(layout: &RowLayout, line: &str) -> Option<Row> {
    let mut scan = Scanner { text: line, at: 0 };
    let mut row = vec![Datum::Null; layout.schema.fields().len()];
    scan.skip_space();
    scan.expect(b'{')?;
    scan.skip_space();
    if scan.peek()? == b'}' {
        scan.at += 1;
    } else {
        let mut position = 0;
        loop {
            let key = scan.plain_string()?;
            scan.skip_space();
            scan.expect(b':')?;
            scan.skip_space();
            match layout.column_at(position, key) {
                // A JSON column keeps the value's text as written: the general decoder's work.
                Some(column) if layout.is_json(column) => return None,
                Some(column) => {
                    row[column] = scan.value(layout.schema.field(column).data_type())?
                }
                None => scan.skip_value()?,
            }
            position += 1;
            scan.skip_space();
            match scan.next()? {
                b',' => scan.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.skip_space();
    (scan.at == line.len()).then_some(row)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = &self.text.as_bytes()[self.at..];
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// A string without escapes or control characters, as the text between its quotes.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = &self.text.as_bytes()[start..];
        let length = memchr::memchr2(b'"', b'\\', bytes)?;
        if bytes[length] != b'"' || bytes[..length].iter().any(|&byte| byte < 0x20) {
            return None;
        }
        self.at = start + length + 1;
        // Cut at ASCII quotes, so on character boundaries.
        self.text.get(start..start + length)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// A number as JSON's grammar writes it, and whether it is a whole number (no fraction, no
    /// exponent). `-0` is left to the general decoder, which reads it as the float -0.0.
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut whole = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
            whole = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            whole = false;
        }
        let text = &self.text[start..self.at];
        if whole && text.starts_with("-0") {
            return None;
        }
        Some((text, whole))
    }

    /// The value at the scanner as a datum of `data_type`, if the general decoder would read it
    /// so without complaint.
    fn value(&mut self, data_type: &DataType) -> Option<Datum> {
        match self.peek()? {
            b'"' => {
                let text = self.plain_string()?;
                match data_type {
                    DataType::Utf8 => Some(Datum::Utf8(shared_text(text))),
                    DataType::Timestamp(..) => timestamp_nanos(text).map(Datum::Timestamp),
                    DataType::Date32 => parse_date(text).ok().map(Datum::Date),
                    DataType::Decimal128(precision, scale) => decimal(text, *precision, *scale),
                    DataType::Duration(_) => super::parse_interval(text).ok().map(Datum::Duration),
                    _ => None,
                }
            }
            b'n' => self.literal("null").map(|()| Datum::Null),
            b't' if data_type == &DataType::Boolean => {
                self.literal("true").map(|()| Datum::Boolean(true))
            }
            b'f' if data_type == &DataType::Boolean => {
                self.literal("false").map(|()| Datum::Boolean(false))
            }
            b'-' | b'0'..=b'9' => {
                let (text, whole) = self.number()?;
                match data_type {
                    DataType::Float64 if whole => text
                        .parse::<i64>()
                        .ok()
                        .map(|value| Datum::Float64(value as f64)),
                    DataType::Float64 => {
                        let value: f64 = text.parse().ok()?;
                        value.is_finite().then_some(Datum::Float64(value))
                    }
                    DataType::Int64 if whole => text.parse().ok().map(Datum::Int64),
                    DataType::Decimal128(precision, scale) => decimal(text, *precision, *scale),
                    DataType::Timestamp(..) if whole => timestamp_from_millis(text.parse().ok()?)
                        .ok()
                        .map(Datum::Timestamp),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Passes over the value of a field no column reads.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.plain_string().map(drop),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }
}

/// The general decoder's bounds on the UTC time, 1971 to 2200 inclusive, in seconds.
const EARLIEST_SECOND: i64 = days_from_civil(super::EARLIEST_YEAR as i64, 1, 1) * 86_400;
const AFTER_LATEST_SECOND: i64 = days_from_civil(super::LATEST_YEAR as i64 + 1, 1, 1) * 86_400;

/// Nanoseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (no zone is UTC),
/// within the years the general decoder accepts; `None` for any other shape or value.
fn timestamp_nanos(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0u32, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let (year, month, day) = (i64::from(number(0, 4)?), number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &bytes[19..];
    let mut fraction_nanos = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let digits = after_dot
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let value = number(20, 20 + digits)?;
        fraction_nanos = i64::from(value) * 10i64.pow(9 - digits as u32);
        rest = &after_dot[digits..];
    }
    let offset_seconds = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |byte: &u8| byte.is_ascii_digit().then(|| i64::from(byte - b'0'));
            let hours = digit(h1)? * 10 + digit(h2)?;
            let minutes = digit(m1)? * 10 + digit(m2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let second_of_day = i64::from(hour * 3600 + minute * 60 + second);
    let seconds = days_from_civil(year, month, day) * 86_400 + second_of_day - offset_seconds;
    if !(EARLIEST_SECOND..AFTER_LATEST_SECOND).contains(&seconds) {
        return None;
    }
    Some(seconds * 1_000_000_000 + fraction_nanos)
}

/// The exact decimal a number's digits spell; `None` leaves the error to the general decoder.
fn decimal(text: &str, precision: u8, scale: i8) -> Option<Datum> {
    vibelux_interfaces::decimal::parse_decimal(text, precision, scale)
        .ok()
        .map(|units| Datum::decimal(units, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn layout() -> RowLayout {
        let schema = Schema::new(vec![
            Field::new("sensor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("temp_c", DataType::Float64, true),
            Field::new("count", DataType::Int64, true),
            Field::new("on", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
        ]);
        RowLayout::new(Arc::new(schema), Some(1))
    }

    /// What the general decoder alone makes of a line.
    fn general(layout: &RowLayout, line: &str) -> Result<Row, String> {
        layout.decode_json_general(line)
    }

    /// The fast path either declines or agrees with the general decoder, value for value (floats
    /// to the bit), and it takes the lines devices write.
    fn agrees(line: &str, fast_expected: bool) {
        let layout = layout();
        let fast = decode(&layout, line);
        assert_eq!(fast.is_some(), fast_expected, "fast path on {line}");
        if let Some(fast) = fast {
            let general = general(&layout, line).expect("the general decoder reads it too");
            assert_eq!(fast.len(), general.len());
            for (a, b) in fast.iter().zip(&general) {
                match (a, b) {
                    (Datum::Float64(a), Datum::Float64(b)) => {
                        assert_eq!(a.to_bits(), b.to_bits(), "{line}")
                    }
                    _ => assert_eq!(a, b, "{line}"),
                }
            }
        }
    }

    #[test]
    fn the_lines_devices_write_take_the_fast_path_with_the_same_values() {
        for line in [
            r#"{"sensor_id":"s-1","ts":"2026-06-01T06:00:00.250Z","temp_c":21.5,"count":3,"on":true,"day":"2026-06-01"}"#,
            r#" { "sensor_id" : "s-1" , "ts" : "2026-06-01T06:00:00+02:00" , "temp_c" : -0.5e-3 } "#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00","temp_c":21,"extra":"x","n":null,"b":false,"f":1E5}"#,
            r#"{"sensor_id":"s","ts":"2024-02-29T23:59:59.123456789-05:30","temp_c":0.1,"on":false}"#,
            r#"{"sensor_id":"s","ts":1780272000000,"temp_c":0,"count":-7}"#,
            r#"{"sensor_id":"ü €","TS":"1971-01-01T00:00:00Z","temp_c":1.7976931348623157e308}"#,
            r#"{"sensor_id":"s","ts":"2200-12-31T23:59:59.999Z","temp_c":4.9e-324,"count":9223372036854775807}"#,
            "{}",
        ] {
            agrees(line, true);
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_decoder() {
        for line in [
            r#"{"sensor_id":"s\"1","ts":"2026-06-01T06:00:00Z"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","extra":[1,2]}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","extra":{"a":1}}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","temp_c":-0}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","count":-0}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","count":9223372036854775808}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","count":1.5}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","temp_c":1e400}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","temp_c":01}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","temp_c":1.}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","temp_c":"21"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z","on":1}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01 06:00:00Z"}"#,
            r#"{"sensor_id":"s","ts":"2026-02-30T06:00:00Z"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T24:00:00Z"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:60Z"}"#,
            r#"{"sensor_id":"s","ts":"1971-01-01T00:30:00+01:00"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00.1234567891Z"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00z"}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z"} x"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z",}"#,
            r#"{"sensor_id":"s","ts":"2026-06-01T06:00:00Z""#,
            r#"{"sensor_id":"s	tab","ts":"2026-06-01T06:00:00Z"}"#,
            r#"[1]"#,
            "",
        ] {
            agrees(line, false);
        }
    }
}
