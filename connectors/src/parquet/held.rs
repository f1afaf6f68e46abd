//! A partition's rows waiting for the next rollover, held as Arrow columns.
//!
//! A warehouse writer holds up to a rollover's worth of rows (a million by default) before it
//! writes them. Held as rows, each was a vector of datums: allocated, cloned from the row the
//! sink received, compared datum by datum to sort them, freed, and converted to columns at the
//! end. Held as columns they take a fraction of the memory, need no conversion when written,
//! and sort by Arrow's row format: one byte comparison a pair instead of a walk over datums.

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{interleave_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use vibelux_operators::columnar::{BatchBuilder, batch_to_rows};
use vibelux_operators::row::Row;

pub(super) struct HeldRows {
    /// Rows sealed into batches (by a checkpoint, which reads them).
    sealed: Vec<RecordBatch>,
    building: BatchBuilder,
}

impl HeldRows {
    pub(super) fn new(schema: SchemaRef) -> Result<Self, ArrowError> {
        Ok(HeldRows {
            sealed: Vec::new(),
            building: BatchBuilder::new(schema)?,
        })
    }

    /// Holds the datums of `columns` of `row`, in order, as a row of the file.
    pub(super) fn push(&mut self, row: &Row, columns: &[usize]) -> Result<(), ArrowError> {
        self.building.append(row, columns)
    }

    pub(super) fn len(&self) -> usize {
        self.sealed.iter().map(RecordBatch::num_rows).sum::<usize>() + self.building.len()
    }

    fn seal(&mut self) -> Result<(), ArrowError> {
        if !self.building.is_empty() {
            let batch = self.building.finish()?;
            self.sealed.push(batch);
        }
        Ok(())
    }

    /// The rows held, for a checkpoint (they stay held).
    pub(super) fn rows(&mut self) -> Result<Vec<Row>, ArrowError> {
        self.seal()?;
        let mut rows = Vec::with_capacity(self.len());
        for batch in &self.sealed {
            rows.extend(batch_to_rows(batch)?);
        }
        Ok(rows)
    }

    /// Hands `each` the rows held, sorted by their columns in order (keys, first in a view,
    /// then time, so that readers prune), in batches of at most `batch_rows`, one at a time.
    pub(super) fn for_each_sorted(
        &mut self,
        batch_rows: usize,
        mut each: impl FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<(), String> {
        let arrow = |error: ArrowError| error.to_string();
        self.seal().map_err(arrow)?;
        let batch_rows = batch_rows.max(1);
        let Some(order) = self.order().map_err(arrow)? else {
            // A column the row format cannot order: written in arrival order (sorting only
            // helps readers skip).
            for batch in &self.sealed {
                let mut offset = 0;
                while offset < batch.num_rows() {
                    let length = batch_rows.min(batch.num_rows() - offset);
                    each(batch.slice(offset, length))?;
                    offset += length;
                }
            }
            return Ok(());
        };
        if let [batch] = self.sealed.as_slice() {
            for chunk in order.chunks(batch_rows) {
                each(take_record_batch(batch, &UInt32Array::from(chunk.to_vec())).map_err(arrow)?)?;
            }
            return Ok(());
        }
        // Where each held row is: its batch and its index in it.
        let mut places = Vec::with_capacity(order.len());
        for (index, batch) in self.sealed.iter().enumerate() {
            places.extend((0..batch.num_rows()).map(|row| (index, row)));
        }
        let batches: Vec<&RecordBatch> = self.sealed.iter().collect();
        for chunk in order.chunks(batch_rows) {
            let picked: Vec<(usize, usize)> = chunk.iter().map(|&at| places[at as usize]).collect();
            each(interleave_record_batch(&batches, &picked).map_err(arrow)?)?;
        }
        Ok(())
    }

    /// The sealed rows' positions in sorted order, or `None` when a column cannot be ordered.
    fn order(&self) -> Result<Option<Vec<u32>>, ArrowError> {
        let Some(first) = self.sealed.first() else {
            return Ok(Some(Vec::new()));
        };
        let sort_fields = first
            .schema()
            .fields()
            .iter()
            .map(|field| SortField::new(field.data_type().clone()))
            .collect();
        let Ok(converter) = RowConverter::new(sort_fields) else {
            return Ok(None);
        };
        let total = self.len();
        let mut keys = converter.empty_rows(total, total * 32);
        for batch in &self.sealed {
            converter.append(&mut keys, batch.columns())?;
        }
        let mut order: Vec<u32> = (0..total as u32).collect();
        order.sort_unstable_by(|&a, &b| keys.row(a as usize).cmp(&keys.row(b as usize)));
        Ok(Some(order))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use vibelux_operators::row::Datum;

    use super::*;

    #[test]
    fn rows_held_across_checkpoints_come_out_sorted_in_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sensor_id", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("temp_c", DataType::Float64, true),
        ]));
        let mut held = HeldRows::new(schema).unwrap();
        let row = |sensor: Option<&str>, ts: i64, temp: f64| {
            vec![
                Datum::Float64(temp),
                sensor.map_or(Datum::Null, |s| Datum::Utf8(s.into())),
                Datum::Timestamp(ts * 1_000),
            ]
        };
        let columns = [1, 2, 0];
        for (sensor, ts, temp) in [(Some("s2"), 5, 1.0), (Some("s1"), 9, 2.0)] {
            held.push(&row(sensor, ts, temp), &columns).unwrap();
        }
        // A checkpoint reads what is held, in arrival order, and it stays held.
        let read: Vec<Row> = held.rows().unwrap();
        assert_eq!(read[0][0], Datum::Utf8("s2".into()));
        assert_eq!(read[1][1], Datum::Timestamp(9_000));
        for (sensor, ts, temp) in [(Some("s1"), 3, 3.0), (None, 7, 4.0), (Some("s2"), 1, 5.0)] {
            held.push(&row(sensor, ts, temp), &columns).unwrap();
        }
        // A datum of the wrong kind is refused and leaves nothing behind.
        assert!(
            held.push(
                &vec![
                    Datum::Utf8("warm".into()),
                    Datum::Utf8("s3".into()),
                    Datum::Null
                ],
                &columns
            )
            .is_err()
        );
        assert_eq!(held.len(), 5);
        let mut sizes = Vec::new();
        let mut temps = Vec::new();
        held.for_each_sorted(2, |batch| {
            sizes.push(batch.num_rows());
            temps.extend(
                batch_to_rows(&batch)
                    .unwrap()
                    .into_iter()
                    .map(|row| row[2].clone()),
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, vec![2, 2, 1]);
        // Nulls first, then by sensor, then by time.
        let expected = [4.0, 3.0, 2.0, 5.0, 1.0].map(Datum::Float64);
        assert_eq!(temps, expected);
    }
}
