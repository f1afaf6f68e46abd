use super::*;

const MINUTE: i64 = 60_000_000_000;

/// Runs `calls` over one series of `(minute, value)` rows, taking rows of one minute as
/// peers; returns each row's results.
fn run(calls: Vec<AnalyticCall>, rows: &[(i64, Option<f64>)]) -> Vec<Vec<Datum>> {
    let spec = AnalyticSpec { calls };
    let mut state = AnalyticState::start(&spec);
    take_all(&spec, &mut state, rows, &results_only())
}

/// Gives `(minute, value)` rows to `state`, the rows of one minute together; what leaves.
fn take_all(
    spec: &AnalyticSpec,
    state: &mut AnalyticState,
    rows: &[(i64, Option<f64>)],
    columns: &SeriesColumns,
) -> Vec<Vec<Datum>> {
    let rows: Vec<Row> = rows
        .iter()
        .map(|(minute, value)| {
            vec![
                Datum::Timestamp(minute * MINUTE),
                value.map_or(Datum::Null, Datum::Float64),
            ]
        })
        .collect();
    let mut results = Vec::new();
    for peers in rows.chunk_by(|a, b| a[0] == b[0]) {
        state.take(spec, peers, columns, &mut results);
    }
    results
}

/// Rows of a time column and a value, of which the results alone leave.
fn results_only() -> SeriesColumns {
    SeriesColumns {
        keys: Vec::new(),
        time: 0,
        kept: 0,
    }
}

fn call(function: Analytic) -> AnalyticCall {
    AnalyticCall {
        function,
        value: Some(1),
        float_result: false,
    }
}

fn floats(results: &[Vec<Datum>], column: usize) -> Vec<Option<f64>> {
    results.iter().map(|row| row[column].as_f64()).collect()
}

#[test]
fn lag_looks_back_by_rows_and_gives_its_default_before() {
    let rows = [(0, Some(1.0)), (1, Some(2.0)), (2, None), (3, Some(4.0))];
    let results = run(
        vec![
            call(Analytic::Lag {
                offset: 1,
                default: Datum::Null,
            }),
            call(Analytic::Lag {
                offset: 2,
                default: Datum::Float64(0.0),
            }),
            call(Analytic::RowNumber),
        ],
        &rows,
    );
    assert_eq!(floats(&results, 0), [None, Some(1.0), Some(2.0), None]);
    assert_eq!(
        floats(&results, 1),
        [Some(0.0), Some(0.0), Some(1.0), Some(2.0)]
    );
    assert_eq!(
        floats(&results, 2),
        [Some(1.0), Some(2.0), Some(3.0), Some(4.0)]
    );
}

