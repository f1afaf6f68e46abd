//! Lowering of analytic window functions (`LAG`, `ROW_NUMBER`, aggregates `OVER (PARTITION BY …
//! ORDER BY ts ROWS|RANGE …)`) to one `Analytic` node per `OVER` clause.
//!
//! A streaming view takes a row's series in event time: so the `ORDER BY` is the event time,
//! ascending. `LEAD` and frames ending `n` rows after the current one look at later rows: their
//! view gives each row at once and corrects it as those rows come, so it is a view of updates,
//! not a stream. What would need a series' whole future (`UNBOUNDED FOLLOWING`, no `ORDER BY`,
//! which means the whole partition) or an unbounded number of corrections (a `RANGE` reaching
//! ahead) is refused, saying why.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionDefinition};
use datafusion::logical_expr::{
    Cast, Expr, ExprSchemable, WindowFrame, WindowFrameBound, WindowFrameUnits, lit, when,
};
use vibelux_operators::accumulator::AggregateFunction;
use vibelux_operators::analytic::{Analytic, AnalyticCall, AnalyticSpec, Frame, runs};
use vibelux_operators::in_event_time::SeriesColumns;
use vibelux_operators::row::{Datum, storage_type};

use super::{Lowering, carried_schema, located, plain_aggregate, refused_over_durations};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

/// One `OVER` clause's functions, as planned: what each computes and the value it reads.
struct Planned {
    function: Analytic,
    value: Option<Expr>,
}

