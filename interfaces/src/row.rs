//! The row model that flows along dataflow edges.
//!
//! Timely exchanges data between workers by serialising it, and differential-style updates need
//! values that are totally ordered and hashable. Arrow arrays are neither, so the dataflow carries
//! [`Row`]s of a small set of [`Datum`] kinds and converts to Arrow batches only where DataFusion
//! evaluates expressions (see `calc.rs`). Every column type a plan can produce is normalised to one
//! of these storage kinds by [`storage_type`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

/// One value of a row. Floats compare by IEEE total order so rows can be sorted and consolidated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Datum {
    Null,
    Boolean(bool),
    Int64(i64),
    Float64(f64),
    Utf8(Arc<str>),
    /// Nanoseconds since the Unix epoch (UTC when the column declares no zone).
    Timestamp(i64),
    /// A length of time in nanoseconds (a timestamp minus another: how long a reading held).
    Duration(i64),
    /// A calendar day: days since 1970-01-01.
    Date(i32),
    /// A list of values of one kind (`array_agg`'s result). Boxed, so a datum stays as small
    /// as a text's.
    List(Box<[Datum]>),
    /// An exact decimal: units of 10^-`scale`, the `i128` in two halves so that a datum keeps
    /// 8-byte alignment and the size of a text's (see [`Datum::decimal`]).
    Decimal {
        scale: i8,
        high: i64,
        low: u64,
    },
}

impl Datum {
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// `units` × 10^-`scale`.
    pub fn decimal(units: i128, scale: i8) -> Datum {
        Datum::Decimal {
            scale,
            high: (units >> 64) as i64,
            low: units as u64,
        }
    }

    /// A decimal's units and scale.
    pub fn as_decimal(&self) -> Option<(i128, i8)> {
        match self {
            Datum::Decimal { scale, high, low } => {
                Some((((*high as i128) << 64) | *low as i128, *scale))
            }
            _ => None,
        }
    }

    /// The numeric value as a float, for aggregates over numbers of any kind.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Datum::Int64(v) => Some(*v as f64),
            Datum::Float64(v) => Some(*v),
            Datum::Decimal { .. } => {
                let (units, scale) = self.as_decimal()?;
                Some(units as f64 / 10f64.powi(i32::from(scale)))
            }
            _ => None,
        }
    }

    pub fn as_timestamp_nanos(&self) -> Option<i64> {
        match self {
            Datum::Timestamp(v) => Some(*v),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Datum::Null => 0,
            Datum::Boolean(_) => 1,
            Datum::Int64(_) => 2,
            Datum::Float64(_) => 3,
            Datum::Utf8(_) => 4,
            Datum::Timestamp(_) => 5,
            Datum::Duration(_) => 6,
            Datum::Date(_) => 7,
            Datum::List(_) => 8,
            Datum::Decimal { .. } => 9,
        }
    }
}

/// The same answer as `cmp(…) == Equal` (floats equal when their bits are), without ordering:
/// group and join lookups compare keys on every row, and texts shared from one allocation are
/// equal at a glance.
impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Datum::Utf8(a), Datum::Utf8(b)) => Arc::ptr_eq(a, b) || a == b,
            (Datum::Int64(a), Datum::Int64(b))
            | (Datum::Timestamp(a), Datum::Timestamp(b))
            | (Datum::Duration(a), Datum::Duration(b)) => a == b,
            (Datum::Float64(a), Datum::Float64(b)) => a.to_bits() == b.to_bits(),
            _ => self.cmp(other) == Ordering::Equal,
        }
    }
}

impl Eq for Datum {}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Datum {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Boolean(a), Datum::Boolean(b)) => a.cmp(b),
            (Datum::Int64(a), Datum::Int64(b)) => a.cmp(b),
            (Datum::Float64(a), Datum::Float64(b)) => a.total_cmp(b),
            (Datum::Utf8(a), Datum::Utf8(b)) if Arc::ptr_eq(a, b) => Ordering::Equal,
            (Datum::Utf8(a), Datum::Utf8(b)) => a.cmp(b),
            (Datum::Timestamp(a), Datum::Timestamp(b)) => a.cmp(b),
            (Datum::Duration(a), Datum::Duration(b)) => a.cmp(b),
            (Datum::Date(a), Datum::Date(b)) => a.cmp(b),
            (Datum::List(a), Datum::List(b)) => a.cmp(b),
            (Datum::Decimal { .. }, Datum::Decimal { .. }) => compare_decimals(self, other),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Datum {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Datum::Null => {}
            Datum::Boolean(v) => v.hash(state),
            Datum::Int64(v) => v.hash(state),
            Datum::Float64(v) => v.to_bits().hash(state),
            Datum::Utf8(v) => v.hash(state),
            Datum::Timestamp(v) | Datum::Duration(v) => v.hash(state),
            Datum::Date(v) => v.hash(state),
            Datum::List(values) => values.hash(state),
            Datum::Decimal { scale, high, low } => (scale, high, low).hash(state),
        }
    }
}

