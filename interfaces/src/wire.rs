//! A compact byte form of datums, for what crosses between the processes of a cluster in bulk.
//!
//! Timely serialises exchanged data with bincode through serde, field by field: a four-byte tag
//! before every datum, an eight-byte length before every text, and one call into the serializer
//! per field — made twice, since timely sizes a message before it writes it. A type that crosses
//! the network once per group of every batch (an aggregate's partial group) instead writes its
//! datums into one byte string with a [`WireWriter`] and hands serde that: one-byte tags,
//! fixed-width numbers (decoded with one load), varint lengths. A [`WireReader`] decodes straight
//! from the received buffer, one allocation per text and one per row.
//!
//! The bytes come from a peer of the same build, but a decoder still meets them as input: every
//! length is checked against what is left, so a truncated or corrupt message is an error that
//! names what was being read, never a panic or an allocation the message cannot back.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::row::{Datum, Row, Update};

/// Lists hold values, not lists (see `storage_type`); a little slack for what a future type
/// might nest, and a bound on the recursion a corrupt message could ask for.
const MOST_NESTED_LISTS: usize = 4;

mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INT64: u8 = 3;
    pub const FLOAT64: u8 = 4;
    pub const UTF8: u8 = 5;
    pub const TIMESTAMP: u8 = 6;
    pub const DURATION: u8 = 7;
    pub const DATE: u8 = 8;
    pub const LIST: u8 = 9;
    pub const DECIMAL: u8 = 10;
}

/// Why bytes from a peer could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("the message ends inside {reading}: {wanted} more bytes needed, {left} left")]
    Truncated {
        reading: &'static str,
        wanted: usize,
        left: usize,
    },
    #[error("unknown {kind} tag {tag}")]
    UnknownTag { kind: &'static str, tag: u8 },
    #[error("a text is not UTF-8")]
    InvalidText,
    #[error("a length does not fit in memory")]
    LengthOverflow,
    #[error("lists nested deeper than {MOST_NESTED_LISTS}")]
    NestedTooDeep,
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
}

