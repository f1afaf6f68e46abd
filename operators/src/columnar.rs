//! Conversion between rows and Arrow record batches.
//!
//! Expressions are evaluated by DataFusion on Arrow arrays, a batch at a time; rows cross into
//! columns here and back. Only the storage kinds of [`crate::row::storage_type`] occur.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Date32Builder, Decimal128Array,
    Decimal128Builder, DurationNanosecondArray, DurationNanosecondBuilder, Float64Array,
    Float64Builder, Int64Array, Int64Builder, ListArray, NullArray, RecordBatch,
    RecordBatchOptions, StringArray, StringBuilder, TimestampMicrosecondBuilder,
    TimestampNanosecondArray, TimestampNanosecondBuilder, new_null_array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::row::{Datum, Row, storage_type};

/// Builds a record batch with `schema` from the columns of `rows` (rows must match the schema).
pub fn rows_to_batch<'a>(
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a Row> + Clone,
    row_count: usize,
) -> Result<RecordBatch, ArrowError> {
    rows_to_batch_columns(schema, rows, row_count, None)
}

/// Like [`rows_to_batch`], but only the columns marked in `needed` are filled; the others are all
/// null (cheap), for expressions that read a few columns of wide rows.
pub fn rows_to_batch_columns<'a>(
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a Row> + Clone,
    row_count: usize,
    needed: Option<&[bool]>,
) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        if needed.is_some_and(|needed| !needed[index]) {
            columns.push(new_null_array(field.data_type(), row_count));
            continue;
        }
        let values = rows.clone().map(|row| &row[index]);
        let declared = field.data_type();
        let storage = storage_type(declared).ok_or_else(|| {
            ArrowError::NotYetImplemented(format!(
                "column type {declared} cannot be carried in rows"
            ))
        })?;
        let column = column_from_datums(&storage, values, row_count)?;
        columns.push(if &storage == declared {
            column
        } else {
            cast(&column, declared)?
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(row_count));
    // A column left out is all nulls, which a field declared NOT NULL refuses.
    let left_out_not_null = needed.is_some_and(|needed| {
        schema
            .fields()
            .iter()
            .zip(needed)
            .any(|(field, needed)| !needed && !field.is_nullable())
    });
    if left_out_not_null {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|field| field.as_ref().clone().with_nullable(true))
            .collect();
        let nullable = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        return RecordBatch::try_new_with_options(nullable, columns, &options);
    }
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
}

