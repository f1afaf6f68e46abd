//! Aggregate functions as incremental accumulators.
//!
//! Every accumulator takes signed updates (`diff` of +1 or -1, or a multiplicity), so the same code
//! serves windows over append-only streams and aggregates over relations that retract rows.
//! Order-dependent functions (`min`, `max`, `first_value`, `last_value`) keep a multiset only when
//! their input can retract; over append-only input they keep one value.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Serialize};

use vibelux_models::onnx::FeatureReference;

use crate::row::Datum;
use crate::time_weighted::time_weighted;

/// The aggregate functions a streaming `GROUP BY` can maintain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggregateFunction {
    /// `count(*)`: rows in the group.
    CountRows,
    /// `count(x)`: non-null values.
    Count,
    SumInt,
    SumFloat,
    Avg,
    Min,
    Max,
    StddevSample,
    StddevPopulation,
    VarianceSample,
    VariancePopulation,
    /// The value with the least ordering key (ties broken by value, so results are deterministic).
    FirstValue,
    /// The value with the greatest ordering key.
    LastValue,
    /// `integral(value, ts)`: the trapezoidal integral over event time, value × seconds.
    Integral,
    /// `time_weighted_avg(value, ts)`: the integral divided by the time it spans.
    TimeWeightedAvg,
    /// `dli(ppfd, ts)`: the integral of PPFD (µmol/m²/s) in mol/m², the daily light integral
    /// over a day's window.
    Dli,
    /// `rate_of_change(value, ts)`: (last − first) / elapsed seconds.
    RateOfChange,
    /// `psi('model', 'feature', value)`: the population stability index of the values against
    /// the model's training distribution of that feature.
    PopulationStability,
    /// `count(DISTINCT value)`.
    CountDistinct,
    /// `median(value)`, `percentile_cont`/`approx_percentile_cont(value, fraction)`: the value
    /// at that fraction of the sorted values, interpolated between neighbours (exact, not a
    /// sketch). The fraction is in millionths, so the function stays comparable and hashable.
    Percentile {
        millionths: u32,
    },
    /// `sum(DISTINCT value)`: of integers an integer, otherwise a float. (New variants go last:
    /// a serialized function is its variant's index.)
    SumDistinct,
    /// `avg(DISTINCT value)`.
    AvgDistinct,
    /// `array_agg(value [ORDER BY key])`: every value, NULLs too, in the key's order, NULL keys
    /// last (ties, and every value without a key, in value order, so the list is the same on
    /// every run).
    ArrayAgg,
    /// `array_agg(value ORDER BY key DESC)`: the same list reversed, NULL keys first as SQL
    /// orders descending.
    ArrayAggDescending,
    /// `array_agg(value ORDER BY key ASC NULLS FIRST)`: the values without a key first.
    ArrayAggNullsFirst,
    /// `array_agg(value ORDER BY key DESC NULLS LAST)`: `ArrayAggNullsFirst`'s list reversed.
    ArrayAggDescendingNullsLast,
    /// `sum` of exact decimals with `scale` digits after the point: exact, at that scale.
    SumDecimal {
        scale: i8,
    },
    /// `avg` of exact decimals: exact to four more digits than the values have (DataFusion's
    /// DECIMAL(p + 4, s + 4)), truncated as DataFusion truncates.
    AvgDecimal {
        scale: i8,
    },
}

/// The scale of a decimal mean of values at `scale`.
pub fn mean_scale(scale: i8) -> i8 {
    (scale + 4).min(38)
}

/// The mean of decimal units `sum` over `values` values, at `scale` digits, at
/// [`mean_scale`]'s.
pub fn decimal_mean(sum: i128, values: i64, scale: i8) -> Datum {
    let target = mean_scale(scale);
    match crate::decimal::rescale(sum, scale, target) {
        Some(scaled) => Datum::decimal(scaled / i128::from(values), target),
        // Past 38 digits: the nearest double, as a NULL would lose the group.
        None => Datum::Float64(sum as f64 / 10f64.powi(i32::from(scale)) / values as f64),
    }
}

