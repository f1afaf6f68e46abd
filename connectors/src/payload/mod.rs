//! Decoding payloads (JSON objects, CSV records) into rows of a declared schema.
//!
//! Every problem names the field at fault, because the message lands in a dead-letter relation
//! that an operator reads at 3 a.m.: "field `temp_c`: expected a number, found a string" beats
//! "invalid type". Unknown fields are ignored (devices add fields); missing fields are null unless
//! the column is required (`NOT NULL`, or the event-time column).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use vibelux_interfaces::connector::DeclaredSource;
use vibelux_interfaces::decimal::parse_decimal;
use vibelux_interfaces::metadata::is_json;
use vibelux_operators::row::{Datum, Row, format_timestamp};

pub use debezium::Change;
pub use interval::parse_interval;

mod debezium;
mod flat_json;
mod interval;
mod shared_text;

/// Timestamps outside these years are rejected as absurd (a clock reset to 1970, a unit mix-up).
const EARLIEST_YEAR: i32 = 1971;
const LATEST_YEAR: i32 = 2200;

/// How the rows of a source are laid out and which columns must be present.
#[derive(Debug, Clone)]
pub struct RowLayout {
    pub schema: SchemaRef,
    /// The event-time column; `None` for tables, whose rows have no event time.
    pub event_time_column: Option<usize>,
    /// Lower-case column names, in schema order.
    column_names: Vec<String>,
    /// Event times more than this (nanoseconds) after the wall clock are refused.
    max_future_nanos: Option<i64>,
    /// The clock plus `max_future_nanos`, as last read: rows before it (nearly all) need no
    /// look at the clock, which is read again only when a row is beyond it.
    future_limit: Arc<AtomicI64>,
    /// The column each field position of the last object named (`usize::MAX`: none). A device
    /// writes its fields in one order, so one comparison usually finds a field's column.
    field_columns: Arc<[AtomicUsize]>,
    /// Which columns are `JSON`: they keep the text of whatever JSON value their field holds.
    json_columns: Arc<[bool]>,
}

impl RowLayout {
    pub fn new(schema: SchemaRef, event_time_column: Option<usize>) -> Self {
        let column_names = schema
            .fields()
            .iter()
            .map(|field| field.name().to_ascii_lowercase())
            .collect();
        let json_columns = schema.fields().iter().map(|field| is_json(field)).collect();
        RowLayout {
            schema,
            event_time_column,
            column_names,
            max_future_nanos: None,
            future_limit: Arc::new(AtomicI64::new(i64::MIN)),
            field_columns: (0..FIELD_POSITIONS)
                .map(|_| AtomicUsize::new(usize::MAX))
                .collect(),
            json_columns,
        }
    }

    /// Whether a column is `JSON`.
    fn is_json(&self, column: usize) -> bool {
        self.json_columns[column]
    }

    /// The column of the field at `position` named `name`: the one found at that position
    /// last time if the name still matches, otherwise looked up (and remembered).
    fn column_at(&self, position: usize, name: &str) -> Option<usize> {
        let Some(remembered) = self.field_columns.get(position) else {
            return self.column_index(name);
        };
        let column = remembered.load(Ordering::Relaxed);
        if self
            .column_names
            .get(column)
            .is_some_and(|column| column == name)
        {
            return Some(column);
        }
        let found = self.column_index(name);
        remembered.store(found.unwrap_or(usize::MAX), Ordering::Relaxed);
        found
    }

    /// The layout of a declared source or table, with its bound on future event times.
    pub fn declared(source: &DeclaredSource) -> Self {
        RowLayout {
            max_future_nanos: source.max_future_nanos,
            ..RowLayout::new(source.schema.clone(), source.event_time)
        }
    }

