//! Analytic window functions over a series in event-time order: `LAG(value, n)`, `ROW_NUMBER()`
//! and aggregates over the rows up to the current one, `avg(temp_c) OVER (PARTITION BY sensor_id
//! ORDER BY ts ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)`, or `RANGE BETWEEN INTERVAL '10
//! minutes' PRECEDING AND CURRENT ROW`, or from the series' start.
//!
//! A row's results depend only on the rows of its series at or before its event time, which
//! `in_event_time.rs` hands over in order once no earlier row can come: each row leaves once,
//! final, with its results appended (an append-only stream, like the readings). A series keeps
//! only what its frames need: `n` values for `LAG`, the rows of a bounded frame, running totals
//! for a frame from the start (a spread's accumulator).
//!
//! `LEAD(value, n)` needs a row that may never come (a sensor's last reading has no next one
//! until it reports again, perhaps never): holding a row back until then would hold back every
//! window and checkpoint downstream with it. So a series with `LEAD` does what an incremental
//! view does instead: each row leaves when it is taken, with the values known then (the default
//! where its `n`-th next row has not come), and when that row comes the earlier one is retracted
//! and given again with its value. Such a node's output is updates, not a stream; a series
//! keeps its last `n` rows as given, to retract them. (Frames ending after the current row are
//! not here yet.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vibelux_interfaces::checkpoint::Participant;

use crate::accumulator::{Accumulator, AggregateFunction};
use crate::in_event_time::{PerSeries, SeriesColumns, in_event_time_order};
use crate::row::{Datum, Row, Update};
use ahead::look_ahead;
use totals::{Totals, frame_result};

mod ahead;
mod totals;