/// Appends values to a byte string.
pub struct WireWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> WireWriter<'a> {
    #[inline]
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        WireWriter { out }
    }

    #[inline]
    pub fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    /// A count or length: seven bits per byte, small values in one.
    #[inline]
    pub fn length(&mut self, value: usize) {
        let mut value = value as u64;
        while value >= 0x80 {
            self.out.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.out.push(value as u8);
    }

    #[inline]
    pub fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn i128(&mut self, value: i128) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn f64(&mut self, value: f64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    #[inline]
    pub fn text(&mut self, value: &str) {
        self.length(value.len());
        self.out.extend_from_slice(value.as_bytes());
    }

    #[inline]
    pub fn datum(&mut self, datum: &Datum) {
        match datum {
            Datum::Null => self.u8(tag::NULL),
            Datum::Boolean(false) => self.u8(tag::FALSE),
            Datum::Boolean(true) => self.u8(tag::TRUE),
            Datum::Int64(v) => {
                self.u8(tag::INT64);
                self.i64(*v);
            }
            Datum::Float64(v) => {
                self.u8(tag::FLOAT64);
                self.f64(*v);
            }
            Datum::Utf8(text) => {
                self.u8(tag::UTF8);
                self.text(text);
            }
            Datum::Timestamp(v) => {
                self.u8(tag::TIMESTAMP);
                self.i64(*v);
            }
            Datum::Duration(v) => {
                self.u8(tag::DURATION);
                self.i64(*v);
            }
            Datum::Date(v) => {
                self.u8(tag::DATE);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::List(values) => {
                self.u8(tag::LIST);
                self.datums(values);
            }
            Datum::Decimal { scale, .. } => {
                let (units, _) = datum.as_decimal().expect("a decimal");
                self.u8(tag::DECIMAL);
                self.out.push(*scale as u8);
                self.out.extend_from_slice(&units.to_le_bytes());
            }
        }
    }

    /// A row (or any run of datums) with its length.
    #[inline]
    pub fn datums(&mut self, datums: &[Datum]) {
        self.length(datums.len());
        for datum in datums {
            self.datum(datum);
        }
    }
}

/// Reads values back in the order a [`WireWriter`] wrote them.
pub struct WireReader<'a> {
    bytes: &'a [u8],
    lists_open: usize,
}

impl<'a> WireReader<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        WireReader {
            bytes,
            lists_open: 0,
        }
    }

    /// Fails unless every byte was read: a message that decodes with bytes to spare was written
    /// by a different layout.
    #[inline]
    pub fn finish(self) -> Result<(), WireError> {
        match self.bytes.len() {
            0 => Ok(()),
            left => Err(WireError::TrailingBytes(left)),
        }
    }

    #[inline]
    fn take<const N: usize>(&mut self, reading: &'static str) -> Result<[u8; N], WireError> {
        match self.bytes.split_first_chunk::<N>() {
            Some((taken, rest)) => {
                self.bytes = rest;
                Ok(*taken)
            }
            None => Err(WireError::Truncated {
                reading,
                wanted: N,
                left: self.bytes.len(),
            }),
        }
    }

    #[inline]
    pub fn u8(&mut self, reading: &'static str) -> Result<u8, WireError> {
        Ok(self.take::<1>(reading)?[0])
    }

    #[inline]
    pub fn length(&mut self) -> Result<usize, WireError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8("a length")?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return usize::try_from(value).map_err(|_| WireError::LengthOverflow);
            }
        }
        Err(WireError::LengthOverflow)
    }

    /// A count of items each at least `least_bytes` long: a capacity the rest of the message can
    /// back, so a corrupt count cannot reserve memory the message does not hold.
    #[inline]
    pub fn count(&mut self, least_bytes: usize) -> Result<usize, WireError> {
        let count = self.length()?;
        let wanted = count.saturating_mul(least_bytes.max(1));
        if wanted > self.bytes.len() {
            return Err(WireError::Truncated {
                reading: "a list of items",
                wanted,
                left: self.bytes.len(),
            });
        }
        Ok(count)
    }

    #[inline]
    pub fn i64(&mut self, reading: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.take(reading)?))
    }

    #[inline]
    pub fn i128(&mut self, reading: &'static str) -> Result<i128, WireError> {
        Ok(i128::from_le_bytes(self.take(reading)?))
    }

    #[inline]
    pub fn f64(&mut self, reading: &'static str) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.take(reading)?))
    }

    #[inline]
    fn text_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let length = self.length()?;
        if length > self.bytes.len() {
            return Err(WireError::Truncated {
                reading: "a text",
                wanted: length,
                left: self.bytes.len(),
            });
        }
        let (text, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(text)
    }

    #[inline]
    pub fn text(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.text_bytes()?).map_err(|_| WireError::InvalidText)
    }

    #[inline]
    pub fn datum(&mut self) -> Result<Datum, WireError> {
        Ok(match self.u8("a datum")? {
            tag::NULL => Datum::Null,
            tag::FALSE => Datum::Boolean(false),
            tag::TRUE => Datum::Boolean(true),
            tag::INT64 => Datum::Int64(self.i64("an integer")?),
            tag::FLOAT64 => Datum::Float64(self.f64("a float")?),
            tag::UTF8 => Datum::Utf8(Arc::from(self.text()?)),
            tag::TIMESTAMP => Datum::Timestamp(self.i64("a timestamp")?),
            tag::DURATION => Datum::Duration(self.i64("a duration")?),
            tag::DATE => Datum::Date(i32::from_le_bytes(self.take("a date")?)),
            tag::DECIMAL => {
                let scale = self.u8("a decimal's scale")? as i8;
                Datum::decimal(i128::from_le_bytes(self.take("a decimal")?), scale)
            }
            tag::LIST => {
                if self.lists_open == MOST_NESTED_LISTS {
                    return Err(WireError::NestedTooDeep);
                }
                self.lists_open += 1;
                let values = self.datums();
                self.lists_open -= 1;
                Datum::List(values?.into_boxed_slice())
            }
            tag => return Err(WireError::UnknownTag { kind: "datum", tag }),
        })
    }

    #[inline]
    pub fn datums(&mut self) -> Result<Row, WireError> {
        // Every datum takes at least its tag.
        let count = self.count(1)?;
        let mut row = Vec::with_capacity(count);
        for _ in 0..count {
            row.push(self.datum()?);
        }
        Ok(row)
    }
}