fn column_from_datums<'a>(
    data_type: &DataType,
    values: impl Iterator<Item = &'a Datum>,
    row_count: usize,
) -> Result<ArrayRef, ArrowError> {
    let mismatch = |datum: &Datum| {
        ArrowError::InvalidArgumentError(format!("value {datum:?} in a column of type {data_type}"))
    };
    Ok(match data_type {
        DataType::Null => Arc::new(NullArray::new(row_count)),
        DataType::Boolean => {
            let mut builder = BooleanBuilder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Boolean(v) => builder.append_value(*v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Int64 => {
            let mut builder = Int64Builder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Int64(v) => builder.append_value(*v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Float64 => {
            let mut builder = Float64Builder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Float64(v) => builder.append_value(*v),
                    Datum::Int64(v) => builder.append_value(*v as f64),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Utf8 => {
            let mut builder = StringBuilder::with_capacity(row_count, row_count * 8);
            for datum in values {
                match datum {
                    Datum::Utf8(v) => builder.append_value(v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, zone) => {
            let mut builder = TimestampNanosecondBuilder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Timestamp(v) => builder.append_value(*v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish().with_timezone_opt(zone.clone()))
        }
        DataType::Timestamp(TimeUnit::Microsecond, zone) => {
            let mut builder = TimestampMicrosecondBuilder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Timestamp(v) => builder.append_value(v.div_euclid(1_000)),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish().with_timezone_opt(zone.clone()))
        }
        DataType::List(item) => {
            let mut offsets: Vec<i32> = Vec::with_capacity(row_count + 1);
            offsets.push(0);
            let mut valid = Vec::with_capacity(row_count);
            let mut items: Vec<&Datum> = Vec::new();
            for datum in values {
                match datum {
                    Datum::List(values) => items.extend(values.iter()),
                    Datum::Null => {}
                    other => return Err(mismatch(other)),
                }
                valid.push(!datum.is_null());
                offsets.push(i32::try_from(items.len()).map_err(|_| {
                    ArrowError::ComputeError("a batch of lists holds over 2^31 values".into())
                })?);
            }
            let child = column_from_datums(item.data_type(), items.iter().copied(), items.len())?;
            Arc::new(ListArray::try_new(
                item.clone(),
                OffsetBuffer::new(offsets.into()),
                child,
                Some(NullBuffer::from(valid)),
            )?)
        }
        DataType::Date32 => {
            let mut builder = Date32Builder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Date(v) => builder.append_value(*v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Decimal128(precision, scale) => {
            let mut builder = Decimal128Builder::with_capacity(row_count);
            for datum in values {
                match datum.as_decimal() {
                    Some((units, at)) if at == *scale => builder.append_value(units),
                    Some((units, at)) => builder
                        .append_option(vibelux_interfaces::decimal::rescale(units, at, *scale)),
                    None if datum.is_null() => builder.append_null(),
                    None => return Err(mismatch(datum)),
                }
            }
            Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)?,
            )
        }
        DataType::Duration(TimeUnit::Nanosecond) => {
            let mut builder = DurationNanosecondBuilder::with_capacity(row_count);
            for datum in values {
                match datum {
                    Datum::Duration(v) => builder.append_value(*v),
                    Datum::Null => builder.append_null(),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(builder.finish())
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "column type {other} cannot be carried in rows"
            )));
        }
    })
}

/// Reads one column of a batch into datums, appending value `i` to `out[i]`.
pub fn append_column(array: &dyn Array, out: &mut [Row]) -> Result<(), ArrowError> {
    let storage = storage_type(array.data_type()).ok_or_else(|| {
        ArrowError::NotYetImplemented(format!(
            "column type {} cannot be carried in rows",
            array.data_type()
        ))
    })?;
    if &storage != array.data_type() {
        let converted = cast(array, &storage)?;
        return append_column(converted.as_ref(), out);
    }
    let any = array.as_any();
    macro_rules! append {
        ($array_type:ty, $make:expr) => {{
            let typed = any.downcast_ref::<$array_type>().ok_or_else(|| {
                ArrowError::CastError(format!("unexpected array type {}", array.data_type()))
            })?;
            for (i, row) in out.iter_mut().enumerate() {
                row.push(if typed.is_null(i) {
                    Datum::Null
                } else {
                    $make(typed.value(i))
                });
            }
        }};
    }
    match array.data_type() {
        DataType::Null => out.iter_mut().for_each(|row| row.push(Datum::Null)),
        DataType::Boolean => append!(BooleanArray, Datum::Boolean),
        DataType::Int64 => append!(Int64Array, Datum::Int64),
        DataType::Float64 => append!(Float64Array, Datum::Float64),
        DataType::Utf8 => append!(StringArray, |v: &str| Datum::Utf8(Arc::from(v))),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            append!(TimestampNanosecondArray, Datum::Timestamp)
        }
        DataType::Duration(TimeUnit::Nanosecond) => {
            append!(DurationNanosecondArray, Datum::Duration)
        }
        DataType::Date32 => append!(Date32Array, Datum::Date),
        DataType::Decimal128(_, scale) => {
            let scale = *scale;
            append!(Decimal128Array, |units: i128| Datum::decimal(units, scale))
        }
        DataType::List(_) => {
            let lists = any.downcast_ref::<ListArray>().ok_or_else(|| {
                ArrowError::CastError(format!("unexpected array type {}", array.data_type()))
            })?;
            for (i, row) in out.iter_mut().enumerate() {
                if lists.is_null(i) {
                    row.push(Datum::Null);
                    continue;
                }
                let values = lists.value(i);
                let mut items: Vec<Row> = vec![Vec::with_capacity(1); values.len()];
                append_column(values.as_ref(), &mut items)?;
                row.push(Datum::List(
                    items
                        .into_iter()
                        .map(|mut item| item.pop().unwrap_or(Datum::Null))
                        .collect(),
                ));
            }
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "column type {other} cannot be carried in rows"
            )));
        }
    }
    Ok(())
}

/// All rows of a batch.
pub fn batch_to_rows(batch: &RecordBatch) -> Result<Vec<Row>, ArrowError> {
    let mut rows: Vec<Row> = (0..batch.num_rows())
        .map(|_| Vec::with_capacity(batch.num_columns()))
        .collect();
    for column in batch.columns() {
        append_column(column.as_ref(), &mut rows)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_dates_and_durations_cross_into_columns_and_back() {
        let item = Arc::new(Field::new("item", DataType::Float64, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("values", DataType::List(item), true),
            Field::new("day", DataType::Date32, true),
            Field::new("held", DataType::Duration(TimeUnit::Nanosecond), true),
        ]));
        let rows = vec![
            vec![
                Datum::List(vec![Datum::Float64(1.5), Datum::Null].into()),
                Datum::Date(20_605),
                Datum::Duration(-5),
            ],
            vec![Datum::Null, Datum::Null, Datum::Null],
            vec![
                Datum::List(Box::new([])),
                Datum::Date(0),
                Datum::Duration(0),
            ],
        ];
        let batch = rows_to_batch(&schema, rows.iter(), rows.len()).unwrap();
        assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    }

    #[test]
    fn a_not_null_column_left_out_of_a_batch_is_nulls_without_an_error() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("zone", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let rows = [vec![Datum::Utf8("z1".into()), Datum::Int64(5)]];
        let batch = rows_to_batch_columns(&schema, rows.iter(), 1, Some(&[true, false])).unwrap();
        assert_eq!(batch.column(1).null_count(), 1);
        assert_eq!(batch.column(0).null_count(), 0);
    }

    #[test]
    fn rows_survive_a_round_trip_through_arrow() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let rows = vec![
            vec![
                Datum::Utf8("a".into()),
                Datum::Int64(3),
                Datum::Float64(1.5),
                Datum::Timestamp(1_000),
                Datum::Boolean(true),
            ],
            vec![
                Datum::Null,
                Datum::Null,
                Datum::Null,
                Datum::Null,
                Datum::Null,
            ],
        ];
        let batch = rows_to_batch(&schema, rows.iter(), rows.len()).unwrap();
        assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    }

    #[test]
    fn narrow_declared_types_are_widened_in_rows_and_narrowed_back() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let rows = vec![vec![Datum::Int64(7)]];
        let batch = rows_to_batch(&schema, rows.iter(), 1).unwrap();
        assert_eq!(batch.column(0).data_type(), &DataType::Int32);
        assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_an_error_not_a_panic() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let rows = [vec![Datum::Utf8("x".into())]];
        assert!(rows_to_batch(&schema, rows.iter(), 1).is_err());
    }
}