    /// The column a field name maps to (case-insensitive). A scan beats hashing at the handful
    /// of columns a source has, and this runs for every field of every reading.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.column_names
            .iter()
            .position(|column| column == name)
            .or_else(|| {
                self.column_names
                    .iter()
                    .position(|column| column.eq_ignore_ascii_case(name))
            })
    }

    fn is_required(&self, column: usize) -> bool {
        Some(column) == self.event_time_column || !self.schema.field(column).is_nullable()
    }

    /// Checks required columns and absurd values once all fields are read.
    pub fn finish(&self, row: Row) -> Result<(Row, i64), String> {
        for (index, datum) in row.iter().enumerate() {
            if datum.is_null() && self.is_required(index) {
                return Err(format!(
                    "missing required field `{}`",
                    self.schema.field(index).name()
                ));
            }
        }
        let event_time = match self.event_time_column {
            None => 0,
            Some(column) => row[column]
                .as_timestamp_nanos()
                .ok_or_else(|| "event time is not a timestamp".to_string())?,
        };
        if let Some(bound) = self.max_future_nanos
            && event_time > self.future_limit.load(Ordering::Relaxed)
        {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            let limit = now.saturating_add(bound);
            self.future_limit.store(limit, Ordering::Relaxed);
            if event_time > limit {
                return Err(format!(
                    "event time {} is more than {} ahead of the clock (max_future); is the device's clock wrong?",
                    format_timestamp(event_time),
                    humantime::format_duration(std::time::Duration::from_nanos(bound as u64))
                ));
            }
        }
        Ok((row, event_time))
    }

    /// Decodes one JSON object into a row and its event time (nanoseconds).
    pub fn decode_json(&self, line: &str) -> Result<(Row, i64), String> {
        self.decode_json_fields(line)
            .and_then(|row| self.finish(row))
    }

    /// Decodes the top-level fields of one JSON object into a row, without checking required
    /// columns (a source may fill more columns, e.g. from the MQTT topic, then calls
    /// [`RowLayout::finish`]).
    pub fn decode_json_fields(&self, line: &str) -> Result<Row, String> {
        match flat_json::decode(self, line) {
            Some(row) => Ok(row),
            None => self.decode_json_general(line),
        }
    }

    /// The general decoder alone, which reads every JSON text and words every error users
    /// read; [`RowLayout::decode_json_fields`] tries a faster path first. Public so the fuzzer
    /// can hold the two to the same answers.
    pub fn decode_json_general(&self, line: &str) -> Result<Row, String> {
        let mut deserializer = serde_json::Deserializer::from_str(line);
        let row = JsonRowSeed { layout: self }
            .deserialize(&mut deserializer)
            .map_err(|error| {
                use serde_json::error::Category;
                match error.classify() {
                    Category::Syntax => format!("malformed JSON: {error}"),
                    Category::Eof => format!("truncated JSON: {error}"),
                    Category::Data | Category::Io => error.to_string(),
                }
            })?;
        deserializer
            .end()
            .map_err(|error| format!("trailing characters after the object: {error}"))?;
        Ok(row)
    }

    /// Decodes one JSON document whose values sit at `paths` (column → path) rather than at
    /// the top level; columns without a path are read from top-level fields of the same name.
    /// A path that leads nowhere gives null (then the required-column check applies).
    pub fn decode_json_paths(
        &self,
        text: &str,
        paths: &[(usize, JsonPath)],
    ) -> Result<Row, String> {
        let document: serde_json::Value = serde_json::from_str(text).map_err(|error| {
            if error.is_eof() {
                format!("truncated JSON: {error}")
            } else {
                format!("malformed JSON: {error}")
            }
        })?;
        let mut row = vec![Datum::Null; self.schema.fields().len()];
        if let serde_json::Value::Object(fields) = &document {
            for (key, value) in fields {
                if let Some(column) = self.column_index(key)
                    && !paths.iter().any(|(with_path, _)| *with_path == column)
                {
                    row[column] = self.json_datum(column, value, key)?;
                }
            }
        }
        for (column, path) in paths {
            if let Some(value) = path.find(&document) {
                row[*column] = self.json_datum(*column, value, &path.text)?;
            }
        }
        Ok(row)
    }

    fn json_datum(
        &self,
        column: usize,
        value: &serde_json::Value,
        at: &str,
    ) -> Result<Datum, String> {
        let field = self.schema.field(column);
        JsonValueSeed {
            data_type: field.data_type(),
            json: self.is_json(column),
        }
        .deserialize(value)
        .map_err(|error| {
            if at == field.name() {
                format!("field `{at}`: {error}")
            } else {
                format!("field `{}` (at {at}): {error}", field.name())
            }
        })
    }
}