thread_local! {
    /// Where a value is encoded before serde copies it out: kept, so encoding allocates only
    /// while it grows.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serialises what `encode` writes as one byte string.
pub fn serialize_encoded<S: Serializer>(
    serializer: S,
    encode: impl FnOnce(&mut WireWriter),
) -> Result<S::Ok, S::Error> {
    SCRATCH.with_borrow_mut(|bytes| {
        bytes.clear();
        encode(&mut WireWriter::new(bytes));
        serializer.serialize_bytes(bytes)
    })
}

/// Deserialises a byte string [`serialize_encoded`] wrote, decoding it with `decode`, which
/// must read every byte; an error names `what` was being received.
pub fn deserialize_encoded<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    what: &'static str,
    decode: fn(&mut WireReader) -> Result<T, WireError>,
) -> Result<T, D::Error> {
    deserializer.deserialize_bytes(EncodedVisitor {
        what,
        decode,
        decoded: PhantomData,
    })
}

struct EncodedVisitor<T> {
    what: &'static str,
    decode: fn(&mut WireReader) -> Result<T, WireError>,
    decoded: PhantomData<T>,
}

impl<T> Visitor<'_> for EncodedVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "{}'s bytes", self.what)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        let mut input = WireReader::new(bytes);
        (self.decode)(&mut input)
            .and_then(|value| input.finish().map(|()| value))
            .map_err(|error| E::custom(format_args!("{}: {error}", self.what)))
    }
}

/// A row or an update that crosses between processes in the compact form: what a cluster's
/// stream wraps its items in before an exchange that sends whole results across (to a sink's
/// writer, to a live view's publisher). Within a process timely moves items without serialising
/// them; a run alone does not wrap them at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire<T>(pub T);

impl<T> std::borrow::Borrow<T> for Wire<T> {
    fn borrow(&self) -> &T {
        &self.0
    }
}

impl From<Wire<Row>> for Row {
    fn from(Wire(row): Wire<Row>) -> Row {
        row
    }
}

impl From<Wire<Update>> for Update {
    fn from(Wire(update): Wire<Update>) -> Update {
        update
    }
}

impl Serialize for Wire<Row> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_encoded(serializer, |out| out.datums(&self.0))
    }
}

impl<'de> Deserialize<'de> for Wire<Row> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_encoded(deserializer, "a row", |input| input.datums().map(Wire))
    }
}

impl Serialize for Wire<Update> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (row, time, diff) = &self.0;
        serialize_encoded(serializer, |out| {
            out.datums(row);
            out.i64(*time as i64);
            out.i64(*diff);
        })
    }
}

