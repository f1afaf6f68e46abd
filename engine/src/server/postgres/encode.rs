//! Arrow columns and pipeline rows as Postgres values: the type each column is announced with
//! (its OID) and the text or binary form a client asked for.
//!
//! Clients decode by OID: psql prints text, psycopg and Grafana's Go driver turn `int8`,
//! `float8`, `bool` and `timestamptz` into numbers, booleans and times, and request the binary
//! form of types they know. So every column gets the nearest Postgres type, and a column
//! without one (lists, intervals) is sent as text rather than refused.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, DurationNanosecondType, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use vibelux_operators::row::{Datum, Row, format_duration};

/// The Postgres type a column of `data_type` is announced as.
pub fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 | DataType::Decimal256(..) => Type::FLOAT8,
        // Exact, as text (`21.35`).
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            Type::NUMERIC
        }
        DataType::Timestamp(..) => Type::TIMESTAMPTZ,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        _ => Type::TEXT,
    }
}

/// The row description for `schema`, each column in the format the client asked for.
pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let format = format.format_for(index);
            let pg = match pg_type(field.data_type()) {
                // NUMERIC's binary form is PostgreSQL's own base-10000 digits: a client that
                // asks for binary gets the text, announced as text.
                Type::NUMERIC if format == FieldFormat::Binary => Type::TEXT,
                pg => pg,
            };
            FieldInfo::new(field.name().clone(), None, None, pg, format)
        })
        .collect()
}

/// A column converted to the array its Postgres type is encoded from.
enum Column {
    Bool(ArrayRef),
    Int2(ArrayRef),
    Int4(ArrayRef),
    Int8(ArrayRef),
    Float4(ArrayRef),
    Float8(ArrayRef),
    Text(ArrayRef),
    Time(ArrayRef),
    Date(ArrayRef),
    Display(Vec<Option<String>>),
}

fn arrow_error(error: impl std::fmt::Display) -> PgWireError {
    PgWireError::ApiError(format!("encoding a result: {error}").into())
}

fn column(array: &ArrayRef, pg: &Type) -> PgWireResult<Column> {
    let to = |data_type: DataType| cast(array, &data_type).map_err(arrow_error);
    Ok(match *pg {
        Type::BOOL => Column::Bool(array.clone()),
        Type::INT2 => Column::Int2(to(DataType::Int16)?),
        Type::INT4 => Column::Int4(to(DataType::Int32)?),
        Type::INT8 => Column::Int8(to(DataType::Int64)?),
        Type::FLOAT4 => Column::Float4(to(DataType::Float32)?),
        Type::FLOAT8 => Column::Float8(to(DataType::Float64)?),
        Type::TIMESTAMPTZ => Column::Time(to(DataType::Timestamp(TimeUnit::Microsecond, None))?),
        Type::DATE => Column::Date(to(DataType::Date32)?),
        _ if matches!(
            array.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) =>
        {
            Column::Text(to(DataType::Utf8)?)
        }
        // As the engine writes them everywhere, not as Arrow's ISO 8601 durations.
        _ if matches!(array.data_type(), DataType::Duration(_)) => {
            let nanos = to(DataType::Duration(TimeUnit::Nanosecond))?;
            let nanos = nanos.as_primitive::<DurationNanosecondType>();
            Column::Display(
                (0..nanos.len())
                    .map(|row| {
                        nanos
                            .is_valid(row)
                            .then(|| format_duration(nanos.value(row)))
                    })
                    .collect(),
            )
        }
        _ => {
            let options = FormatOptions::default();
            let formatter =
                ArrayFormatter::try_new(array.as_ref(), &options).map_err(arrow_error)?;
            Column::Display(
                (0..array.len())
                    .map(|row| {
                        array
                            .is_valid(row)
                            .then(|| formatter.value(row).to_string())
                    })
                    .collect(),
            )
        }
    })
}

fn micros_to_time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

fn days_to_date(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days.into()))
}