impl RowLayout {
    /// Decodes one CSV record whose fields are named by `header` (header position → column).
    pub fn decode_csv(
        &self,
        header: &[Option<usize>],
        record: &csv::StringRecord,
    ) -> Result<(Row, i64), String> {
        let mut row = vec![Datum::Null; self.schema.fields().len()];
        for (position, text) in record.iter().enumerate() {
            let Some(Some(column)) = header.get(position) else {
                continue;
            };
            if text.is_empty() {
                continue;
            }
            let field = self.schema.field(*column);
            row[*column] = parse_text(field, text)
                .map_err(|problem| format!("field `{}`: {problem}", field.name()))?;
        }
        self.finish(row)
    }
}

/// How a message body (MQTT, Kafka) becomes columns.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageFormat {
    /// A JSON object; columns listed in `paths` are read from nested places, the rest from
    /// top-level fields of the same name.
    Json { paths: Vec<(usize, JsonPath)> },
    /// The body is one bare value (`21.5`) for this column.
    Raw { column: usize },
    /// A Debezium change event, for tables: an upsert or a deletion.
    DebeziumJson,
}

impl MessageFormat {
    /// What a body does: the columns it fills (the rest null), before the required-column
    /// check, as an upsert — or a deletion, for formats that carry them.
    pub fn decode_change(&self, layout: &RowLayout, body: &[u8]) -> Result<Change, String> {
        match self {
            MessageFormat::DebeziumJson => layout.decode_debezium(body_text(body)?),
            _ => self.decode(layout, body).map(Change::Upsert),
        }
    }

    /// The columns a body fills (the rest null), before the required-column check; a
    /// deletion is an error here, for sources that only append.
    pub fn decode(&self, layout: &RowLayout, body: &[u8]) -> Result<Row, String> {
        let text = body_text(body)?;
        match self {
            MessageFormat::DebeziumJson => match layout.decode_debezium(text)? {
                Change::Upsert(row) => Ok(row),
                Change::Delete(_) => Err("a deletion, which only a table reads".to_string()),
            },
            MessageFormat::Json { paths } if paths.is_empty() => layout.decode_json_fields(text),
            MessageFormat::Json { paths } => layout.decode_json_paths(text, paths),
            MessageFormat::Raw { column } => {
                let mut row = vec![Datum::Null; layout.schema.fields().len()];
                let field = layout.schema.field(*column);
                row[*column] = parse_text(field, text)
                    .map_err(|problem| format!("payload for `{}`: {problem}", field.name()))?;
                Ok(row)
            }
        }
    }
}

fn body_text(body: &[u8]) -> Result<&str, String> {
    crate::bytes_text::utf8(body).map_err(|problem| format!("the payload is not UTF-8: {problem}"))
}

/// Where a value sits in a nested JSON document: `$.data.temp`, `readings[0].value`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    /// As written, for messages.
    pub text: String,
    steps: Vec<PathStep>,
}

#[derive(Debug, Clone, PartialEq)]
enum PathStep {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses a dotted path with optional `$.` prefix and `[n]` array indices.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("$.")
            .or_else(|| trimmed.strip_prefix('$'))
            .unwrap_or(trimmed);
        let mut steps = Vec::new();
        for part in body.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(at) => (&part[..at], &part[at..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                steps.push(PathStep::Key(key.to_string()));
            } else if rest.is_empty() {
                return Err(format!("empty step in JSON path {text:?}"));
            }
            while let Some(open) = rest.strip_prefix('[') {
                let close = open
                    .find(']')
                    .ok_or_else(|| format!("unclosed `[` in JSON path {text:?}"))?;
                let index = open[..close]
                    .trim()
                    .parse()
                    .map_err(|_| format!("expected an array index in JSON path {text:?}"))?;
                steps.push(PathStep::Index(index));
                rest = &open[close + 1..];
            }
            if !rest.is_empty() {
                return Err(format!("unexpected {rest:?} in JSON path {text:?}"));
            }
        }
        if steps.is_empty() {
            return Err(format!("JSON path {text:?} names no field"));
        }
        Ok(JsonPath {
            text: trimmed.to_string(),
            steps,
        })
    }

    fn find<'a>(&self, document: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.steps
            .iter()
            .try_fold(document, |value, step| match step {
                PathStep::Key(key) => value.get(key),
                PathStep::Index(index) => value.get(index),
            })
    }
}