/// By value; of two equal values at different scales (a column has one), the finer last, so
/// that only identical datums compare equal, as hashing requires.
fn compare_decimals(a: &Datum, b: &Datum) -> Ordering {
    let ((a_units, a_scale), (b_units, b_scale)) = (
        a.as_decimal().expect("a decimal"),
        b.as_decimal().expect("a decimal"),
    );
    if a_scale == b_scale {
        return a_units.cmp(&b_units);
    }
    let finer = a_scale.max(b_scale);
    let by_value = match (
        crate::decimal::rescale(a_units, a_scale, finer),
        crate::decimal::rescale(b_units, b_scale, finer),
    ) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => a
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b.as_f64().unwrap_or(0.0)),
    };
    by_value.then(a_scale.cmp(&b_scale))
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Null => write!(f, "NULL"),
            Datum::Boolean(v) => write!(f, "{v}"),
            Datum::Int64(v) => write!(f, "{v}"),
            Datum::Float64(v) => write!(f, "{v}"),
            Datum::Utf8(v) => write!(f, "{v}"),
            Datum::Timestamp(v) => write!(f, "{}", format_timestamp(*v)),
            Datum::Duration(v) => write!(f, "{}", format_duration(*v)),
            Datum::Date(v) => write!(f, "{}", format_date(*v)),
            Datum::Decimal { .. } => {
                let (units, scale) = self.as_decimal().expect("a decimal");
                write!(f, "{}", crate::decimal::format_decimal(units, scale))
            }
            Datum::List(values) => {
                write!(f, "[")?;
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        write!(f, ", ")?;
                    }
                    match value {
                        Datum::Utf8(text) => write!(f, "{text:?}")?,
                        other => write!(f, "{other}")?,
                    }
                }
                write!(f, "]")
            }
        }
    }
}

/// ISO 8601 with milliseconds, no zone: the form sinks and query results use.
pub fn format_timestamp(nanos: i64) -> String {
    let mut text = String::with_capacity(23);
    crate::calendar::push_timestamp(nanos, &mut text);
    text
}

/// A day as ISO 8601 writes it, `2026-06-01`.
pub fn format_date(days: i32) -> String {
    match chrono::NaiveDate::from_epoch_days(days) {
        Some(date) => date.format("%Y-%m-%d").to_string(),
        None => format!("{days} days after 1970-01-01"),
    }
}

/// A length of time as PostgreSQL writes an interval: `01:02:03`, `00:00:00.250`, `2 days
/// 03:00:00`, `-00:05:00`, milliseconds shown only when there are any.
pub fn format_duration(nanos: i64) -> String {
    const SECOND: u128 = 1_000_000_000;
    let sign = if nanos < 0 { "-" } else { "" };
    let total = u128::from(nanos.unsigned_abs());
    let (days, rest) = (total / (86_400 * SECOND), total % (86_400 * SECOND));
    let seconds = rest / SECOND;
    let millis = rest % SECOND / 1_000_000;
    let clock = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    );
    let fraction = if millis > 0 {
        format!(".{millis:03}")
    } else {
        String::new()
    };
    match days {
        0 => format!("{sign}{clock}{fraction}"),
        1 => format!("{sign}1 day {clock}{fraction}"),
        days => format!("{sign}{days} days {clock}{fraction}"),
    }
}

/// A row: one datum per column of the relation's schema, in schema order.
pub type Row = Vec<Datum>;

/// A change to a relation: the row, the timely time it happens at, and +1 (insert) or -1 (retract).
/// The same triple differential dataflow uses for its collections.
pub type Update = (Row, u64, i64);