/// Encodes every row of `batch` as described by `fields`.
pub fn batch_rows(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(array, field)| column(array, field.datatype()))
        .collect::<PgWireResult<_>>()?;
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            let valid = |array: &ArrayRef| array.is_valid(row);
            match column {
                Column::Bool(a) => {
                    encoder.encode_field(&valid(a).then(|| a.as_boolean().value(row)))?
                }
                Column::Int2(a) => encoder
                    .encode_field(&valid(a).then(|| a.as_primitive::<Int16Type>().value(row)))?,
                Column::Int4(a) => encoder
                    .encode_field(&valid(a).then(|| a.as_primitive::<Int32Type>().value(row)))?,
                Column::Int8(a) => encoder
                    .encode_field(&valid(a).then(|| a.as_primitive::<Int64Type>().value(row)))?,
                Column::Float4(a) => encoder
                    .encode_field(&valid(a).then(|| a.as_primitive::<Float32Type>().value(row)))?,
                Column::Float8(a) => encoder
                    .encode_field(&valid(a).then(|| a.as_primitive::<Float64Type>().value(row)))?,
                Column::Text(a) => {
                    encoder.encode_field(&valid(a).then(|| a.as_string::<i32>().value(row)))?
                }
                Column::Time(a) => encoder.encode_field(
                    &valid(a)
                        .then(|| a.as_primitive::<TimestampMicrosecondType>().value(row))
                        .and_then(micros_to_time),
                )?,
                Column::Date(a) => encoder.encode_field(
                    &valid(a)
                        .then(|| a.as_primitive::<Date32Type>().value(row))
                        .and_then(days_to_date),
                )?,
                Column::Display(values) => encoder.encode_field(&values[row].as_deref())?,
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// Encodes one pipeline value as the field's type (a live view's columns are the engine's
/// storage types: bool, int8, float8, text, timestamptz).
pub fn encode_datum(encoder: &mut DataRowEncoder, datum: &Datum) -> PgWireResult<()> {
    match datum {
        Datum::Null => encoder.encode_field(&None::<i64>),
        Datum::Boolean(v) => encoder.encode_field(v),
        Datum::Int64(v) => encoder.encode_field(v),
        Datum::Float64(v) => encoder.encode_field(v),
        Datum::Utf8(v) => encoder.encode_field(&v.as_ref()),
        Datum::Timestamp(nanos) => {
            encoder.encode_field(&DateTime::<Utc>::from_timestamp_nanos(*nanos))
        }
        Datum::Duration(nanos) => encoder.encode_field(&format_duration(*nanos)),
        Datum::Date(days) => encoder.encode_field(&days_to_date(*days)),
        Datum::List(_) | Datum::Decimal { .. } => encoder.encode_field(&datum.to_string()),
    }
}

/// Encodes a pipeline row after `leading` values already encoded (a subscription's
/// timestamp and diff).
pub fn encode_row(encoder: &mut DataRowEncoder, row: &Row) -> PgWireResult<DataRow> {
    for datum in row {
        encode_datum(encoder, datum)?;
    }
    Ok(encoder.take_row())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        DurationMicrosecondArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn columns_are_announced_with_their_postgres_types_and_encoded_as_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("zone", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(Float64Array::from(vec![21.5, 0.25])),
                Arc::new(StringArray::from(vec![Some("z1"), Some("z2")])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_780_272_005_000_000_000,
                    0,
                ])),
            ],
        )
        .unwrap();
        let fields = Arc::new(fields(&schema, &Format::UnifiedText));
        let types: Vec<Type> = fields.iter().map(|f| f.datatype().clone()).collect();
        assert_eq!(
            types,
            vec![Type::INT8, Type::FLOAT8, Type::TEXT, Type::TIMESTAMPTZ]
        );
        let rows = batch_rows(&batch, &fields).unwrap();
        assert_eq!(rows.len(), 2);
        let text = String::from_utf8_lossy(&rows[0].data);
        assert!(text.contains("21.5") && text.contains("z1"), "{text:?}");
        assert!(text.contains("2026-06-01 00:00:05"), "{text:?}");
        // A null is length -1.
        assert_eq!(&rows[1].data[..4], &(-1i32).to_be_bytes());
    }

    #[test]
    fn durations_are_text_as_postgresql_writes_intervals() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "held",
            DataType::Duration(TimeUnit::Microsecond),
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(DurationMicrosecondArray::from(vec![
                90_061_500_000,
            ]))],
        )
        .unwrap();
        let fields = Arc::new(fields(&schema, &Format::UnifiedBinary));
        assert_eq!(fields[0].datatype(), &Type::TEXT);
        let rows = batch_rows(&batch, &fields).unwrap();
        assert_eq!(&rows[0].data[4..], b"1 day 01:01:01.500");
        let mut encoder = DataRowEncoder::new(fields);
        encode_datum(&mut encoder, &Datum::Duration(45_000_000_000)).unwrap();
        assert_eq!(&encoder.take_row().data[4..], b"00:00:45");
    }
}