/// Parses a textual value (CSV cell, topic level, raw payload) as `field`'s type.
pub fn parse_text(field: &Field, text: &str) -> Result<Datum, String> {
    let text = text.trim();
    if is_json(field) {
        return serde_json::from_str::<IgnoredAny>(text)
            .map(|_| Datum::Utf8(Arc::from(text)))
            .map_err(|error| format!("expected a JSON document, found {text:?}: {error}"));
    }
    match field.data_type() {
        DataType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Ok(Datum::Boolean(true)),
            "false" | "f" | "0" => Ok(Datum::Boolean(false)),
            _ => Err(format!("expected true or false, found {text:?}")),
        },
        DataType::Int64 => text
            .parse()
            .map(Datum::Int64)
            .map_err(|_| format!("expected an integer, found {text:?}")),
        DataType::Float64 => {
            let value: f64 = text
                .parse()
                .map_err(|_| format!("expected a number, found {text:?}"))?;
            finite(value)
        }
        DataType::Utf8 => Ok(Datum::Utf8(Arc::from(text))),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => parse_timestamp(text).map(Datum::Timestamp),
        DataType::Date32 => parse_date(text).map(Datum::Date),
        DataType::Decimal128(precision, scale) => {
            parse_decimal(text, *precision, *scale).map(|units| Datum::decimal(units, *scale))
        }
        DataType::Duration(TimeUnit::Nanosecond) => parse_interval(text).map(Datum::Duration),
        other => Err(format!("columns of type {other} cannot be read from text")),
    }
}

/// A day written as ISO 8601 does, `2026-06-01`, as days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i32, String> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(|date| date.to_epoch_days())
        .map_err(|_| format!("expected a date as YYYY-MM-DD, found {text:?}"))
}

fn finite(value: f64) -> Result<Datum, String> {
    if value.is_finite() {
        Ok(Datum::Float64(value))
    } else {
        Err(format!("expected a finite number, found {value}"))
    }
}

/// Parses RFC 3339 / ISO 8601 (`2026-06-01T06:00:00Z`, `2026-06-01 06:00:00.250`) as nanoseconds.
/// A timestamp without a zone is read as UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.naive_utc())
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .map_err(|_| format!("expected an ISO 8601 timestamp, found {text:?}"))?;
    check_year(parsed)
}

/// Epoch milliseconds, the other form devices send timestamps in.
fn timestamp_from_millis(millis: i64) -> Result<i64, String> {
    let parsed = chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| format!("timestamp {millis} ms is out of range"))?;
    check_year(parsed.naive_utc())
}

fn check_year(time: chrono::NaiveDateTime) -> Result<i64, String> {
    use chrono::Datelike;
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&time.year()) {
        return Err(format!(
            "timestamp {time} is outside {EARLIEST_YEAR}–{LATEST_YEAR}; is the device clock or unit wrong?"
        ));
    }
    time.and_utc()
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("timestamp {time} is out of range"))
}

/// How many field positions of an object remember their column.
const FIELD_POSITIONS: usize = 64;

struct JsonRowSeed<'a> {
    layout: &'a RowLayout,
}

impl<'de> DeserializeSeed<'de> for JsonRowSeed<'_> {
    type Value = Row;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Row, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for JsonRowSeed<'_> {
    type Value = Row;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut row = vec![Datum::Null; self.layout.schema.fields().len()];
        let mut position = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let column = self.layout.column_at(position, &key);
            position += 1;
            match column {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(column) => {
                    let data_type = self.layout.schema.field(column).data_type();
                    let json = self.layout.is_json(column);
                    row[column] = map
                        .next_value_seed(JsonValueSeed { data_type, json })
                        .map_err(|error| A::Error::custom(format!("field `{key}`: {error}")))?;
                }
            }
        }
        Ok(row)
    }
}