#[test]
fn lead_gives_each_row_at_once_and_corrects_it_when_its_later_row_comes() {
    let rows = [(0, Some(1.0)), (1, Some(2.0)), (2, None), (3, Some(4.0))];
    let lead = |offset, default| {
        call(Analytic::Lead {
            offset,
            default: Datum::Float64(default),
        })
    };
    let updates = run(
        vec![lead(1, -1.0), call(Analytic::RowNumber), lead(2, 0.0)],
        &rows,
    );
    let shown = |row: &Row| -> String {
        row.iter()
            .map(|datum| datum.as_f64().map_or("-".into(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // (LEAD 1, row number, LEAD 2, diff): each row given with its defaults, then retracted
    // and given again as each later row it looks at comes.
    assert_eq!(
        updates.iter().map(shown).collect::<Vec<_>>(),
        [
            "-1 1 0 1",
            "-1 1 0 -1",
            "2 1 0 1",
            "-1 2 0 1",
            "2 1 0 -1",
            "2 1 - 1",
            "-1 2 0 -1",
            "- 2 0 1",
            "-1 3 0 1",
            "- 2 0 -1",
            "- 2 4 1",
            "-1 3 0 -1",
            "4 3 0 1",
            "-1 4 0 1",
        ]
    );
    // Only the rows a LEAD can still change are kept.
    let spec = AnalyticSpec {
        calls: vec![lead(2, 0.0)],
    };
    let mut state = AnalyticState::start(&spec);
    let mut out = Vec::new();
    for minute in 0..10 {
        let row = vec![Datum::Timestamp(minute * MINUTE), Datum::Float64(1.0)];
        state.take(&spec, &[row], &results_only(), &mut out);
    }
    assert!(matches!(&state.0[1], CallState::Given(given) if given.len() == 2));
}

/// What signed rows (a last column of +1 or -1) add up to, in the order rows first came.
fn contents(updates: &[Row]) -> Vec<Row> {
    let mut held: Vec<(Row, i64)> = Vec::new();
    for update in updates {
        let (diff, row) = update.split_last().unwrap();
        let diff = match diff {
            Datum::Int64(diff) => *diff,
            other => panic!("not a diff: {other:?}"),
        };
        match held.iter_mut().find(|(held, _)| held == row) {
            Some((_, count)) => *count += diff,
            None => held.push((row.to_vec(), diff)),
        }
    }
    assert!(held.iter().all(|(_, count)| *count >= 0), "{held:?}");
    held.into_iter()
        .flat_map(|(row, count)| std::iter::repeat_n(row, count as usize))
        .collect()
}

#[test]
fn a_frame_reaching_after_its_row_is_corrected_as_those_rows_come() {
    let rows = [
        (0, Some(1.0)),
        (1, Some(3.0)),
        (2, Some(5.0)),
        (3, Some(7.0)),
    ];
    let around = |aggregate, preceding, following| {
        call(Analytic::Running {
            aggregate,
            frame: Frame::RowsAround {
                preceding,
                following,
            },
        })
    };
    let updates = run(
        vec![
            around(AggregateFunction::Avg, 1, 1),
            around(AggregateFunction::Max, 0, 2),
            around(AggregateFunction::CountRows, 2, 1),
        ],
        &rows,
    );
    let row = |mean: f64, top: f64, count: i64| {
        vec![
            Datum::Float64(mean),
            Datum::Float64(top),
            Datum::Int64(count),
        ]
    };
    assert_eq!(
        contents(&updates),
        [
            row(2.0, 5.0, 2),
            row(3.0, 7.0, 3),
            row(5.0, 7.0, 4),
            row(6.0, 7.0, 3),
        ]
    );
}

#[test]
fn a_frame_reaching_a_length_of_time_ahead_is_corrected_by_the_rows_within_it() {
    // Minutes 0, 1, 1, 3, 6: a frame of a minute either side.
    let rows = [
        (0, Some(1.0)),
        (1, Some(3.0)),
        (1, Some(5.0)),
        (3, Some(7.0)),
        (6, Some(9.0)),
    ];
    let spec = AnalyticSpec {
        calls: vec![call(Analytic::Running {
            aggregate: AggregateFunction::SumFloat,
            frame: Frame::RangeAround {
                preceding_nanos: MINUTE,
                following_nanos: MINUTE,
            },
        })],
    };
    let mut state = AnalyticState::start(&spec);
    // The given rows keep the time column (column 0) as the engine's do.
    let columns = SeriesColumns {
        keys: Vec::new(),
        time: 0,
        kept: 1,
    };
    let updates = take_all(&spec, &mut state, &rows, &columns);
    let row = |minute: i64, sum: f64| vec![Datum::Timestamp(minute * MINUTE), Datum::Float64(sum)];
    assert_eq!(
        contents(&updates),
        [
            row(0, 9.0),
            row(1, 9.0),
            row(1, 9.0),
            row(3, 7.0),
            row(6, 9.0)
        ]
    );
    // Only minute 6 can still change: the rows before it within its reach stay.
    let CallState::Given(given) = &state.0[1] else {
        panic!("given rows")
    };
    assert_eq!(given.len(), 1);
}

#[test]
fn frames_of_rows_and_of_time_end_at_the_current_row() {
    // Two rows at minute 2: peers.
    let rows = [
        (0, Some(1.0)),
        (1, Some(3.0)),
        (2, Some(5.0)),
        (2, Some(7.0)),
        (10, Some(9.0)),
    ];
    let running = |aggregate, frame| call(Analytic::Running { aggregate, frame });
    let results = run(
        vec![
            running(AggregateFunction::Avg, Frame::Rows { preceding: Some(1) }),
            running(AggregateFunction::SumFloat, Frame::Rows { preceding: None }),
            running(
                AggregateFunction::SumFloat,
                Frame::Range {
                    preceding_nanos: None,
                },
            ),
            running(
                AggregateFunction::Max,
                Frame::Range {
                    preceding_nanos: Some(2 * MINUTE),
                },
            ),
            running(
                AggregateFunction::CountRows,
                Frame::Range {
                    preceding_nanos: Some(MINUTE),
                },
            ),
        ],
        &rows,
    );
    assert_eq!(
        floats(&results, 0),
        [Some(1.0), Some(2.0), Some(4.0), Some(6.0), Some(8.0)]
    );
    assert_eq!(
        floats(&results, 1),
        [Some(1.0), Some(4.0), Some(9.0), Some(16.0), Some(25.0)]
    );
    // RANGE includes the peers: both rows of minute 2 see 16.
    assert_eq!(
        floats(&results, 2),
        [Some(1.0), Some(4.0), Some(16.0), Some(16.0), Some(25.0)]
    );
    assert_eq!(
        floats(&results, 3),
        [Some(1.0), Some(3.0), Some(7.0), Some(7.0), Some(9.0)]
    );
    assert_eq!(
        floats(&results, 4),
        [Some(1.0), Some(2.0), Some(3.0), Some(3.0), Some(1.0)]
    );
}

#[test]
fn a_series_restored_from_a_checkpoint_goes_on_as_if_never_stopped() {
    use vibelux_interfaces::checkpoint::{decode, encode};
    let spec = AnalyticSpec {
        calls: vec![
            call(Analytic::Lag {
                offset: 2,
                default: Datum::Null,
            }),
            call(Analytic::Running {
                aggregate: AggregateFunction::Avg,
                frame: Frame::Range {
                    preceding_nanos: Some(3 * MINUTE),
                },
            }),
            call(Analytic::Running {
                aggregate: AggregateFunction::Max,
                frame: Frame::Rows { preceding: None },
            }),
        ],
    };
    let rows: Vec<Row> = (0..8)
        .map(|minute| {
            vec![
                Datum::Timestamp(minute * MINUTE),
                Datum::Float64((minute * 7 % 5) as f64),
            ]
        })
        .collect();
    let take = |state: &mut AnalyticState, row: &Row| {
        let mut out = Vec::new();
        state.take(&spec, std::slice::from_ref(row), &results_only(), &mut out);
        out.pop().unwrap()
    };
    let mut whole = AnalyticState::start(&spec);
    let expected: Vec<Row> = rows.iter().map(|row| take(&mut whole, row)).collect();
    let mut first = AnalyticState::start(&spec);
    let mut results: Vec<Row> = rows[..5].iter().map(|row| take(&mut first, row)).collect();
    let mut restored: AnalyticState = decode("series", &encode(&first)).unwrap();
    results.extend(rows[5..].iter().map(|row| take(&mut restored, row)));
    assert_eq!(
        results
            .iter()
            .map(|row| format!("{row:?}"))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|row| format!("{row:?}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_aggregate_over_nulls_only_is_null_and_counts_skip_them() {
    let rows = [(0, None), (1, Some(2.0)), (2, None)];
    let running = |aggregate| {
        call(Analytic::Running {
            aggregate,
            frame: Frame::Rows { preceding: Some(0) },
        })
    };
    let results = run(
        vec![
            running(AggregateFunction::Avg),
            running(AggregateFunction::Count),
        ],
        &rows,
    );
    assert_eq!(floats(&results, 0), [None, Some(2.0), None]);
    assert_eq!(floats(&results, 1), [Some(0.0), Some(1.0), Some(0.0)]);
}