impl AggregateFunction {
    /// Functions of a series ordered by event time: they keep every point.
    pub fn is_time_weighted(self) -> bool {
        use AggregateFunction::*;
        matches!(self, Integral | TimeWeightedAvg | Dli | RateOfChange)
    }
}

/// One aggregate of a `GROUP BY`: which function, over which input column.
#[derive(Clone, Serialize, Deserialize)]
pub struct AggregateSpec {
    pub function: AggregateFunction,
    /// Column of the aggregate's input row holding the argument (`None` for `count(*)`).
    pub argument: Option<usize>,
    /// Column holding the ordering key of `first_value`/`last_value`.
    pub order_by: Option<usize>,
    /// For `psi`: the training distribution to compare with.
    #[serde(default)]
    pub reference: Option<FeatureReference>,
    /// Column holding `FILTER (WHERE …)`'s condition, for functions that cannot take it as a
    /// NULL argument (a list keeps its NULLs): a row counts only where it is true.
    #[serde(default)]
    pub filter: Option<usize>,
}

impl AggregateSpec {
    /// Whether `row` counts for this aggregate (its FILTER holds, if it has one).
    pub fn admits(&self, row: &[Datum]) -> bool {
        self.filter
            .is_none_or(|column| row[column] == Datum::Boolean(true))
    }
}

/// As derived, without `filter` when there is none: checkpoints key a node's state by its
/// plan's text, so aggregates planned before `filter` existed resume.
impl std::fmt::Debug for AggregateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("AggregateSpec");
        out.field("function", &self.function)
            .field("argument", &self.argument)
            .field("order_by", &self.order_by)
            .field("reference", &self.reference);
        if let Some(filter) = &self.filter {
            out.field("filter", filter);
        }
        out.finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Accumulator {
    Count(i64),
    SumInt {
        sum: i128,
        values: i64,
    },
    SumFloat {
        sum: f64,
        values: i64,
    },
    Moments {
        values: i64,
        sum: f64,
        sum_of_squares: f64,
    },
    Extreme(Option<Datum>),
    /// Every value with its count: extremes under retractions, distinct counts, percentiles.
    #[serde(rename = "ExtremeMultiset")]
    Multiset(BTreeMap<Datum, i64>),
    Ordered(Option<(Datum, Datum)>),
    OrderedMultiset(BTreeMap<(Datum, Datum), i64>),
    /// Values counted into a training reference's bins (the reference travels with the counts
    /// so a group's state is self-contained).
    Histogram {
        reference: Box<FeatureReference>,
        counts: Vec<i64>,
    },
}

impl Accumulator {
    /// The empty state of one aggregate of a group.
    pub fn of(spec: &AggregateSpec, input_retracts: bool) -> Self {
        match (&spec.reference, spec.function) {
            (Some(reference), AggregateFunction::PopulationStability) => Accumulator::Histogram {
                counts: vec![0; reference.bins()],
                reference: Box::new(reference.clone()),
            },
            _ => Accumulator::new(spec.function, input_retracts),
        }
    }

    pub fn new(function: AggregateFunction, input_retracts: bool) -> Self {
        use AggregateFunction::*;
        match function {
            CountRows | Count => Accumulator::Count(0),
            SumInt | SumDecimal { .. } | AvgDecimal { .. } => {
                Accumulator::SumInt { sum: 0, values: 0 }
            }
            SumFloat => Accumulator::SumFloat {
                sum: 0.0,
                values: 0,
            },
            Avg | StddevSample | StddevPopulation | VarianceSample | VariancePopulation => {
                Accumulator::Moments {
                    values: 0,
                    sum: 0.0,
                    sum_of_squares: 0.0,
                }
            }
            Min | Max if input_retracts => Accumulator::Multiset(BTreeMap::new()),
            CountDistinct | SumDistinct | AvgDistinct | Percentile { .. } => {
                Accumulator::Multiset(BTreeMap::new())
            }
            Min | Max => Accumulator::Extreme(None),
            FirstValue | LastValue if input_retracts => {
                Accumulator::OrderedMultiset(BTreeMap::new())
            }
            FirstValue | LastValue => Accumulator::Ordered(None),
            ArrayAgg | ArrayAggDescending | ArrayAggNullsFirst | ArrayAggDescendingNullsLast => {
                Accumulator::OrderedMultiset(BTreeMap::new())
            }
            // A late point can land between two others: every point is kept.
            Integral | TimeWeightedAvg | Dli | RateOfChange => {
                Accumulator::OrderedMultiset(BTreeMap::new())
            }
            // Without a reference nothing can be binned: the result stays NULL.
            PopulationStability => Accumulator::Histogram {
                reference: Box::new(FeatureReference {
                    name: String::new(),
                    edges: Vec::new(),
                    expected: vec![1.0],
                }),
                counts: vec![0],
            },
        }
    }