/// The functions of one `OVER` clause, each appending a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticSpec {
    pub calls: Vec<AnalyticCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticCall {
    pub function: Analytic,
    /// The column holding the function's value (none for `ROW_NUMBER()` and `count(*)`).
    pub value: Option<usize>,
    /// Whether the result column is stored as a double (a count or row number typed as an
    /// unsigned integer is).
    pub float_result: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Analytic {
    /// The value `offset` rows earlier in the series, or `default` before there were as many.
    Lag { offset: usize, default: Datum },
    /// The value `offset` rows later in the series, or `default` until that row comes.
    Lead { offset: usize, default: Datum },
    /// The row's position in its series, from 1.
    RowNumber,
    /// An aggregate over the frame ending at the current row.
    Running {
        /// One [`runs`] takes.
        aggregate: AggregateFunction,
        frame: Frame,
    },
}

impl AnalyticSpec {
    /// Whether a `LEAD` or a frame reads rows after each row (if not, every row's results are
    /// final when it leaves, and the node is a stream).
    pub fn looks_ahead(&self) -> bool {
        self.rows_ahead() > 0 || self.time_ahead().is_some()
    }

    /// How many rows later the furthest `LEAD` or `ROWS` frame looks.
    fn rows_ahead(&self) -> usize {
        self.calls
            .iter()
            .map(|call| match call.function {
                Analytic::Lead { offset, .. } => offset,
                Analytic::Running {
                    frame: Frame::RowsAround { following, .. },
                    ..
                } => following as usize,
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// How far after its time (nanoseconds) the furthest `RANGE` frame looks, if one does.
    fn time_ahead(&self) -> Option<i64> {
        self.calls
            .iter()
            .filter_map(|call| match call.function {
                Analytic::Running {
                    frame:
                        Frame::RangeAround {
                            following_nanos, ..
                        },
                    ..
                } => Some(following_nanos),
                _ => None,
            })
            .max()
    }
}

/// Whether a frame computes `function`; [`array_agg`](AggregateFunction::ArrayAgg) only over a
/// bounded frame (from the series' start it would hold every value).
pub fn runs(function: AggregateFunction) -> bool {
    use AggregateFunction::*;
    // Running totals, or an aggregate's moments, or the frame's values.
    Totals::computes(function)
        || matches!(
            function,
            StddevSample | StddevPopulation | VarianceSample | VariancePopulation | ArrayAgg
        )
}

/// Where a frame starts; every frame here ends at the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (`None`: `UNBOUNDED PRECEDING`).
    Rows { preceding: Option<u64> },
    /// `RANGE BETWEEN d PRECEDING AND CURRENT ROW`, `d` in nanoseconds of event time (`None`:
    /// `UNBOUNDED PRECEDING`, SQL's default with `ORDER BY`). The current row's peers (rows of
    /// the same instant) are in its frame.
    Range { preceding_nanos: Option<i64> },
    /// `ROWS BETWEEN p PRECEDING AND f FOLLOWING`: a row's result changes as the `f` rows after
    /// it come, like a `LEAD`'s.
    RowsAround { preceding: u64, following: u64 },
    /// `RANGE BETWEEN p PRECEDING AND f FOLLOWING` (nanoseconds of event time, `p` may be 0 for
    /// `CURRENT ROW`): a row's result changes as the rows of the `f` after its time come.
    RangeAround {
        preceding_nanos: i64,
        following_nanos: i64,
    },
}

impl Frame {
    fn includes_peers(self) -> bool {
        matches!(self, Frame::Range { .. })
    }
}

/// What one call keeps for a series.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum CallState {
    /// The last values, most recent last (at most the offset of `LAG`).
    Earlier(VecDeque<Datum>),
    Rows(u64),
    /// A frame from the series' start: every value folded in.
    Totals(Totals),
    /// A bounded frame's rows: event time and value, oldest first.
    Frame(VecDeque<(i64, Datum)>),
    /// `LEAD`'s: nothing of its own (the rows it changes are the series').
    Lead,
    /// After the calls' states, in a series whose spec looks ahead: its last rows as they left
    /// (the kept columns and the results), oldest first, which a `LEAD` or a frame reaching
    /// after its row may still change.
    Given(VecDeque<Row>),
    /// A frame from the series' start of an aggregate [`Totals`] does not keep (the spread of
    /// values). Last, so that checkpoints of the other states read as before.
    Accumulated(Accumulator),
}

/// A series' state: one per call of the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyticState(Vec<CallState>);

fn value_of(call: &AnalyticCall, row: &Row) -> Datum {
    call.value.map_or(Datum::Null, |column| row[column].clone())
}

/// A result as its column stores it.
fn stored(call: &AnalyticCall, result: Datum) -> Datum {
    match (call.float_result, result) {
        (true, Datum::Int64(whole)) => Datum::Float64(whole as f64),
        (_, result) => result,
    }
}

impl PerSeries for AnalyticState {
    type Spec = AnalyticSpec;

    fn start(spec: &AnalyticSpec) -> Self {
        let given = spec
            .looks_ahead()
            .then(|| CallState::Given(VecDeque::new()));
        AnalyticState(
            spec.calls
                .iter()
                .map(|call| match &call.function {
                    Analytic::Lag { .. } => CallState::Earlier(VecDeque::new()),
                    Analytic::Lead { .. } => CallState::Lead,
                    Analytic::RowNumber => CallState::Rows(0),
                    Analytic::Running {
                        aggregate,
                        frame:
                            Frame::Rows { preceding: None }
                            | Frame::Range {
                                preceding_nanos: None,
                            },
                    } if Totals::computes(*aggregate) => CallState::Totals(Totals::default()),
                    Analytic::Running {
                        aggregate,
                        frame:
                            Frame::Rows { preceding: None }
                            | Frame::Range {
                                preceding_nanos: None,
                            },
                    } => CallState::Accumulated(Accumulator::new(*aggregate, false)),
                    Analytic::Running { .. } => CallState::Frame(VecDeque::new()),
                })
                .chain(given)
                .collect(),
        )
    }

    fn take(
        &mut self,
        spec: &AnalyticSpec,
        peers: &[Row],
        columns: &SeriesColumns,
        out: &mut Vec<Row>,
    ) {
        let mut results: Vec<Row> = peers
            .iter()
            .map(|row| row[..columns.kept].to_vec())
            .collect();
        for (call, state) in spec.calls.iter().zip(&mut self.0) {
            for (row, result) in results
                .iter_mut()
                .zip(take_call(call, state, peers, columns.time))
            {
                row.push(stored(call, result));
            }
        }
        let (calls, given) = self.0.split_at_mut(spec.calls.len());
        match given {
            [CallState::Given(given)] => {
                look_ahead(spec, calls, columns, (peers, results), given, out);
            }
            _ => out.extend(results),
        }
    }
}

/// Appends the analytic functions' columns to every row, in event-time order per series.
pub trait AnalyticExt<'scope> {
    fn analytic(
        self,
        spec: Arc<AnalyticSpec>,
        columns: SeriesColumns,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>>;

    /// The same for a spec that looks ahead (`LEAD`): the rows as they change.
    fn analytic_updates(
        self,
        spec: Arc<AnalyticSpec>,
        columns: SeriesColumns,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>>;
}

impl<'scope> AnalyticExt<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn analytic(
        self,
        spec: Arc<AnalyticSpec>,
        columns: SeriesColumns,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Row>> {
        in_event_time_order::<AnalyticState>(
            self,
            ("Analytic", "analytic functions' series"),
            spec,
            columns,
            stop,
            checkpointing,
        )
    }

    fn analytic_updates(
        self,
        spec: Arc<AnalyticSpec>,
        columns: SeriesColumns,
        stop: Arc<AtomicBool>,
        checkpointing: Option<Participant>,
    ) -> Stream<'scope, u64, Vec<Update>> {
        self.analytic(spec, columns, stop, checkpointing).unary(
            Pipeline,
            "AnalyticUpdates",
            |_, _| {
                |input, output| {
                    input.for_each(|time, data| {
                        let Some(&now) = time.least() else { return };
                        let mut updates: Vec<Update> = data
                            .drain(..)
                            .map(|mut row| {
                                let diff = match row.pop() {
                                    Some(Datum::Int64(diff)) => diff,
                                    _ => unreachable!("a series that looks ahead signs its rows"),
                                };
                                (row, now, diff)
                            })
                            .collect();
                        output.session(&time).give_container(&mut updates);
                    });
                }
            },
        )
    }
}

/// One call's results for the peers, updating its state.
fn take_call(call: &AnalyticCall, state: &mut CallState, peers: &[Row], time: usize) -> Vec<Datum> {
    let at = peers[0][time].as_timestamp_nanos().unwrap_or(i64::MIN);
    match (&call.function, state) {
        (Analytic::Lag { offset, default }, CallState::Earlier(earlier)) => peers
            .iter()
            .map(|row| {
                let result = match *offset {
                    0 => value_of(call, row),
                    offset if earlier.len() >= offset => earlier[earlier.len() - offset].clone(),
                    _ => default.clone(),
                };
                if *offset > 0 {
                    earlier.push_back(value_of(call, row));
                    if earlier.len() > *offset {
                        earlier.pop_front();
                    }
                }
                result
            })
            .collect(),
        (Analytic::Lead { offset, default }, CallState::Lead) => peers
            .iter()
            .map(|row| match offset {
                0 => value_of(call, row),
                _ => default.clone(),
            })
            .collect(),
        (Analytic::RowNumber, CallState::Rows(rows)) => peers
            .iter()
            .map(|_| {
                *rows += 1;
                Datum::Int64(*rows as i64)
            })
            .collect(),
        (Analytic::Running { aggregate, frame }, CallState::Totals(totals)) => {
            if frame.includes_peers() {
                peers
                    .iter()
                    .for_each(|row| totals.add(&value_of(call, row)));
                vec![totals.result(*aggregate); peers.len()]
            } else {
                peers
                    .iter()
                    .map(|row| {
                        totals.add(&value_of(call, row));
                        totals.result(*aggregate)
                    })
                    .collect()
            }
        }
        (Analytic::Running { aggregate, frame }, CallState::Accumulated(accumulator)) => {
            let add = |accumulator: &mut Accumulator, row: &Row| {
                accumulator.update(*aggregate, &value_of(call, row), &Datum::Null, 1);
            };
            if frame.includes_peers() {
                peers.iter().for_each(|row| add(accumulator, row));
                vec![accumulator.result(*aggregate); peers.len()]
            } else {
                peers
                    .iter()
                    .map(|row| {
                        add(accumulator, row);
                        accumulator.result(*aggregate)
                    })
                    .collect()
            }
        }
        (Analytic::Running { aggregate, frame }, CallState::Frame(rows)) => match *frame {
            Frame::Range { preceding_nanos } => {
                rows.extend(peers.iter().map(|row| (at, value_of(call, row))));
                let oldest = at.saturating_sub(preceding_nanos.unwrap_or(i64::MAX));
                while rows.front().is_some_and(|(ts, _)| *ts < oldest) {
                    rows.pop_front();
                }
                let result = frame_result(*aggregate, rows.iter().map(|(_, value)| value));
                vec![result; peers.len()]
            }
            Frame::RowsAround { .. } | Frame::RangeAround { .. } => vec![Datum::Null; peers.len()],
            Frame::Rows { preceding } => peers
                .iter()
                .map(|row| {
                    rows.push_back((at, value_of(call, row)));
                    let keep = preceding.map_or(usize::MAX, |n| n as usize + 1);
                    while rows.len() > keep {
                        rows.pop_front();
                    }
                    frame_result(*aggregate, rows.iter().map(|(_, value)| value))
                })
                .collect(),
        },
        _ => unreachable!("a call's state is made for its function"),
    }
}

#[cfg(test)]
mod tests;