impl Lowering<'_> {
    pub(super) fn analytic(
        &mut self,
        window: &datafusion::logical_expr::Window,
    ) -> SqlResult<NodeId> {
        let input = self.lower(&window.input)?;
        self.analytic_over(window, input)
    }

    /// The window functions of `window` over its input, lowered already to `input`.
    pub(super) fn analytic_over(
        &mut self,
        window: &datafusion::logical_expr::Window,
        input: NodeId,
    ) -> SqlResult<NodeId> {
        let input_node = self.plan.nodes[input].clone();
        let input_schema = window.input.schema();
        let time = input_node.event_time.ok_or_else(|| {
            self.error("window functions need the rows' event time to pass through unchanged (select the WATERMARK column)")
        })?;
        if input_node.changes != Changes::AppendOnly {
            return Err(self.error(
                "window functions (OVER …) take a stream of rows in event-time order; their input here is a view whose rows update",
            ));
        }
        let time_name = input_schema.field(time).name().clone();
        let mut partition: Option<Vec<Expr>> = None;
        let mut planned = Vec::new();
        // The calls that sum or average lengths of time, over their nanoseconds: index, and
        // whether it is a mean.
        let mut over_durations: Vec<(usize, bool)> = Vec::new();
        for expr in &window.window_expr {
            let shown = expr.to_string();
            let Expr::WindowFunction(function) = expr.clone().unalias() else {
                return Err(self.error(format!("expected a window function, found {shown}")));
            };
            let WindowFunction { fun, params } = *function;
            match &partition {
                None => partition = Some(params.partition_by.clone()),
                Some(keys) if *keys != params.partition_by => {
                    return Err(self.error(format!(
                        "window functions of one SELECT share their PARTITION BY here; compute {shown} in another view"
                    )));
                }
                Some(_) => {}
            }
            let ordered_by_time = match params.order_by.as_slice() {
                [sort] => {
                    sort.asc
                        && matches!(&sort.expr, Expr::Column(column) if column.name == time_name)
                }
                _ => false,
            };
            if !ordered_by_time && fun.name().eq_ignore_ascii_case("row_number") {
                return Err(self.error(format!(
                    "ROW_NUMBER() OVER (… ORDER BY a value) needs a bound in a streaming view: keep the first rows of each group with WHERE n <= 3 around it (TOP-N): {shown}"
                )));
            }
            if !ordered_by_time {
                return Err(self.error(format!(
                    "a window function in a streaming view takes its series in event-time order: add ORDER BY {time_name} (ascending) to the OVER clause of {shown}"
                )));
            }
            let name = fun.name().to_ascii_lowercase();
            let planned_call = match &fun {
                WindowFunctionDefinition::WindowUDF(_) => match name.as_str() {
                    "lag" | "lead" => {
                        self.offset_function(&name, &params.args, input_schema, &shown)?
                    }
                    "row_number" => Planned {
                        function: Analytic::RowNumber,
                        value: None,
                    },
                    _ => {
                        return Err(self.error(format!(
                            "window function {name} is not supported yet (LAG, LEAD, ROW_NUMBER and aggregates over a frame are): {shown}"
                        )));
                    }
                },
                WindowFunctionDefinition::AggregateUDF(_) => {
                    let frame = self.frame(&params.window_frame, &shown)?;
                    if params.distinct {
                        return Err(self.error(format!(
                            "DISTINCT inside a window function is not supported (nor in PostgreSQL); count the distinct values in a view first: {shown}"
                        )));
                    }
                    let mut argument = params.args.first().cloned();
                    if let Some(filter) = &params.filter {
                        // `agg(x) FILTER (WHERE p)` is `agg(CASE WHEN p THEN x END)` for the
                        // aggregates that skip NULLs; `count(*)` counts a constant.
                        if name == "array_agg" {
                            return Err(self.error(format!(
                                "array_agg keeps NULLs, so FILTER (WHERE …) inside array_agg … OVER (…) is not supported; filter the rows in a view first: {shown}"
                            )));
                        }
                        let value = argument.take().unwrap_or(lit(1i64));
                        let only_passing = when(filter.as_ref().clone(), value)
                            .end()
                            .map_err(|error| located(error, self.position))?;
                        argument = Some(only_passing);
                    }
                    let mut argument_type = argument
                        .as_ref()
                        .map(|arg| arg.get_type(input_schema.as_ref()))
                        .transpose()
                        .map_err(|error| located(error, self.position))?;
                    if let (Some(arg), Some(DataType::Duration(_))) = (&argument, &argument_type)
                        && matches!(name.as_str(), "sum" | "avg" | "mean")
                    {
                        over_durations.push((planned.len(), name != "sum"));
                        argument = Some(Expr::Cast(Cast::new(
                            Box::new(arg.clone()),
                            DataType::Int64,
                        )));
                        argument_type = Some(DataType::Int64);
                    }
                    if let Some(refusal) = refused_over_durations(&name, argument_type.as_ref()) {
                        return Err(self.error(format!("{refusal}: {shown}")));
                    }
                    let aggregate = match name.as_str() {
                        "array_agg" => self.array_agg_over(&frame, &shown)?,
                        _ => plain_aggregate(&name, argument.as_ref(), argument_type.as_ref())
                            .filter(|function| runs(*function))
                            .ok_or_else(|| {
                                self.error(format!(
                                    "{name} OVER (…) is not supported yet (count, sum, avg, min, max, stddev, variance and array_agg are): {shown}"
                                ))
                            })?,
                    };
                    Planned {
                        value: match aggregate {
                            AggregateFunction::CountRows => None,
                            _ => argument,
                        },
                        function: Analytic::Running { aggregate, frame },
                    }
                }
            };
            planned.push(planned_call);
        }
        let partition = partition.unwrap_or_default();

        // A Calc passes the input through and adds the keys and values, then the node appends a
        // column per function.
        let kept = input_schema.fields().len();
        let mut extra: Vec<Expr> = partition.clone();
        let keys: Vec<usize> = (kept..kept + partition.len()).collect();
        let mut calls = Vec::new();
        for (index, call) in planned.into_iter().enumerate() {
            let value = call.value.map(|expr| {
                extra.push(expr);
                kept + extra.len() - 1
            });
            let output = window.schema.field(kept + index).data_type();
            let float_result = match over_durations.iter().find(|(i, _)| *i == index) {
                Some((_, mean)) => *mean,
                None => storage_type(output) == Some(DataType::Float64),
            };
            calls.push(AnalyticCall {
                function: call.function,
                value,
                float_result,
            });
        }
        let calc = self.with_columns(input, input_schema, &extra)?;
        let final_schema =
            carried_schema(window.schema.inner()).map_err(|message| self.error(message))?;
        // Sums and means of lengths of time leave the node as numbers of nanoseconds.
        let schema = Arc::new(Schema::new(
            final_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(column, field)| {
                    let call = column.checked_sub(kept);
                    match over_durations.iter().find(|(i, _)| Some(*i) == call) {
                        Some((_, true)) => field.as_ref().clone().with_data_type(DataType::Float64),
                        Some((_, false)) => field.as_ref().clone().with_data_type(DataType::Int64),
                        None => field.as_ref().clone(),
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let spec = AnalyticSpec { calls };
        let (changes, order) = match spec.looks_ahead() {
            false => (Changes::AppendOnly, "in event-time order per series"),
            true => (
                Changes::Updates { finals: false },
                "in event-time order per series; a row given again as the later rows it reads come",
            ),
        };
        let label = format!(
            "Analytic {} ({order})",
            window
                .window_expr
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let analytic = self.plan.add(PlanNode {
            kind: NodeKind::Analytic {
                input: calc,
                spec: Arc::new(spec),
                columns: SeriesColumns { keys, time, kept },
            },
            schema: schema.clone(),
            changes,
            window: input_node.window,
            event_time: Some(time),
            lateness_nanos: input_node.lateness_nanos,
            key: None,
            label,
        });
        if over_durations.is_empty() {
            return Ok(analytic);
        }
        self.lengths_of_time_again(analytic, &schema, final_schema)
    }

    /// `LAG(value [, offset [, default]])`, or `LEAD` (`name`).
    fn offset_function(
        &self,
        name: &str,
        args: &[Expr],
        schema: &datafusion::common::DFSchema,
        shown: &str,
    ) -> SqlResult<Planned> {
        let upper = name.to_ascii_uppercase();
        let value = args
            .first()
            .cloned()
            .ok_or_else(|| self.error(format!("{upper} needs the value to look at: {shown}")))?;
        let offset = match args.get(1) {
            None => 1,
            Some(Expr::Literal(literal, _)) => match literal.clone().cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(offset))) if offset >= 0 => offset as usize,
                _ => {
                    return Err(self.error(format!(
                        "{upper}'s offset is a whole number of rows, 0 or more: {shown}"
                    )));
                }
            },
            Some(_) => {
                return Err(self.error(format!(
                    "{upper}'s offset is a constant number of rows: {shown}"
                )));
            }
        };
        let value_type = value
            .get_type(schema)
            .map_err(|error| located(error, self.position))?;
        let default = match args.get(2) {
            None => Datum::Null,
            Some(Expr::Literal(literal, _)) => {
                let storage = storage_type(&value_type).unwrap_or(DataType::Null);
                let cast = literal.clone().cast_to(&storage).map_err(|_| {
                    self.error(format!(
                        "{upper}'s default must be a {value_type} like its value: {shown}"
                    ))
                })?;
                datum_of(&cast).ok_or_else(|| {
                    self.error(format!("{upper}'s default cannot be carried: {shown}"))
                })?
            }
            Some(_) => {
                return Err(self.error(format!("{upper}'s default is a constant: {shown}")));
            }
        };
        Ok(Planned {
            function: match name {
                "lead" => Analytic::Lead { offset, default },
                _ => Analytic::Lag { offset, default },
            },
            value: Some(value),
        })
    }

    /// `array_agg` over a frame: its values in event-time order, so only a bounded frame.
    fn array_agg_over(&self, frame: &Frame, shown: &str) -> SqlResult<AggregateFunction> {
        match frame {
            Frame::Rows { preceding: None }
            | Frame::Range {
                preceding_nanos: None,
            } => Err(self.error(format!(
                "array_agg over a frame from the series' start would hold every value it ever had: bound the frame (ROWS BETWEEN 9 PRECEDING AND CURRENT ROW, or RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW): {shown}"
            ))),
            _ => Ok(AggregateFunction::ArrayAgg),
        }
    }

    /// A frame that starts at or before the current row (by rows or by event time) and ends at
    /// it, or a number of rows after it.
    fn frame(&self, frame: &WindowFrame, shown: &str) -> SqlResult<Frame> {
        let mut range_following = None;
        let following = match &frame.end_bound {
            WindowFrameBound::CurrentRow => None,
            WindowFrameBound::Following(value)
                if frame.units == WindowFrameUnits::Rows && !value.is_null() =>
            {
                match value.clone().cast_to(&DataType::UInt64) {
                    Ok(ScalarValue::UInt64(Some(rows))) => Some(rows),
                    _ => {
                        return Err(self.error(format!(
                            "ROWS … FOLLOWING takes a whole number of rows: {shown}"
                        )));
                    }
                }
            }
            WindowFrameBound::Following(value) if value.is_null() => {
                return Err(self.error(format!(
                    "a frame in a streaming view cannot end at UNBOUNDED FOLLOWING: a stream has no last row; end it at the current row or n rows after: {shown}"
                )));
            }
            WindowFrameBound::Following(value) => {
                let Some(nanos) = interval_nanos(value) else {
                    return Err(self.error(format!(
                        "RANGE … FOLLOWING takes an interval of event time (INTERVAL '10 minutes'): {shown}"
                    )));
                };
                range_following = Some(nanos);
                None
            }
            WindowFrameBound::Preceding(_) => {
                return Err(self.error(format!(
                    "a frame in a streaming view ends at the current row or after it: {shown}"
                )));
            }
        };
        let preceding = match &frame.start_bound {
            WindowFrameBound::CurrentRow => Some(ScalarValue::UInt64(Some(0))),
            WindowFrameBound::Preceding(value) if value.is_null() => None,
            WindowFrameBound::Preceding(value) => Some(value.clone()),
            WindowFrameBound::Following(_) => {
                return Err(self.error(format!(
                    "a frame in a streaming view starts at or before the current row: {shown}"
                )));
            }
        };
        match frame.units {
            WindowFrameUnits::Rows => {
                let rows = preceding
                    .map(|value| match value.cast_to(&DataType::UInt64) {
                        Ok(ScalarValue::UInt64(Some(rows))) => Ok(rows),
                        _ => Err(self.error(format!(
                            "ROWS … PRECEDING takes a whole number of rows: {shown}"
                        ))),
                    })
                    .transpose()?;
                match (rows, following) {
                    (rows, None | Some(0)) => Ok(Frame::Rows { preceding: rows }),
                    (Some(preceding), Some(following)) => Ok(Frame::RowsAround {
                        preceding,
                        following,
                    }),
                    (None, Some(_)) => Err(self.error(format!(
                        "a frame reaching after its row starts a number of rows before it (ROWS BETWEEN n PRECEDING AND m FOLLOWING), not at UNBOUNDED PRECEDING: {shown}"
                    ))),
                }
            }
            WindowFrameUnits::Range => {
                let nanos = preceding
                    .map(|value| {
                        interval_nanos(&value).ok_or_else(|| {
                            self.error(format!(
                                "RANGE … PRECEDING takes an interval of event time (INTERVAL '10 minutes'): {shown}"
                            ))
                        })
                    })
                    .transpose()?;
                match (nanos, range_following) {
                    (nanos, None | Some(0)) => Ok(Frame::Range {
                        preceding_nanos: nanos,
                    }),
                    (Some(preceding_nanos), Some(following_nanos)) => Ok(Frame::RangeAround {
                        preceding_nanos,
                        following_nanos,
                    }),
                    (None, Some(_)) => Err(self.error(format!(
                        "a frame reaching after its row starts a length of time before it (RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND INTERVAL '5 minutes' FOLLOWING), not at UNBOUNDED PRECEDING: {shown}"
                    ))),
                }
            }
            WindowFrameUnits::Groups => Err(self.error(format!(
                "GROUPS frames are not supported yet; use ROWS or RANGE: {shown}"
            ))),
        }
    }
}

/// A constant as a row's value.
fn datum_of(literal: &ScalarValue) -> Option<Datum> {
    let array = literal.to_array().ok()?;
    let mut rows = vec![Vec::new()];
    vibelux_operators::columnar::append_column(array.as_ref(), &mut rows).ok()?;
    rows.pop()?.pop()
}

/// A constant interval in nanoseconds (a RANGE frame's extent), if it has a fixed length.
fn interval_nanos(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match value {
        ScalarValue::UInt64(Some(0)) => Some(0),
        ScalarValue::IntervalMonthDayNano(Some(interval)) if interval.months == 0 => {
            Some(i64::from(interval.days) * DAY + interval.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(interval)) => {
            Some(i64::from(interval.days) * DAY + i64::from(interval.milliseconds) * 1_000_000)
        }
        ScalarValue::DurationNanosecond(Some(nanos)) => Some(*nanos),
        ScalarValue::DurationMicrosecond(Some(micros)) => Some(micros * 1_000),
        ScalarValue::DurationMillisecond(Some(millis)) => Some(millis * 1_000_000),
        ScalarValue::DurationSecond(Some(seconds)) => Some(seconds * 1_000_000_000),
        _ => None,
    }
}
