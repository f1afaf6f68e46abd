use super::*;
use AggregateFunction::*;

fn series(function: AggregateFunction, points: &[(i64, f64, i64)]) -> Datum {
    let mut accumulator = Accumulator::new(function, false);
    for (seconds, value, diff) in points {
        let ts = Datum::Timestamp(seconds * 1_000_000_000);
        accumulator.update(function, &Datum::Float64(*value), &ts, *diff);
    }
    accumulator.result(function)
}

#[test]
fn decimal_sums_and_means_are_exact_and_follow_retractions_and_merges() {
    let cents = |units: i128| Datum::decimal(units, 2);
    let sum = AggregateFunction::SumDecimal { scale: 2 };
    let avg = AggregateFunction::AvgDecimal { scale: 2 };
    for function in [sum, avg] {
        let mut first = Accumulator::new(function, true);
        for (value, diff) in [(10, 1), (20, 1), (99, 1), (99, -1)] {
            first.update(function, &cents(value), &Datum::Null, diff);
        }
        let mut second = Accumulator::new(function, true);
        second.update(function, &cents(1), &Datum::Null, 1);
        first.merge(second, function);
        let expected = match function == sum {
            true => cents(31),
            // 0.31 / 3, to six digits, truncated.
            false => Datum::decimal(103_333, 6),
        };
        assert_eq!(first.result(function), expected);
    }
    assert_eq!(
        Accumulator::new(sum, false).result(sum),
        Datum::Null,
        "a sum of nothing"
    );
}

#[test]
fn distinct_counts_and_percentiles_follow_retractions_and_merges() {
    let values = |function: AggregateFunction, updates: &[(f64, i64)]| {
        let mut accumulator = Accumulator::new(function, true);
        for (value, diff) in updates {
            accumulator.update(function, &Datum::Float64(*value), &Datum::Null, *diff);
        }
        accumulator
    };
    let updates = [(3.0, 1), (1.0, 1), (2.0, 2), (4.0, 1), (9.0, 1), (9.0, -1)];
    assert_eq!(
        values(CountDistinct, &updates).result(CountDistinct),
        Datum::Int64(4)
    );
    let median = Percentile {
        millionths: 500_000,
    };
    // 1, 2, 2, 3, 4: the middle value; 1, 2, 2, 3: halfway between 2 and 2.
    assert_eq!(values(median, &updates).result(median), Datum::Float64(2.0));
    assert_eq!(
        values(median, &[(1.0, 1), (2.0, 2), (3.0, 1), (5.0, 1), (5.0, -1)]).result(median),
        Datum::Float64(2.0)
    );
    assert_eq!(
        values(median, &[(1.0, 1), (4.0, 1)]).result(median),
        Datum::Float64(2.5)
    );
    let ninetieth = Percentile {
        millionths: 900_000,
    };
    // Positions 0..=4 of 1, 2, 2, 3, 4: 3.6 lies between 3 and 4.
    let result = values(ninetieth, &updates).result(ninetieth);
    assert!(
        matches!(result, Datum::Float64(v) if (v - 3.6).abs() < 1e-12),
        "{result:?}"
    );
    assert_eq!(
        values(median, &[(7.0, 1), (7.0, -1)]).result(median),
        Datum::Null
    );
    // Two session windows merged: the union of their values.
    // 2.0 came twice and went once: it still counts, once; 3.0 came and went.
    let distinct = [(1.0, 1), (2.0, 1), (2.0, 1), (3.0, 1), (3.0, -1), (2.0, -1)];
    assert_eq!(
        values(SumDistinct, &distinct).result(SumDistinct),
        Datum::Float64(3.0)
    );
    assert_eq!(
        values(AvgDistinct, &distinct).result(AvgDistinct),
        Datum::Float64(1.5)
    );
    assert_eq!(values(SumDistinct, &[]).result(SumDistinct), Datum::Null);
    let mut merged = values(CountDistinct, &[(1.0, 1), (2.0, 1)]);
    merged.merge(values(CountDistinct, &[(2.0, 1), (5.0, 1)]), CountDistinct);
    assert_eq!(merged.result(CountDistinct), Datum::Int64(3));
}

#[test]
fn dli_of_900_micromoles_for_12_hours_is_38_88() {
    let day = [(0, 900.0, 1), (6 * 3600, 900.0, 1), (12 * 3600, 900.0, 1)];
    assert_eq!(series(Dli, &day), Datum::Float64(38.88));
}

#[test]
fn time_weighting_bridges_gaps_and_late_points_correct_it() {
    // 10 for 60 s then a ramp to 20 over 60 s: integral 600 + 900.
    let points = [(0, 10.0, 1), (60, 10.0, 1), (120, 20.0, 1)];
    assert_eq!(series(Integral, &points), Datum::Float64(1500.0));
    assert_eq!(series(TimeWeightedAvg, &points), Datum::Float64(12.5));
    assert_eq!(series(RateOfChange, &points), Datum::Float64(10.0 / 120.0));
    // A late point at 90 s, and its retraction, change the shape and back.
    let late = [(0, 10.0, 1), (60, 10.0, 1), (120, 20.0, 1), (90, 10.0, 1)];
    assert_eq!(series(Integral, &late), Datum::Float64(1350.0));
    let retracted = [
        (0, 10.0, 1),
        (60, 10.0, 1),
        (120, 20.0, 1),
        (90, 10.0, 1),
        (90, 10.0, -1),
    ];
    assert_eq!(series(Integral, &retracted), Datum::Float64(1500.0));
    assert_eq!(series(RateOfChange, &[(5, 1.0, 1)]), Datum::Null);
    assert_eq!(series(TimeWeightedAvg, &[(5, 7.0, 1)]), Datum::Float64(7.0));
}