impl<'de> Deserialize<'de> for Wire<Update> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_encoded(deserializer, "an update", |input| {
            let row = input.datums()?;
            let time = input.i64("an update's time")? as u64;
            Ok(Wire((row, time, input.i64("an update's diff")?)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Row {
        vec![
            Datum::Null,
            Datum::Boolean(false),
            Datum::Boolean(true),
            Datum::Int64(i64::MIN),
            Datum::Int64(-1),
            Datum::Float64(f64::NAN),
            Datum::Float64(-0.0),
            Datum::Utf8("".into()),
            Datum::Utf8("zone 3 — north".into()),
            Datum::Timestamp(1_780_272_001_250_000_000),
            Datum::Duration(-5),
            Datum::Date(-1),
            Datum::decimal(-2135, 2),
            Datum::decimal(10_i128.pow(37), 0),
            Datum::List(vec![Datum::Int64(1), Datum::Null, Datum::Utf8("a".into())].into()),
            Datum::List(Vec::new().into()),
        ]
    }

    #[test]
    fn every_kind_of_datum_reads_back_as_written() {
        let row = every_kind();
        let mut bytes = Vec::new();
        WireWriter::new(&mut bytes).datums(&row);
        let mut reader = WireReader::new(&bytes);
        assert_eq!(reader.datums(), Ok(row));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn rows_and_updates_cross_bincode_as_they_were() {
        let update = Wire((every_kind(), u64::MAX, -2));
        let bytes = bincode::serialize(&vec![update.clone(), update.clone()]).expect("serialises");
        let received: Vec<Wire<Update>> = bincode::deserialize(&bytes).expect("deserialises");
        assert_eq!(received, vec![update.clone(), update]);
        let row = Wire(every_kind());
        let bytes = bincode::serialize(&row).expect("serialises");
        assert_eq!(bincode::deserialize::<Wire<Row>>(&bytes).ok(), Some(row));
        // A row's bytes are not an update's.
        let error = bincode::deserialize::<Wire<Update>>(&bytes).expect_err("too short");
        assert!(
            error
                .to_string()
                .starts_with("an update: the message ends inside an update's time"),
            "{error}"
        );
    }

    #[test]
    fn lengths_take_a_byte_per_seven_bits() {
        for (value, width) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)] {
            let mut bytes = Vec::new();
            WireWriter::new(&mut bytes).length(value);
            assert_eq!(bytes.len(), width, "{value}");
            assert_eq!(WireReader::new(&bytes).length(), Ok(value));
        }
        let mut bytes = Vec::new();
        WireWriter::new(&mut bytes).length(usize::MAX);
        assert_eq!(WireReader::new(&bytes).length(), Ok(usize::MAX));
    }

    #[test]
    fn a_text_row_is_smaller_than_bincode_writes_it() {
        let row = vec![
            Datum::Utf8("s0001".into()),
            Datum::Timestamp(1_780_272_000_000_000_000),
            Datum::Timestamp(1_780_272_060_000_000_000),
        ];
        let mut bytes = Vec::new();
        WireWriter::new(&mut bytes).datums(&row);
        let bincode = bincode::serialized_size(&row).expect("a row serialises") as usize;
        assert_eq!(bytes.len(), 1 + (1 + 1 + 5) + 2 * (1 + 8));
        // A length and per datum a tag in eight bytes less, a text's length in seven less.
        assert_eq!(bincode, 8 + (4 + 8 + 5) + 2 * (4 + 8));
    }

    #[test]
    fn every_cut_of_a_message_is_an_error_not_a_panic() {
        let row = every_kind();
        let mut bytes = Vec::new();
        WireWriter::new(&mut bytes).datums(&row);
        for end in 0..bytes.len() {
            assert!(
                WireReader::new(&bytes[..end]).datums().is_err(),
                "cut at {end}"
            );
        }
    }

    #[test]
    fn corrupt_messages_name_what_is_wrong() {
        assert_eq!(
            WireReader::new(&[1, 42]).datums(),
            Err(WireError::UnknownTag {
                kind: "datum",
                tag: 42
            })
        );
        assert_eq!(
            WireReader::new(&[1, tag::UTF8, 2, 0xff, 0xfe]).datums(),
            Err(WireError::InvalidText)
        );
        // A count no message could back reserves nothing.
        let mut bytes = Vec::new();
        WireWriter::new(&mut bytes).length(1 << 40);
        assert!(matches!(
            WireReader::new(&bytes).datums(),
            Err(WireError::Truncated { .. })
        ));
        // Lists within lists, deeper than any type nests them.
        let mut bytes = vec![1];
        bytes.extend(std::iter::repeat_n([tag::LIST, 1], 5).flatten());
        bytes.push(tag::NULL);
        assert_eq!(
            WireReader::new(&bytes).datums(),
            Err(WireError::NestedTooDeep)
        );
        let mut reader = WireReader::new(&[0, 7]);
        assert_eq!(reader.datums(), Ok(Vec::new()));
        assert_eq!(reader.finish(), Err(WireError::TrailingBytes(1)));
    }
}
