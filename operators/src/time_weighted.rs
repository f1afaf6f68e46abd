//! The time-weighted aggregates (`integral`, `time_weighted_avg`, `dli`, `rate_of_change`):
//! one computation for the streaming accumulators and for `vibelux query` over the warehouse,
//! so a day's DLI is the same number in a live view and in a query.

use std::collections::BTreeMap;

use crate::accumulator::AggregateFunction;
use crate::row::Datum;

/// The time-weighted functions over the points of a streaming group, ordered by event time.
pub(crate) fn time_weighted(
    function: AggregateFunction,
    points: &BTreeMap<(Datum, Datum), i64>,
) -> Datum {
    let points = points.iter().filter_map(|((order, value), &count)| {
        Some((order.as_timestamp_nanos()?, value.as_f64()?, count))
    });
    time_weighted_value(function, points).map_or(Datum::Null, Datum::Float64)
}

/// A time-weighted function of `(nanoseconds, value, count)` points in time order (the same
/// for streaming views and for ad-hoc queries over the warehouse); `None` for SQL's NULL.
///
/// Gap policy: consecutive readings are joined by a straight line, however far apart, and
/// nothing is extrapolated before the first reading or after the last. A window's integral
/// covers the span its readings cover. Several readings at one instant count as their mean;
/// points with a count of zero or less (retracted) are left out.
pub fn time_weighted_value(
    function: AggregateFunction,
    points: impl IntoIterator<Item = (i64, f64, i64)>,
) -> Option<f64> {
    use AggregateFunction::*;
    // (seconds, value), one per instant.
    let mut series: Vec<(f64, f64)> = Vec::new();
    let mut instant: Option<(i64, f64, i64)> = None; // nanos, sum, count
    for (nanos, value, count) in points {
        if count <= 0 {
            continue;
        }
        match &mut instant {
            Some((at, sum, n)) if *at == nanos => {
                *sum += value * count as f64;
                *n += count;
            }
            _ => {
                if let Some((at, sum, n)) = instant {
                    series.push((at as f64 / 1e9, sum / n as f64));
                }
                instant = Some((nanos, value * count as f64, count));
            }
        }
    }
    if let Some((at, sum, n)) = instant {
        series.push((at as f64 / 1e9, sum / n as f64));
    }
    let (first, last) = (series.first()?, series.last()?);
    let span = last.0 - first.0;
    let integral: f64 = series
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].0) * (pair[0].1 + pair[1].1) / 2.0)
        .sum();
    match function {
        Integral => Some(integral),
        Dli => Some(integral / 1e6),
        TimeWeightedAvg if span > 0.0 => Some(integral / span),
        TimeWeightedAvg => Some(first.1),
        RateOfChange if span > 0.0 => Some((last.1 - first.1) / span),
        _ => None,
    }
}