    /// Adds `value` (with ordering key `order`) `diff` times; a negative diff retracts.
    pub fn update(&mut self, function: AggregateFunction, value: &Datum, order: &Datum, diff: i64) {
        let keeps_nulls = matches!(
            function,
            AggregateFunction::CountRows
                | AggregateFunction::ArrayAgg
                | AggregateFunction::ArrayAggDescending
                | AggregateFunction::ArrayAggNullsFirst
                | AggregateFunction::ArrayAggDescendingNullsLast
        );
        if value.is_null() && !keeps_nulls {
            return;
        }
        match self {
            Accumulator::Count(count) => *count += diff,
            Accumulator::SumInt { sum, values } => {
                let units = match (value, function) {
                    (Datum::Int64(v), _) => Some(i128::from(*v)),
                    (
                        Datum::Decimal { .. },
                        AggregateFunction::SumDecimal { scale }
                        | AggregateFunction::AvgDecimal { scale },
                    ) => value
                        .as_decimal()
                        .and_then(|(units, at)| crate::decimal::rescale(units, at, scale)),
                    _ => None,
                };
                if let Some(units) = units {
                    *sum = sum.saturating_add(units.saturating_mul(i128::from(diff)));
                    *values += diff;
                }
            }
            Accumulator::SumFloat { sum, values } => {
                if let Some(v) = value.as_f64() {
                    *sum += v * diff as f64;
                    *values += diff;
                }
            }
            Accumulator::Moments {
                values,
                sum,
                sum_of_squares,
            } => {
                if let Some(v) = value.as_f64() {
                    *values += diff;
                    *sum += v * diff as f64;
                    *sum_of_squares += v * v * diff as f64;
                }
            }
            Accumulator::Extreme(current) => {
                let replace = match current {
                    None => true,
                    Some(existing) => match function {
                        AggregateFunction::Min => value < existing,
                        _ => value > existing,
                    },
                };
                if replace {
                    *current = Some(value.clone());
                }
            }
            Accumulator::Multiset(values) => add_to_multiset(values, value.clone(), diff),
            Accumulator::Ordered(current) => {
                let candidate = (order.clone(), value.clone());
                let replace = match current {
                    None => true,
                    Some(existing) => match function {
                        AggregateFunction::FirstValue => candidate < *existing,
                        _ => candidate > *existing,
                    },
                };
                if replace {
                    *current = Some(candidate);
                }
            }
            Accumulator::OrderedMultiset(values) => {
                add_to_multiset(values, (order.clone(), value.clone()), diff)
            }
            Accumulator::Histogram { reference, counts } => {
                if let Some(v) = value.as_f64().filter(|v| !v.is_nan()) {
                    counts[reference.bin_of(v)] += diff;
                }
            }
        }
    }

