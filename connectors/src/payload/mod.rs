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
use vibelux_interfaces::metadata::is_json;
use vibelux_operators::row::{Datum, Row, format_timestamp};

mod flat_json;
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
}

impl MessageFormat {
    /// The columns a body fills (the rest null), before the required-column check.
    pub fn decode(&self, layout: &RowLayout, body: &[u8]) -> Result<Row, String> {
        let text = crate::bytes_text::utf8(body)
            .map_err(|problem| format!("the payload is not UTF-8: {problem}"))?;
        match self {
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
        if self.json {
            // The value's text as the device wrote it (a nested path's, re-written compact).
            use serde::Deserialize as _;
            let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
            return Ok(match raw.get() {
                "null" => Datum::Null,
                text => Datum::Utf8(Arc::from(text)),
            });
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
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn layout() -> RowLayout {
        let schema = Schema::new(vec![
            Field::new("sensor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("temp_c", DataType::Float64, true),
        ]);
        RowLayout::new(Arc::new(schema), Some(1))
    }

    #[test]
    fn a_json_column_keeps_the_text_of_any_value_and_csv_cells_must_be_json() {
        use vibelux_interfaces::metadata::{EXTENSION_NAME, JSON_EXTENSION};
        let meta = Field::new("meta", DataType::Utf8, true)
            .with_metadata([(EXTENSION_NAME.to_string(), JSON_EXTENSION.to_string())].into());
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            meta.clone(),
        ]);
        let layout = RowLayout::new(Arc::new(schema), Some(0));
        let meta_of = |line: &str| layout.decode_json(line).map(|(row, _)| row[1].clone());
        let ts = r#""ts":"2026-06-01T00:00:01Z""#;
        for (value, kept) in [
            (
                r#"{"fw": "1.2", "tags": [1, 2]}"#,
                Some(r#"{"fw": "1.2", "tags": [1, 2]}"#),
            ),
            // A string stays a JSON string, quotes and escapes included.
            (r#""plain \"text\"""#, Some(r#""plain \"text\"""#)),
            ("42", Some("42")),
            ("null", None),
        ] {
            let expected = kept.map_or(Datum::Null, |text| Datum::Utf8(text.into()));
            assert_eq!(meta_of(&format!("{{{ts},\"meta\":{value}}}")), Ok(expected));
        }
        assert_eq!(meta_of(&format!("{{{ts}}}")), Ok(Datum::Null));
        // Read from a nested path, the value is written compact.
        let paths = vec![(1, JsonPath::parse("$.device.meta").unwrap())];
        let row = layout
            .decode_json_paths(
                r#"{"ts":"2026-06-01T00:00:01Z","device":{"meta":{"a": [1, 2]}}}"#,
                &paths,
            )
            .unwrap();
        assert_eq!(row[1], Datum::Utf8(r#"{"a":[1,2]}"#.into()));
        assert_eq!(
            parse_text(&meta, " [1, 2] "),
            Ok(Datum::Utf8("[1, 2]".into()))
        );
        let refused = parse_text(&meta, "{fw: 1}").unwrap_err();
        assert!(
            refused.starts_with("expected a JSON document, found \"{fw: 1}\""),
            "{refused}"
        );
    }

    #[test]
    fn fields_in_another_order_than_the_last_object_still_find_their_columns() {
        let layout = layout();
        let lines = [
            r#"{"sensor_id":"s1","ts":"2026-06-01T00:00:01Z","temp_c":1.5}"#,
            r#"{"temp_c":2.5,"sensor_id":"s2","ts":"2026-06-01T00:00:02Z"}"#,
            r#"{"extra":0,"TS":"2026-06-01T00:00:03Z","sensor_id":"s3"}"#,
            r#"{"sensor_id":"s4","ts":"2026-06-01T00:00:04Z","temp_c":4.5}"#,
        ];
        let rows: Vec<Row> = lines
            .iter()
            .map(|line| layout.decode_json(line).unwrap().0)
            .collect();
        let second = 1_780_272_000_000_000_000i64;
        for (index, (sensor, temp)) in [
            ("s1", Some(1.5)),
            ("s2", Some(2.5)),
            ("s3", None),
            ("s4", Some(4.5)),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(rows[index][0], Datum::Utf8(sensor.into()));
            assert_eq!(
                rows[index][1],
                Datum::Timestamp(second + (index as i64 + 1) * 1_000_000_000)
            );
            assert_eq!(rows[index][2], temp.map_or(Datum::Null, Datum::Float64));
        }
    }

    #[test]
    fn a_json_reading_decodes_in_declared_column_order() {
        let (row, ts) = layout()
            .decode_json(r#"{"temp_c": 21.5, "extra": [1], "ts": "2026-06-01T00:00:01Z", "sensor_id": "s1"}"#)
            .unwrap();
        assert_eq!(ts, 1_780_272_001_000_000_000);
        assert_eq!(
            row,
            vec![
                Datum::Utf8("s1".into()),
                Datum::Timestamp(ts),
                Datum::Float64(21.5)
            ]
        );
    }

    #[test]
    fn dates_read_as_iso_days_and_a_wrong_one_names_its_field() {
        let schema = Schema::new(vec![
            Field::new("zone", DataType::Utf8, false),
            Field::new("planted", DataType::Date32, true),
        ]);
        let layout = RowLayout::new(Arc::new(schema), None);
        let (row, _) = layout
            .decode_json(r#"{"zone":"z1","planted":"2026-06-01"}"#)
            .unwrap();
        assert_eq!(row[1], Datum::Date(20_605));
        let error = layout
            .decode_json(r#"{"zone":"z1","planted":"June 1st"}"#)
            .unwrap_err();
        assert!(
            error.contains("field `planted`") && error.contains("YYYY-MM-DD"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let error = layout()
            .decode_json(r#"{"sensor_id":"s1","ts":1780272001000,"temp_c":"warm"}"#)
            .unwrap_err();
        assert!(
            error.contains("field `temp_c`") && error.contains("a number"),
            "{error}"
        );
    }

    #[test]
    fn missing_required_fields_and_absurd_times_are_rejected() {
        let error = layout()
            .decode_json(r#"{"ts":"2026-06-01T00:00:00Z"}"#)
            .unwrap_err();
        assert!(
            error.contains("missing required field `sensor_id`"),
            "{error}"
        );
        let error = layout()
            .decode_json(r#"{"sensor_id":"s","ts":"1970-01-01T00:00:00Z"}"#)
            .unwrap_err();
        assert!(error.contains("outside"), "{error}");
        assert!(layout().decode_json("{\"sensor_id\":\"s\"").is_err());
    }

    #[test]
    fn json_paths_reach_nested_values_and_name_the_path_on_errors() {
        let layout = layout();
        let paths = vec![
            (1, JsonPath::parse("$.meta.time").unwrap()),
            (2, JsonPath::parse("data.values[1]").unwrap()),
        ];
        let row = layout
            .decode_json_paths(
                r#"{"sensor_id":"s1","meta":{"time":"2026-06-01T00:00:01Z"},"data":{"values":[1,21.5]}}"#,
                &paths,
            )
            .unwrap();
        assert_eq!(row[2], Datum::Float64(21.5));
        let (_, ts) = layout.finish(row).unwrap();
        assert_eq!(ts, 1_780_272_001_000_000_000);
        let error = layout
            .decode_json_paths(r#"{"sensor_id":"s1","meta":{"time":"x"}}"#, &paths)
            .unwrap_err();
        assert_eq!(
            error,
            r#"field `ts` (at $.meta.time): expected an ISO 8601 timestamp, found "x""#
        );
        let missing = layout
            .decode_json_paths(r#"{"sensor_id":"s1","data":{}}"#, &paths)
            .and_then(|row| layout.finish(row))
            .unwrap_err();
        assert_eq!(missing, "missing required field `ts`");
        let truncated = layout.decode_json_fields(r#"{"ts":"2026-06-01T00:00:05Z","temp_c":2"#);
        assert_eq!(
            truncated.unwrap_err(),
            "truncated JSON: EOF while parsing an object at line 1 column 39"
        );
        assert!(JsonPath::parse("a[").is_err());
        assert!(JsonPath::parse("$").is_err());
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn csv_cells_reject_nan() {
        let layout = layout();
        let header = [Some(0), Some(1), Some(2)];
        let record = csv::StringRecord::from(vec!["s1", "2026-06-01 00:00:00", "NaN"]);
        let error = layout.decode_csv(&header, &record).unwrap_err();
        assert!(
            error.contains("field `temp_c`") && error.contains("finite"),
            "{error}"
        );
    }
}
