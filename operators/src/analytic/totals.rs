//! What an aggregate over a frame gives: counts, sums, means and extremes from running totals
//! (kept for a frame from the series' start, folded again over a bounded frame's rows), the
//! spread of values (`stddev`, `variance`) from an aggregate's moments, and `array_agg` as the
//! frame's values in event-time order.

use serde::{Deserialize, Serialize};

use crate::accumulator::{Accumulator, AggregateFunction};
use crate::row::Datum;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Totals {
    rows: i64,
    values: i64,
    sum_int: i128,
    sum_float: f64,
    min: Option<Datum>,
    max: Option<Datum>,
}

impl Totals {
    /// Whether running totals give `aggregate` (counts, sums, means and extremes).
    pub(super) fn computes(aggregate: AggregateFunction) -> bool {
        use AggregateFunction::*;
        matches!(
            aggregate,
            CountRows
                | Count
                | SumInt
                | SumFloat
                | Avg
                | Min
                | Max
                | SumDecimal { .. }
                | AvgDecimal { .. }
        )
    }

    pub(super) fn add(&mut self, value: &Datum) {
        self.rows += 1;
        if value.is_null() {
            return;
        }
        self.values += 1;
        match value {
            Datum::Int64(v) => {
                self.sum_int += i128::from(*v);
                self.sum_float += *v as f64;
            }
            // A column's decimals share its scale: their units add up exactly.
            Datum::Decimal { .. } => {
                let (units, _) = value.as_decimal().expect("a decimal");
                self.sum_int = self.sum_int.saturating_add(units);
                self.sum_float += value.as_f64().unwrap_or(0.0);
            }
            other => self.sum_float += other.as_f64().unwrap_or(0.0),
        }
        if self.min.as_ref().is_none_or(|min| value < min) {
            self.min = Some(value.clone());
        }
        if self.max.as_ref().is_none_or(|max| value > max) {
            self.max = Some(value.clone());
        }
    }

    pub(super) fn result(&self, aggregate: AggregateFunction) -> Datum {
        match aggregate {
            AggregateFunction::CountRows => Datum::Int64(self.rows),
            AggregateFunction::Count => Datum::Int64(self.values),
            _ if self.values == 0 => Datum::Null,
            AggregateFunction::SumInt => Datum::Int64(
                self.sum_int
                    .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            ),
            AggregateFunction::SumFloat => Datum::Float64(self.sum_float),
            AggregateFunction::Avg => Datum::Float64(self.sum_float / self.values as f64),
            AggregateFunction::SumDecimal { scale } => Datum::decimal(self.sum_int, scale),
            AggregateFunction::AvgDecimal { scale } => {
                crate::accumulator::decimal_mean(self.sum_int, self.values, scale)
            }
            AggregateFunction::Min => self.min.clone().unwrap_or(Datum::Null),
            AggregateFunction::Max => self.max.clone().unwrap_or(Datum::Null),
            _ => unreachable!("planned with a function `runs` takes"),
        }
    }

    pub(super) fn of<'a>(values: impl Iterator<Item = &'a Datum>) -> Totals {
        let mut totals = Totals::default();
        for value in values {
            totals.add(value);
        }
        totals
    }
}

/// `aggregate` over a bounded frame's values, oldest first.
pub(super) fn frame_result<'a>(
    aggregate: AggregateFunction,
    values: impl Iterator<Item = &'a Datum>,
) -> Datum {
    match aggregate {
        AggregateFunction::ArrayAgg => Datum::List(values.cloned().collect()),
        aggregate if Totals::computes(aggregate) => Totals::of(values).result(aggregate),
        aggregate => {
            let mut accumulator = Accumulator::new(aggregate, false);
            for value in values {
                accumulator.update(aggregate, value, &Datum::Null, 1);
            }
            accumulator.result(aggregate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(values: &[f64]) -> Vec<Datum> {
        values.iter().copied().map(Datum::Float64).collect()
    }

    #[test]
    fn a_frames_spread_is_the_sample_or_population_deviation_of_its_values() {
        let frame = floats(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        let result = |aggregate| frame_result(aggregate, frame.iter());
        assert_eq!(
            result(AggregateFunction::StddevPopulation),
            Datum::Float64(2.0)
        );
        assert_eq!(
            result(AggregateFunction::VariancePopulation),
            Datum::Float64(4.0)
        );
        assert_eq!(
            result(AggregateFunction::VarianceSample),
            Datum::Float64(32.0 / 7.0)
        );
        // One value has no sample spread; nulls are not values.
        let one = [Datum::Float64(1.0), Datum::Null];
        assert_eq!(
            frame_result(AggregateFunction::StddevSample, one.iter()),
            Datum::Null
        );
        assert_eq!(
            frame_result(AggregateFunction::StddevPopulation, one.iter()),
            Datum::Float64(0.0)
        );
    }

    #[test]
    fn array_agg_over_a_frame_lists_its_values_oldest_first_nulls_included() {
        let frame = [Datum::Float64(3.0), Datum::Null, Datum::Float64(1.0)];
        assert_eq!(
            frame_result(AggregateFunction::ArrayAgg, frame.iter()),
            Datum::List(frame.to_vec().into())
        );
    }
}