    /// Folds `other` (the same function's state over other rows) into this one: what merging two
    /// session windows needs.
    pub fn merge(&mut self, other: Accumulator, function: AggregateFunction) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::SumInt { sum, values }, Accumulator::SumInt { sum: s, values: v }) => {
                *sum += s;
                *values += v;
            }
            (
                Accumulator::SumFloat { sum, values },
                Accumulator::SumFloat { sum: s, values: v },
            ) => {
                *sum += s;
                *values += v;
            }
            (
                Accumulator::Moments {
                    values,
                    sum,
                    sum_of_squares,
                },
                Accumulator::Moments {
                    values: v,
                    sum: s,
                    sum_of_squares: q,
                },
            ) => {
                *values += v;
                *sum += s;
                *sum_of_squares += q;
            }
            (this @ Accumulator::Extreme(_), Accumulator::Extreme(Some(value))) => {
                this.update(function, &value, &Datum::Null, 1)
            }
            (this @ Accumulator::Ordered(_), Accumulator::Ordered(Some((order, value)))) => {
                this.update(function, &value, &order, 1)
            }
            (Accumulator::Multiset(mine), Accumulator::Multiset(theirs)) => {
                for (value, count) in theirs {
                    add_to_multiset(mine, value, count);
                }
            }
            (Accumulator::OrderedMultiset(mine), Accumulator::OrderedMultiset(theirs)) => {
                for (value, count) in theirs {
                    add_to_multiset(mine, value, count);
                }
            }
            (
                Accumulator::Histogram { counts, .. },
                Accumulator::Histogram { counts: theirs, .. },
            ) => {
                for (mine, theirs) in counts.iter_mut().zip(theirs) {
                    *mine += theirs;
                }
            }
            // An empty extreme, or states of different functions (never built by one plan).
            _ => {}
        }
    }

    pub fn result(&self, function: AggregateFunction) -> Datum {
        use AggregateFunction::*;
        match self {
            Accumulator::Count(count) => Datum::Int64(*count),
            Accumulator::SumInt { values: 0, .. } | Accumulator::SumFloat { values: 0, .. } => {
                Datum::Null
            }
            Accumulator::SumInt { sum, values } => match function {
                SumDecimal { scale } => Datum::decimal(*sum, scale),
                AvgDecimal { scale } => decimal_mean(*sum, *values, scale),
                _ => Datum::Int64((*sum).clamp(i64::MIN as i128, i64::MAX as i128) as i64),
            },
            Accumulator::SumFloat { sum, .. } => Datum::Float64(*sum),
            Accumulator::Moments {
                values,
                sum,
                sum_of_squares,
            } => {
                let n = *values as f64;
                let variance = |denominator: f64| {
                    if denominator <= 0.0 {
                        return Datum::Null;
                    }
                    let mean = sum / n;
                    // Clamp: cancellation can leave a tiny negative for constant inputs.
                    Datum::Float64(((sum_of_squares - n * mean * mean) / denominator).max(0.0))
                };
                match function {
                    Avg if *values > 0 => Datum::Float64(sum / n),
                    VarianceSample => variance(n - 1.0),
                    VariancePopulation => variance(n),
                    StddevSample => sqrt(variance(n - 1.0)),
                    StddevPopulation => sqrt(variance(n)),
                    _ => Datum::Null,
                }
            }
            Accumulator::Histogram { reference, counts } => reference
                .population_stability(counts)
                .map_or(Datum::Null, Datum::Float64),
            Accumulator::Extreme(value) => value.clone().unwrap_or(Datum::Null),
            Accumulator::Multiset(values) => match function {
                CountDistinct => Datum::Int64(values.len() as i64),
                SumDistinct | AvgDistinct => sum_of_distinct(values, function == AvgDistinct),
                Percentile { millionths } => percentile(values, f64::from(millionths) / 1e6),
                Min => values.keys().next().cloned().unwrap_or(Datum::Null),
                _ => values.keys().next_back().cloned().unwrap_or(Datum::Null),
            },
            Accumulator::Ordered(value) => value
                .as_ref()
                .map(|(_, v)| v.clone())
                .unwrap_or(Datum::Null),
            Accumulator::OrderedMultiset(values) if function.is_time_weighted() => {
                time_weighted(function, values)
            }
            Accumulator::OrderedMultiset(values)
                if matches!(
                    function,
                    ArrayAgg
                        | ArrayAggDescending
                        | ArrayAggNullsFirst
                        | ArrayAggDescendingNullsLast
                ) =>
            {
                // Ascending, values whose ordering key is NULL last (SQL's ascending order) or
                // first; the descending lists are those reversed.
                let (keyed, unkeyed): (Vec<_>, Vec<_>) = values
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .partition(|((order, _), _)| !order.is_null());
                let nulls_first =
                    matches!(function, ArrayAggNullsFirst | ArrayAggDescendingNullsLast);
                let (first, then) = if nulls_first {
                    (unkeyed, keyed)
                } else {
                    (keyed, unkeyed)
                };
                let mut list: Box<[Datum]> = first
                    .into_iter()
                    .chain(then)
                    .flat_map(|((_, value), count)| {
                        std::iter::repeat_n(value.clone(), *count as usize)
                    })
                    .collect();
                if matches!(function, ArrayAggDescending | ArrayAggDescendingNullsLast) {
                    list.reverse();
                }
                if list.is_empty() {
                    Datum::Null
                } else {
                    Datum::List(list)
                }
            }
            Accumulator::OrderedMultiset(values) => {
                let entry = if function == FirstValue {
                    values.keys().next()
                } else {
                    values.keys().next_back()
                };
                entry.map(|(_, v)| v.clone()).unwrap_or(Datum::Null)
            }
        }
    }
}

