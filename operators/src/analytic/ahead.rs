//! Rows whose results read later rows (`LEAD`, frames reaching rows or time ahead): each leaves
//! with what is known when it leaves, and is retracted and given again as the rows it reads
//! come. A series keeps its last rows as they left for that, as many as the furthest `LEAD` or
//! `ROWS` frame counts and as far back as the furthest `RANGE` frame reaches.

use std::collections::VecDeque;

use super::totals::frame_result;
use super::{Analytic, AnalyticSpec, CallState, Frame, stored, value_of};
use crate::in_event_time::SeriesColumns;
use crate::row::{Datum, Row};

/// Gives the peers' rows as updates (a last column of +1 or -1), after retracting and giving
/// again each earlier row whose `LEAD` one of them is or whose frame it enters: `results` are
/// the peers' rows with their `LEAD`s at the defaults (frames reaching after their rows are
/// computed here), `given` the series' last rows as they left.
pub(super) fn look_ahead(
    spec: &AnalyticSpec,
    states: &mut [CallState],
    columns: &SeriesColumns,
    (peers, results): (&[Row], Vec<Row>),
    given: &mut VecDeque<Row>,
    out: &mut Vec<Row>,
) {
    let (kept, time) = (columns.kept, columns.time);
    // A `RANGE` frame reads the given rows' event times: they keep the series' columns, the
    // event time among them.
    debug_assert!(spec.time_ahead().is_none() || time < kept);
    let time_of = |row: &Row| row[time].as_timestamp_nanos().unwrap_or(i64::MIN);
    let earlier = given.len();
    // The earlier rows' versions as they left, for those a peer changes.
    let mut retracted: Vec<Option<Row>> = vec![None; earlier];
    for (peer, result) in peers.iter().zip(results) {
        given.push_back(result);
        let newest = given.len() - 1;
        for (index, (call, state)) in spec.calls.iter().zip(states.iter_mut()).enumerate() {
            // Each row this peer changes (`back` rows before it), and its new result.
            let changed: Vec<(usize, Datum)> = match (&call.function, state) {
                (Analytic::Lead { offset, .. }, _) if (1..=newest).contains(offset) => {
                    vec![(*offset, value_of(call, peer))]
                }
                (
                    Analytic::Running {
                        aggregate,
                        frame:
                            Frame::RowsAround {
                                preceding,
                                following,
                            },
                    },
                    CallState::Frame(values),
                ) => {
                    values.push_back((0, value_of(call, peer)));
                    let (preceding, following) = (*preceding as usize, *following as usize);
                    while values.len() > preceding + following + 1 {
                        values.pop_front();
                    }
                    // The frame of the row `back` before the newest: up to `preceding` rows
                    // before it, and the rows after it so far.
                    (0..=following.min(newest))
                        .map(|back| {
                            let end = values.len() - 1 - back;
                            let start = end.saturating_sub(preceding);
                            let frame = values.range(start..).map(|(_, value)| value);
                            (back, frame_result(*aggregate, frame))
                        })
                        .collect()
                }
                (
                    Analytic::Running {
                        aggregate,
                        frame:
                            Frame::RangeAround {
                                preceding_nanos,
                                following_nanos,
                            },
                    },
                    CallState::Frame(values),
                ) => {
                    let at = time_of(peer);
                    values.push_back((at, value_of(call, peer)));
                    // Rows before `at - following` can change no more, nor can the values
                    // before their frames.
                    let changing_from = at.saturating_sub(*following_nanos);
                    let needed_from = changing_from.saturating_sub(*preceding_nanos);
                    while values.front().is_some_and(|(ts, _)| *ts < needed_from) {
                        values.pop_front();
                    }
                    // The frame of each given row this peer is within reach of, newest first.
                    (0..=newest)
                        .map_while(|back| {
                            let row_time = time_of(&given[newest - back]);
                            (row_time >= changing_from).then(|| {
                                let (from, to) = (
                                    row_time.saturating_sub(*preceding_nanos),
                                    row_time.saturating_add(*following_nanos),
                                );
                                let frame = values
                                    .iter()
                                    .filter(|(ts, _)| (from..=to).contains(ts))
                                    .map(|(_, value)| value);
                                (back, frame_result(*aggregate, frame))
                            })
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            for (back, result) in changed {
                let target = newest - back;
                if target < earlier && retracted[target].is_none() {
                    retracted[target] = Some(given[target].clone());
                }
                given[target][kept + index] = stored(call, result);
            }
        }
    }
    let signed = |row: &Row, diff: i64| {
        let mut signed = row.clone();
        signed.push(Datum::Int64(diff));
        signed
    };
    for (before, now) in retracted.iter().zip(given.iter()) {
        if let Some(before) = before.as_ref().filter(|before| *before != now) {
            out.push(signed(before, -1));
            out.push(signed(now, 1));
        }
    }
    out.extend(given.iter().skip(earlier).map(|row| signed(row, 1)));
    // A row goes once no `LEAD` or `ROWS` frame counts it among the rows before the newest,
    // and it is further back in time than any `RANGE` frame reaches.
    let (rows, reach) = (spec.rows_ahead(), spec.time_ahead());
    let gone_before = reach.map(|reach| {
        let newest_time = given.back().map_or(i64::MIN, time_of);
        newest_time.saturating_sub(reach)
    });
    while given.len() > rows
        && given
            .front()
            .is_some_and(|row| gone_before.is_none_or(|before| time_of(row) < before))
    {
        given.pop_front();
    }
}
