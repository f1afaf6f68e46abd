//! The time-weighted aggregates (`dli`, `integral`, `time_weighted_avg`, `rate_of_change`) as
//! DataFusion aggregate functions.
//!
//! Streaming views maintain them with the accumulators of `operators::accumulator` (the planner
//! only needs their declaration); ad-hoc queries over the warehouse (`vibelux query`, the
//! Postgres port) run them in DataFusion with the accumulator here. Both compute with
//! [`time_weighted_value`], so a day's DLI is the same number in a live view and in the
//! warehouse. A group's points are kept until it is evaluated (they must be put in time order,
//! and files need not be); partial states are the points as two lists.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType,
};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use vibelux_operators::accumulator::AggregateFunction;
use vibelux_operators::time_weighted::time_weighted_value;

/// `f(value, ts)`: a numeric value and a timestamp of any unit, the time its value was read.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeWeighted {
    name: &'static str,
    function: AggregateFunction,
    signature: Signature,
}

impl AggregateUDFImpl for TimeWeighted {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The value as a double, the time in nanoseconds (the unit streams carry; a warehouse
    /// stores microseconds), its zone kept.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name;
        match arg_types {
            [value, DataType::Timestamp(_, zone)] if value.is_numeric() || value.is_null() => {
                Ok(vec![
                    DataType::Float64,
                    DataType::Timestamp(TimeUnit::Nanosecond, zone.clone()),
                ])
            }
            [value, _] if !(value.is_numeric() || value.is_null()) => {
                plan_err!("{name}(value, ts): the value must be a number, not {value}")
            }
            [_, time] => plan_err!("{name}(value, ts): ts must be a TIMESTAMP, not {time}"),
            _ => plan_err!(
                "{name}(value, ts) takes two arguments, the value and its event time; {} given",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Points {
            function: self.function,
            points: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, item: DataType| {
            Arc::new(Field::new(
                format_state_name(args.name, name),
                DataType::List(Arc::new(Field::new_list_field(item, true))),
                true,
            ))
        };
        Ok(vec![
            list("nanos", DataType::Int64),
            list("values", DataType::Float64),
        ])
    }
}

/// A group's `(nanoseconds, value)` points, in the order they came.
#[derive(Debug)]
struct Points {
    function: AggregateFunction,
    points: Vec<(i64, f64)>,
}

impl Points {
    fn add(
        &mut self,
        nanos: impl Iterator<Item = Option<i64>>,
        values: impl Iterator<Item = Option<f64>>,
    ) {
        let pairs = nanos.zip(values);
        self.points
            .extend(pairs.filter_map(|(nanos, value)| Some((nanos?, value?))));
    }
}

impl Accumulator for Points {
    fn update_batch(&mut self, arguments: &[ArrayRef]) -> Result<()> {
        // Coerced by `coerce_types`: a double and nanoseconds.
        let values = cast(&arguments[0], &DataType::Float64)?;
        let nanos = arguments[1].as_primitive::<TimestampNanosecondType>();
        self.add(nanos.iter(), values.as_primitive::<Float64Type>().iter());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (nanos, values): (&ListArray, &ListArray) = (states[0].as_list(), states[1].as_list());
        for row in 0..nanos.len() {
            if nanos.is_null(row) || values.is_null(row) {
                continue;
            }
            let (row_nanos, row_values) = (nanos.value(row), values.value(row));
            self.add(
                row_nanos.as_primitive::<Int64Type>().iter(),
                row_values.as_primitive::<Float64Type>().iter(),
            );
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let nanos = Int64Array::from_iter_values(self.points.iter().map(|(nanos, _)| *nanos));
        let values = Float64Array::from_iter_values(self.points.iter().map(|(_, value)| *value));
        Ok(vec![
            ScalarValue::List(Arc::new(ListArray::new(
                Arc::new(Field::new_list_field(DataType::Int64, true)),
                datafusion::arrow::buffer::OffsetBuffer::from_lengths([nanos.len()]),
                Arc::new(nanos),
                None,
            ))),
            ScalarValue::List(Arc::new(ListArray::new(
                Arc::new(Field::new_list_field(DataType::Float64, true)),
                datafusion::arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                Arc::new(values),
                None,
            ))),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.points
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let points = self.points.iter().map(|&(nanos, value)| (nanos, value, 1));
        Ok(ScalarValue::Float64(time_weighted_value(
            self.function,
            points,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.points.capacity() * std::mem::size_of::<(i64, f64)>()
    }
}

/// The time-weighted aggregates, ready to register: `f(value, ts)`.
pub fn time_weighted_functions() -> Vec<Arc<AggregateUDF>> {
    [
        ("integral", AggregateFunction::Integral),
        ("time_weighted_avg", AggregateFunction::TimeWeightedAvg),
        ("dli", AggregateFunction::Dli),
        ("rate_of_change", AggregateFunction::RateOfChange),
    ]
    .into_iter()
    .map(|(name, function)| {
        Arc::new(AggregateUDF::from(TimeWeighted {
            name,
            function,
            signature: Signature::user_defined(Volatility::Immutable),
        }))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A room's light over a day in microseconds, as the warehouse stores it, out of order and
    /// in two batches (so partial states merge).
    async fn query(sql: &str) -> Vec<String> {
        let context = SessionContext::new();
        for function in time_weighted_functions() {
            context.register_udaf(function.as_ref().clone());
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("room", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("ppfd", DataType::Int64, true),
        ]));
        let hour = 3_600_000_000i64;
        let batch = |rooms: Vec<&str>, hours: Vec<i64>, ppfd: Vec<Option<i64>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(datafusion::arrow::array::StringArray::from(rooms)),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            hours.iter().map(|h| h * hour).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(Int64Array::from(ppfd)),
                ],
            )
            .unwrap()
        };
        let table = datafusion::datasource::MemTable::try_new(
            schema.clone(),
            vec![
                vec![batch(
                    vec!["r1", "r1", "r2"],
                    vec![12, 0, 0],
                    vec![Some(900), Some(900), Some(0)],
                )],
                vec![batch(
                    vec!["r1", "r2", "r2", "r2"],
                    vec![6, 6, 12, 7],
                    vec![Some(900), Some(600), Some(0), None],
                )],
            ],
        )
        .unwrap();
        context.register_table("light", Arc::new(table)).unwrap();
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn the_warehouse_computes_what_a_streaming_view_does() {
        // 900 µmol/m²/s for 12 hours: 38.88 mol/m²; a triangle to 600: 12.96 (as time_weighted.slt).
        let rows = query(
            "SELECT room, round(dli(ppfd, ts), 2) AS dli, round(time_weighted_avg(ppfd, ts), 1) AS avg,
                    rate_of_change(ppfd, ts) * 3600 AS per_hour
             FROM light GROUP BY room ORDER BY room",
        )
        .await;
        assert_eq!(
            rows[3..5],
            [
                "| r1   | 38.88 | 900.0 | 0.0      |",
                "| r2   | 12.96 | 300.0 | 0.0      |",
            ],
            "{rows:#?}"
        );
    }

    #[tokio::test]
    async fn a_value_that_is_not_a_number_is_refused_by_name() {
        let context = SessionContext::new();
        for function in time_weighted_functions() {
            context.register_udaf(function.as_ref().clone());
        }
        let error = context
            .sql("SELECT dli('bright', now())")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("dli(value, ts): the value must be a number, not Utf8"),
            "{error}"
        );
        let error = context
            .sql("SELECT dli(1.0)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("takes two arguments"), "{error}");
    }
}