/// The sum (or, with `mean`, the average) of the distinct values present: integers add up
/// exactly (clamped to 64 bits, as `sum` is), floats as floats.
fn sum_of_distinct(values: &BTreeMap<Datum, i64>, mean: bool) -> Datum {
    let present: Vec<&Datum> = values
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(value, _)| value)
        .collect();
    if present.is_empty() {
        return Datum::Null;
    }
    // Decimals of one scale add up exactly, at it.
    let scale = present[0].as_decimal().map(|(_, scale)| scale);
    let decimals: Option<i128> = present
        .iter()
        .map(|value| {
            value
                .as_decimal()
                .filter(|(_, at)| Some(*at) == scale)
                .map(|(units, _)| units)
        })
        .sum();
    if let (Some(sum), Some(scale)) = (decimals, scale) {
        return match mean {
            true => decimal_mean(sum, present.len() as i64, scale),
            false => Datum::decimal(sum, scale),
        };
    }
    let integers: Option<i128> = present
        .iter()
        .map(|value| match value {
            Datum::Int64(v) => Some(i128::from(*v)),
            _ => None,
        })
        .sum();
    match (integers, mean) {
        (Some(sum), false) => Datum::Int64(sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64),
        (Some(sum), true) => Datum::Float64(sum as f64 / present.len() as f64),
        (None, _) => {
            let sum: f64 = present.iter().filter_map(|value| value.as_f64()).sum();
            match mean {
                true => Datum::Float64(sum / present.len() as f64),
                false => Datum::Float64(sum),
            }
        }
    }
}

/// The value at `fraction` of the sorted `values` (each with its count), interpolated between
/// the two nearest (`percentile_cont`): the median of 1, 2, 3, 4 is 2.5.
fn percentile(values: &BTreeMap<Datum, i64>, fraction: f64) -> Datum {
    let total: i64 = values.values().filter(|count| **count > 0).sum();
    if total == 0 {
        return Datum::Null;
    }
    let position = fraction * (total - 1) as f64;
    let (below, above) = (position.floor() as i64, position.ceil() as i64);
    let mut seen = 0;
    let (mut low, mut high) = (None, None);
    for (value, &count) in values.iter().filter(|(_, count)| **count > 0) {
        let range = seen..seen + count;
        if low.is_none() && range.contains(&below) {
            low = value.as_f64();
        }
        if range.contains(&above) {
            high = value.as_f64();
            break;
        }
        seen += count;
    }
    match (low, high) {
        (Some(low), Some(high)) => Datum::Float64(low + (high - low) * (position - below as f64)),
        _ => Datum::Null,
    }
}

fn sqrt(datum: Datum) -> Datum {
    match datum {
        Datum::Float64(v) => Datum::Float64(v.sqrt()),
        other => other,
    }
}

fn add_to_multiset<K: Ord>(values: &mut BTreeMap<K, i64>, key: K, diff: i64) {
    match values.entry(key) {
        Entry::Occupied(mut entry) => {
            *entry.get_mut() += diff;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
        Entry::Vacant(entry) => {
            entry.insert(diff);
        }
    }
}

#[cfg(test)]
mod tests;