/// The storage kind for an Arrow type, or `None` when rows cannot hold it.
///
/// Planning casts every expression to its storage type, so schemas seen by DataFusion and the
/// rows on dataflow edges always agree.
pub fn storage_type(data_type: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match data_type {
        Null => Null,
        Boolean => Boolean,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => Int64,
        // Exact decimals of up to 38 digits; a negative scale (units of hundreds) is rare
        // enough to be a float.
        Decimal32(precision, scale)
        | Decimal64(precision, scale)
        | Decimal128(precision, scale)
            if *scale >= 0 =>
        {
            Decimal128(*precision, *scale)
        }
        UInt64 | Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) => Float64,
        Utf8 | LargeUtf8 | Utf8View => Utf8,
        Timestamp(_, zone) => Timestamp(TimeUnit::Nanosecond, zone.clone()),
        Date32 | Date64 => Date32,
        Duration(_) => Duration(TimeUnit::Nanosecond),
        // Lists of values a row holds, not lists of lists.
        List(item) if !matches!(item.data_type(), List(_)) => List(Arc::new(
            arrow_schema::Field::new("item", storage_type(item.data_type())?, true),
        )),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decimal_keeps_its_units_in_a_datum_the_size_of_a_texts() {
        assert_eq!(std::mem::size_of::<Datum>(), 24);
        for units in [
            0,
            2135,
            -2135,
            i128::from(i64::MAX) * 1000,
            -(10_i128.pow(38) - 1),
        ] {
            assert_eq!(Datum::decimal(units, 2).as_decimal(), Some((units, 2)));
        }
        assert_eq!(Datum::decimal(-50, 2).to_string(), "-0.50");
        assert!(Datum::decimal(-50, 2) < Datum::decimal(1, 2));
        assert!(Datum::decimal(215, 1) > Datum::decimal(2135, 2));
        assert_ne!(Datum::decimal(20, 1), Datum::decimal(200, 2));
        assert_eq!(Datum::decimal(2135, 2).as_f64(), Some(21.35));
    }

    #[test]
    fn timestamps_print_as_iso_with_milliseconds() {
        assert_eq!(
            format_timestamp(1_780_272_001_250_000_000),
            "2026-06-01T00:00:01.250"
        );
        assert_eq!(format_timestamp(-1_000_000), "1969-12-31T23:59:59.999");
    }

    #[test]
    fn dates_print_as_iso_days() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(20_605), "2026-06-01");
        assert_eq!(format_date(-1), "1969-12-31");
    }

    #[test]
    fn durations_print_as_postgresql_prints_intervals() {
        const SECOND: i64 = 1_000_000_000;
        assert_eq!(format_duration(45 * SECOND), "00:00:45");
        assert_eq!(
            format_duration(3_723 * SECOND + 250_000_000),
            "01:02:03.250"
        );
        assert_eq!(format_duration(-300 * SECOND), "-00:05:00");
        assert_eq!(
            format_duration(86_400 * SECOND + 7_200 * SECOND),
            "1 day 02:00:00"
        );
        assert_eq!(format_duration(3 * 86_400 * SECOND), "3 days 00:00:00");
        assert_eq!(format_duration(i64::MIN), "-106751 days 23:47:16.854");
    }

    #[test]
    fn datums_order_totally_even_with_nan() {
        let mut values = [
            Datum::Float64(f64::NAN),
            Datum::Null,
            Datum::Float64(1.0),
            Datum::Int64(5),
        ];
        values.sort();
        assert_eq!(values[0], Datum::Null);
        assert_eq!(values[1], Datum::Int64(5));
        assert_eq!(values[2], Datum::Float64(1.0));
        assert!(
            values[3] == Datum::Float64(f64::NAN),
            "NaN equals itself under total order"
        );
    }

    #[test]
    fn equality_is_what_the_total_order_says() {
        let text: Arc<str> = Arc::from("s1");
        let values = [
            Datum::Null,
            Datum::Int64(0),
            Datum::Int64(1),
            Datum::Timestamp(0),
            Datum::Duration(0),
            Datum::Float64(0.0),
            Datum::Float64(-0.0),
            Datum::Float64(f64::NAN),
            Datum::Utf8(text.clone()),
            Datum::Utf8(text),
            Datum::Utf8(Arc::from("s1")),
            Datum::Utf8(Arc::from("s2")),
            Datum::Date(0),
            Datum::Boolean(false),
        ];
        for a in &values {
            for b in &values {
                assert_eq!(a == b, a.cmp(b) == Ordering::Equal, "{a:?} and {b:?}");
            }
        }
    }
}