/// Reads one JSON value as a datum of `data_type`, or (`json`) as the text of any JSON value.
struct JsonValueSeed<'a> {
    data_type: &'a DataType,
    json: bool,
}

impl<'de> DeserializeSeed<'de> for JsonValueSeed<'_> {
    type Value = Datum;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Datum, D::Error> {
        use serde::Deserialize as _;
        if self.json {
            // The value's text as the device wrote it (a nested path's, re-written compact).
            let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
            return Ok(match raw.get() {
                "null" => Datum::Null,
                text => Datum::Utf8(Arc::from(text)),
            });
        }
        if let DataType::Decimal128(precision, scale) = self.data_type {
            // The number's digits as written, never through a float; or a string of them.
            let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
            let text = match raw.get() {
                "null" => return Ok(Datum::Null),
                quoted if quoted.starts_with('"') => {
                    serde_json::from_str::<String>(quoted).map_err(D::Error::custom)?
                }
                number => number.to_string(),
            };
            return parse_decimal(&text, *precision, *scale)
                .map(|units| Datum::decimal(units, *scale))
                .map_err(D::Error::custom);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonValueSeed<'_> {
    type Value = Datum;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self.data_type {
            DataType::Boolean => formatter.write_str("true or false"),
            DataType::Int64 => formatter.write_str("an integer"),
            DataType::Float64 => formatter.write_str("a number"),
            DataType::Utf8 => formatter.write_str("a string"),
            DataType::Timestamp(..) => {
                formatter.write_str("an ISO 8601 string or epoch milliseconds")
            }
            DataType::Date32 => formatter.write_str("a date as YYYY-MM-DD"),
            DataType::Duration(_) => formatter.write_str("an interval as text ('00:05:00')"),
            DataType::Decimal128(..) => formatter.write_str("a decimal number"),
            other => write!(formatter, "a value of type {other}"),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Datum, E> {
        Ok(Datum::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Datum, E> {
        match self.data_type {
            DataType::Boolean => Ok(Datum::Boolean(value)),
            _ => Err(E::invalid_type(serde::de::Unexpected::Bool(value), &self)),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Datum, E> {
        match self.data_type {
            DataType::Int64 => Ok(Datum::Int64(value)),
            DataType::Float64 => Ok(Datum::Float64(value as f64)),
            DataType::Timestamp(..) => timestamp_from_millis(value)
                .map(Datum::Timestamp)
                .map_err(E::custom),
            _ => Err(E::invalid_type(serde::de::Unexpected::Signed(value), &self)),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Datum, E> {
        match i64::try_from(value) {
            Ok(value) => self.visit_i64(value),
            Err(_) => Err(E::invalid_value(
                serde::de::Unexpected::Unsigned(value),
                &self,
            )),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Datum, E> {
        match self.data_type {
            DataType::Float64 => finite(value).map_err(E::custom),
            _ => Err(E::invalid_type(serde::de::Unexpected::Float(value), &self)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Datum, E> {
        match self.data_type {
            DataType::Utf8 => Ok(Datum::Utf8(Arc::from(value))),
            DataType::Timestamp(..) => parse_timestamp(value)
                .map(Datum::Timestamp)
                .map_err(E::custom),
            DataType::Date32 => parse_date(value).map(Datum::Date).map_err(E::custom),
            DataType::Duration(TimeUnit::Nanosecond) => parse_interval(value)
                .map(Datum::Duration)
                .map_err(E::custom),
            _ => Err(E::invalid_type(serde::de::Unexpected::Str(value), &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Datum, A::Error> {
        Err(A::Error::invalid_type(serde::de::Unexpected::Map, &self))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _seq: A) -> Result<Datum, A::Error> {
        Err(A::Error::invalid_type(serde::de::Unexpected::Seq, &self))
    }
}

#[cfg(test)]
mod tests;
