//! Conversion between rows and Arrow record batches.
//!
//! Expressions are evaluated by DataFusion on Arrow arrays, a batch at a time; rows cross into
//! columns here and back. Only the storage kinds of [`crate::row::storage_type`] occur.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Date32Builder,
    Decimal128Array, Decimal128Builder, DurationNanosecondArray, DurationNanosecondBuilder,
    Float64Array, Float64Builder, Int64Array, Int64Builder, ListArray, NullArray, RecordBatch,
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
    let mut column = StorageColumn::new(data_type, row_count)?;
    for datum in values {
        column.append(datum)?;
    }
    column.finish()
}

/// A column being built from datums one at a time, in a storage type of
/// [`crate::row::storage_type`].
enum StorageColumn {
    Null(usize),
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    TimestampNanos(TimestampNanosecondBuilder, Option<Arc<str>>),
    TimestampMicros(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Date(Date32Builder),
    Decimal(Decimal128Builder, u8, i8),
    Duration(DurationNanosecondBuilder),
    /// Lists are gathered and built whole: their items make a column of their own.
    List(Arc<Field>, Vec<Datum>),
}

impl StorageColumn {
    fn new(data_type: &DataType, capacity: usize) -> Result<Self, ArrowError> {
        Ok(match data_type {
            DataType::Null => StorageColumn::Null(0),
            DataType::Boolean => StorageColumn::Boolean(BooleanBuilder::with_capacity(capacity)),
            DataType::Int64 => StorageColumn::Int64(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => StorageColumn::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Utf8 => {
                StorageColumn::Utf8(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            DataType::Timestamp(TimeUnit::Nanosecond, zone) => StorageColumn::TimestampNanos(
                TimestampNanosecondBuilder::with_capacity(capacity),
                zone.clone(),
            ),
            DataType::Timestamp(TimeUnit::Microsecond, zone) => StorageColumn::TimestampMicros(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                zone.clone(),
            ),
            DataType::Date32 => StorageColumn::Date(Date32Builder::with_capacity(capacity)),
            DataType::Decimal128(precision, scale) => StorageColumn::Decimal(
                Decimal128Builder::with_capacity(capacity),
                *precision,
                *scale,
            ),
            DataType::Duration(TimeUnit::Nanosecond) => {
                StorageColumn::Duration(DurationNanosecondBuilder::with_capacity(capacity))
            }
            DataType::List(item) => StorageColumn::List(item.clone(), Vec::new()),
            other => {
                return Err(ArrowError::NotYetImplemented(format!(
                    "column type {other} cannot be carried in rows"
                )));
            }
        })
    }

    fn data_type(&self) -> DataType {
        match self {
            StorageColumn::Null(_) => DataType::Null,
            StorageColumn::Boolean(_) => DataType::Boolean,
            StorageColumn::Int64(_) => DataType::Int64,
            StorageColumn::Float64(_) => DataType::Float64,
            StorageColumn::Utf8(_) => DataType::Utf8,
            StorageColumn::TimestampNanos(_, zone) => {
                DataType::Timestamp(TimeUnit::Nanosecond, zone.clone())
            }
            StorageColumn::TimestampMicros(_, zone) => {
                DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            }
            StorageColumn::Date(_) => DataType::Date32,
            StorageColumn::Decimal(_, precision, scale) => DataType::Decimal128(*precision, *scale),
            StorageColumn::Duration(_) => DataType::Duration(TimeUnit::Nanosecond),
            StorageColumn::List(item, _) => DataType::List(item.clone()),
        }
    }

    /// Whether [`StorageColumn::append`] takes `datum`.
    fn accepts(&self, datum: &Datum) -> bool {
        matches!(
            (self, datum),
            (_, Datum::Null)
                | (StorageColumn::Null(_), _)
                | (StorageColumn::Boolean(_), Datum::Boolean(_))
                | (StorageColumn::Int64(_), Datum::Int64(_))
                | (
                    StorageColumn::Float64(_),
                    Datum::Float64(_) | Datum::Int64(_)
                )
                | (StorageColumn::Utf8(_), Datum::Utf8(_))
                | (
                    StorageColumn::TimestampNanos(..) | StorageColumn::TimestampMicros(..),
                    Datum::Timestamp(_)
                )
                | (StorageColumn::Date(_), Datum::Date(_))
                | (StorageColumn::Duration(_), Datum::Duration(_))
                | (StorageColumn::Decimal(..), Datum::Decimal { .. })
                | (StorageColumn::List(..), Datum::List(_))
        )
    }

    fn append(&mut self, datum: &Datum) -> Result<(), ArrowError> {
        let appended = match (&mut *self, datum) {
            // Values of a column whose type is null are nulls (DataFusion's untyped NULL).
            (StorageColumn::Null(count), _) => {
                *count += 1;
                true
            }
            (StorageColumn::Boolean(column), Datum::Boolean(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::Int64(column), Datum::Int64(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::Float64(column), Datum::Float64(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::Float64(column), Datum::Int64(v)) => {
                column.append_value(*v as f64);
                true
            }
            (StorageColumn::Utf8(column), Datum::Utf8(v)) => {
                column.append_value(v);
                true
            }
            (StorageColumn::TimestampNanos(column, _), Datum::Timestamp(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::TimestampMicros(column, _), Datum::Timestamp(v)) => {
                column.append_value(v.div_euclid(1_000));
                true
            }
            (StorageColumn::Date(column), Datum::Date(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::Duration(column), Datum::Duration(v)) => {
                column.append_value(*v);
                true
            }
            (StorageColumn::Decimal(column, _, scale), datum) => match datum.as_decimal() {
                Some((units, at)) if at == *scale => {
                    column.append_value(units);
                    true
                }
                Some((units, at)) => {
                    column.append_option(vibelux_interfaces::decimal::rescale(units, at, *scale));
                    true
                }
                None if datum.is_null() => {
                    column.append_null();
                    true
                }
                None => false,
            },
            (StorageColumn::List(_, values), Datum::List(_) | Datum::Null) => {
                values.push(datum.clone());
                true
            }
            (column, Datum::Null) => {
                column.append_null();
                true
            }
            _ => false,
        };
        if appended {
            Ok(())
        } else {
            Err(ArrowError::InvalidArgumentError(format!(
                "value {datum:?} in a column of type {}",
                self.data_type()
            )))
        }
    }

    /// A null, for the kinds `append` does not give one to directly.
    fn append_null(&mut self) {
        match self {
            StorageColumn::Null(count) => *count += 1,
            StorageColumn::Boolean(column) => column.append_null(),
            StorageColumn::Int64(column) => column.append_null(),
            StorageColumn::Float64(column) => column.append_null(),
            StorageColumn::Utf8(column) => column.append_null(),
            StorageColumn::TimestampNanos(column, _) => column.append_null(),
            StorageColumn::TimestampMicros(column, _) => column.append_null(),
            StorageColumn::Date(column) => column.append_null(),
            StorageColumn::Decimal(column, ..) => column.append_null(),
            StorageColumn::Duration(column) => column.append_null(),
            StorageColumn::List(_, values) => values.push(Datum::Null),
        }
    }

    fn len(&self) -> usize {
        match self {
            StorageColumn::Null(count) => *count,
            StorageColumn::Boolean(column) => column.len(),
            StorageColumn::Int64(column) => column.len(),
            StorageColumn::Float64(column) => column.len(),
            StorageColumn::Utf8(column) => column.len(),
            StorageColumn::TimestampNanos(column, _) => column.len(),
            StorageColumn::TimestampMicros(column, _) => column.len(),
            StorageColumn::Date(column) => column.len(),
            StorageColumn::Decimal(column, ..) => column.len(),
            StorageColumn::Duration(column) => column.len(),
            StorageColumn::List(_, values) => values.len(),
        }
    }

    /// The column built so far; the builder starts again empty.
    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            StorageColumn::Null(count) => Arc::new(NullArray::new(std::mem::take(count))),
            StorageColumn::Boolean(column) => Arc::new(column.finish()),
            StorageColumn::Int64(column) => Arc::new(column.finish()),
            StorageColumn::Float64(column) => Arc::new(column.finish()),
            StorageColumn::Utf8(column) => Arc::new(column.finish()),
            StorageColumn::TimestampNanos(column, zone) => {
                Arc::new(column.finish().with_timezone_opt(zone.clone()))
            }
            StorageColumn::TimestampMicros(column, zone) => {
                Arc::new(column.finish().with_timezone_opt(zone.clone()))
            }
            StorageColumn::Date(column) => Arc::new(column.finish()),
            StorageColumn::Decimal(column, precision, scale) => Arc::new(
                column
                    .finish()
                    .with_precision_and_scale(*precision, *scale)?,
            ),
            StorageColumn::Duration(column) => Arc::new(column.finish()),
            StorageColumn::List(item, values) => {
                let values = std::mem::take(values);
                list_column(item, &values)?
            }
        })
    }
}

fn list_column(item: &Arc<Field>, lists: &[Datum]) -> Result<ArrayRef, ArrowError> {
    let mut offsets: Vec<i32> = Vec::with_capacity(lists.len() + 1);
    offsets.push(0);
    let mut valid = Vec::with_capacity(lists.len());
    let mut items: Vec<&Datum> = Vec::new();
    for datum in lists {
        if let Datum::List(values) = datum {
            items.extend(values.iter());
        }
        valid.push(!datum.is_null());
        offsets.push(i32::try_from(items.len()).map_err(|_| {
            ArrowError::ComputeError("a batch of lists holds over 2^31 values".into())
        })?);
    }
    let child = column_from_datums(item.data_type(), items.iter().copied(), items.len())?;
    Ok(Arc::new(ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(offsets.into()),
        child,
        Some(NullBuffer::from(valid)),
    )?))
}

/// Rows of one schema gathered into Arrow builders as they come, without keeping the rows: a
/// sink that holds many rows before it writes them (the warehouse) holds them as columns.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<StorageColumn>,
    rows: usize,
}

impl BatchBuilder {
    pub fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let declared = field.data_type();
                let storage = storage_type(declared).ok_or_else(|| {
                    ArrowError::NotYetImplemented(format!(
                        "column type {declared} cannot be carried in rows"
                    ))
                })?;
                StorageColumn::new(&storage, 0)
            })
            .collect::<Result<_, _>>()?;
        Ok(BatchBuilder {
            schema,
            columns,
            rows: 0,
        })
    }

    /// Appends the datums of `columns` of `row`, in order, as one row of the schema. A row
    /// holding a datum of the wrong kind is refused whole.
    pub fn append(&mut self, row: &Row, columns: &[usize]) -> Result<(), ArrowError> {
        for (column, &index) in self.columns.iter().zip(columns) {
            if !column.accepts(&row[index]) {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "value {:?} in a column of type {}",
                    row[index],
                    column.data_type()
                )));
            }
        }
        for (column, &index) in self.columns.iter_mut().zip(columns) {
            column.append(&row[index])?;
        }
        self.rows += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows appended so far, as a batch of the schema; the builder starts again empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (column, field) in self.columns.iter_mut().zip(self.schema.fields()) {
            debug_assert_eq!(column.len(), rows);
            let array = column.finish()?;
            arrays.push(if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
    }
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