#[test]
fn array_agg_lists_values_in_key_order_with_nulls_and_follows_retractions() {
    let mut list = Accumulator::new(ArrayAgg, true);
    let key = |k: i64| Datum::Int64(k);
    for (value, order, diff) in [
        (Datum::Float64(3.0), key(2), 1),
        (Datum::Null, key(1), 1),
        (Datum::Float64(9.0), Datum::Null, 1),
        (Datum::Float64(5.0), key(3), 2),
        (Datum::Float64(5.0), key(3), -1),
    ] {
        list.update(ArrayAgg, &value, &order, diff);
    }
    let expected = [
        Datum::Null,
        Datum::Float64(3.0),
        Datum::Float64(5.0),
        Datum::Float64(9.0),
    ];
    assert_eq!(list.result(ArrayAgg), Datum::List(expected.into()));
    for (value, order) in [
        (Datum::Null, key(1)),
        (Datum::Float64(3.0), key(2)),
        (Datum::Float64(5.0), key(3)),
        (Datum::Float64(9.0), Datum::Null),
    ] {
        list.update(ArrayAgg, &value, &order, -1);
    }
    assert_eq!(list.result(ArrayAgg), Datum::Null);
}

fn run(function: AggregateFunction, retracts: bool, updates: &[(f64, i64)]) -> Datum {
    let mut accumulator = Accumulator::new(function, retracts);
    for (value, diff) in updates {
        accumulator.update(function, &Datum::Float64(*value), &Datum::Null, *diff);
    }
    accumulator.result(function)
}

#[test]
fn averages_and_deviations_follow_their_textbook_definitions() {
    let values = [
        (2.0, 1),
        (4.0, 1),
        (4.0, 1),
        (4.0, 1),
        (5.0, 1),
        (5.0, 1),
        (7.0, 1),
        (9.0, 1),
    ];
    assert_eq!(run(Avg, false, &values), Datum::Float64(5.0));
    assert_eq!(run(StddevPopulation, false, &values), Datum::Float64(2.0));
    assert_eq!(
        run(VarianceSample, false, &values),
        Datum::Float64(32.0 / 7.0)
    );
}

#[test]
fn a_retracted_maximum_falls_back_to_the_next_value() {
    assert_eq!(
        run(Max, true, &[(3.0, 1), (9.0, 1), (9.0, -1)]),
        Datum::Float64(3.0)
    );
    assert_eq!(run(Min, true, &[(3.0, 1), (3.0, -1)]), Datum::Null);
}

#[test]
fn sample_deviation_of_one_value_is_null() {
    assert_eq!(run(StddevSample, false, &[(3.0, 1)]), Datum::Null);
    assert_eq!(run(SumFloat, false, &[]), Datum::Null);
}

#[test]
fn first_and_last_value_follow_the_ordering_key_not_arrival() {
    let mut first = Accumulator::new(FirstValue, false);
    let mut last = Accumulator::new(LastValue, false);
    for (order, value) in [(5, "b"), (1, "a"), (9, "c")] {
        let (order, value) = (Datum::Timestamp(order), Datum::Utf8(value.into()));
        first.update(FirstValue, &value, &order, 1);
        last.update(LastValue, &value, &order, 1);
    }
    assert_eq!(first.result(FirstValue), Datum::Utf8("a".into()));
    assert_eq!(last.result(LastValue), Datum::Utf8("c".into()));
}

#[test]
fn merged_states_equal_the_state_over_all_rows() {
    for function in [Avg, Max, StddevSample, SumFloat, FirstValue] {
        let mut left = Accumulator::new(function, false);
        let mut right = Accumulator::new(function, false);
        let mut all = Accumulator::new(function, false);
        for (index, value) in [3.0, 1.0, 4.0, 1.5, 9.0].into_iter().enumerate() {
            let order = Datum::Int64(index as i64);
            let side = if index % 2 == 0 {
                &mut left
            } else {
                &mut right
            };
            side.update(function, &Datum::Float64(value), &order, 1);
            all.update(function, &Datum::Float64(value), &order, 1);
        }
        left.merge(right, function);
        assert_eq!(left.result(function), all.result(function), "{function:?}");
    }
}

#[test]
fn nulls_are_ignored_except_by_count_rows() {
    let mut count = Accumulator::new(Count, false);
    let mut rows = Accumulator::new(CountRows, false);
    for value in [Datum::Null, Datum::Int64(1)] {
        count.update(Count, &value, &Datum::Null, 1);
        rows.update(CountRows, &value, &Datum::Null, 1);
    }
    assert_eq!(count.result(Count), Datum::Int64(1));
    assert_eq!(rows.result(CountRows), Datum::Int64(2));
}
