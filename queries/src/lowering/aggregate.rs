//! Lowering of `GROUP BY` and its aggregates: a projection of the keys and arguments, then an
//! incremental `Aggregate` node, windowed when a key holds a window bound (so the aggregate
//! knows when a window closes and its rows are final), a session when both bounds are keys.
//! Which aggregates fold how, and which argument types each refuses, is decided here.

use super::*;
use datafusion::logical_expr::Cast;

impl Lowering<'_> {
    /// The training distribution `psi('model', 'feature', value)` compares against.
    fn drift_reference(&self, args: &[Expr], shown: &str) -> SqlResult<FeatureReference> {
        let text = |index: usize| match args.get(index) {
            Some(Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(text)), _)) => {
                Some(text.clone())
            }
            _ => None,
        };
        let (Some(model_name), Some(feature), 3) = (text(0), text(1), args.len()) else {
            return Err(self.error(format!(
                "psi('model', 'feature', value) takes the model and feature names quoted: {shown}"
            )));
        };
        let slot = self.models.get(&model_name).ok_or_else(|| {
            self.error(format!(
                "psi: unknown model `{model_name}`; create it first (CREATE MODEL)"
            ))
        })?;
        let model = &slot.live;
        if model.references.is_empty() {
            return Err(self.error(format!(
                "psi: model {model_name} carries no training reference (metadata `vibelux.reference`); models/iforest/train.py shows how to store one"
            )));
        }
        model.reference(&feature).cloned().ok_or_else(|| {
            self.error(format!(
                "psi: model {model_name} has no reference for `{feature}`; it has: {}",
                model
                    .references
                    .iter()
                    .map(|reference| reference.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The fraction of `percentile_cont(value, fraction)`: a number from 0 to 1, written out.
    fn percentile_fraction(&self, given: Option<&Expr>, shown: &str) -> SqlResult<f64> {
        let value = match given {
            Some(Expr::Literal(literal, _)) => literal.clone().cast_to(&DataType::Float64).ok(),
            _ => None,
        };
        match value {
            Some(datafusion::common::ScalarValue::Float64(Some(fraction)))
                if (0.0..=1.0).contains(&fraction) =>
            {
                Ok(fraction)
            }
            _ => Err(self.error(format!(
                "the fraction of a percentile is a number from 0 to 1, written out (0.95): {shown}"
            ))),
        }
    }

    pub(super) fn aggregate(
        &mut self,
        input_plan: &LogicalPlan,
        group_exprs: &[Expr],
        aggregate_exprs: &[Expr],
        output_schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        if let Some(Expr::GroupingSet(set)) = group_exprs.first() {
            return self.grouping_sets(input_plan, set, aggregate_exprs, output_schema);
        }
        let input = self.lower(input_plan)?;
        let input_schema = input_plan.schema();
        let input_node = self.plan.nodes[input].clone();
        let mut projections: Vec<Expr> = group_exprs.to_vec();
        let mut specs = Vec::new();
        let mut labels = Vec::new();
        // The output columns of sums and means of lengths of time, aggregated as nanoseconds.
        let mut as_durations = Vec::new();
        for expr in aggregate_exprs {
            let shown = expr.to_string();
            let Expr::AggregateFunction(AggregateFunction { func, params }) =
                expr.clone().unalias()
            else {
                return Err(self.error(format!("expected an aggregate function, found {shown}")));
            };
            let name = func.name().to_ascii_lowercase();
            if params.distinct
                && !matches!(
                    name.as_str(),
                    "count" | "sum" | "avg" | "mean" | "min" | "max"
                )
            {
                return Err(self.error(format!(
                    "DISTINCT inside {name} is not supported yet (count, sum, avg, min and max take it): {shown}"
                )));
            }
            let mut reference = None;
            let mut fraction = None;
            let argument = match name.as_str() {
                "psi" => {
                    reference = Some(self.drift_reference(&params.args, &shown)?);
                    params.args.get(2).cloned()
                }
                "median" => {
                    fraction = Some(0.5);
                    params.args.first().cloned()
                }
                "percentile_cont" | "approx_percentile_cont" => {
                    // `f(value, fraction)`, or `f(fraction) WITHIN GROUP (ORDER BY value)`.
                    let (value, given) = match params.order_by.first() {
                        Some(sort) if params.args.len() == 1 => {
                            (Some(sort.expr.clone()), params.args.first())
                        }
                        _ => (params.args.first().cloned(), params.args.get(1)),
                    };
                    fraction = Some(self.percentile_fraction(given, &shown)?);
                    value
                }
                _ => params.args.first().cloned(),
            };
            // FILTER (WHERE condition): rows that fail it give the aggregate a NULL, which every
            // aggregate skips (count(*) counts a 1 for each row that passes); a list keeps its
            // NULLs, so array_agg is given the condition as a column of its own.
            let list_filter = params.filter.as_deref().filter(|_| name == "array_agg");
            let argument = match params.filter.as_deref() {
                None => argument,
                Some(_) if list_filter.is_some() => argument,
                Some(condition) => {
                    let value = match &argument {
                        None | Some(Expr::Literal(..)) if name == "count" => lit(1i64),
                        Some(argument) => argument.clone(),
                        None => return Err(self.error(format!("{name} needs an argument"))),
                    };
                    Some(
                        when(condition.clone(), value)
                            .end()
                            .map_err(|error| located(error, self.position))?,
                    )
                }
            };
            let argument_type = match &argument {
                Some(arg) => Some(
                    arg.get_type(input_schema.as_ref())
                        .map_err(|e| located(e, self.position))?,
                ),
                None => None,
            };
            if params.distinct
                && matches!(argument_type, Some(DataType::Duration(_)))
                && matches!(name.as_str(), "sum" | "avg" | "mean")
            {
                return Err(self.error(format!(
                    "{name}(DISTINCT …) of an INTERVAL is not supported yet; aggregate its seconds instead, {name}(DISTINCT date_part('epoch', …)): {shown}"
                )));
            }
            // A sum or mean of lengths of time is taken over their nanoseconds, and made a
            // length of time again after the aggregate.
            let (argument, argument_type) = match (&argument, &argument_type) {
                (Some(arg), Some(DataType::Duration(_)))
                    if !params.distinct && matches!(name.as_str(), "sum" | "avg" | "mean") =>
                {
                    as_durations.push(group_exprs.len() + specs.len());
                    (
                        Some(Expr::Cast(Cast::new(
                            Box::new(arg.clone()),
                            DataType::Int64,
                        ))),
                        Some(DataType::Int64),
                    )
                }
                _ => (argument, argument_type),
            };
            if let Some(refusal) = refused_over_durations(&name, argument_type.as_ref()) {
                return Err(self.error(format!("{refusal}: {shown}")));
            }
            let mut order = params
                .order_by
                .first()
                .map(|sort| (sort.expr.clone(), sort.asc));
            let simple = plain_aggregate(&name, argument.as_ref(), argument_type.as_ref());
            let function = match name.as_str() {
                "count" if params.distinct && simple == Some(Function::Count) => {
                    Function::CountDistinct
                }
                "sum" if params.distinct => Function::SumDistinct,
                "avg" | "mean" if params.distinct => Function::AvgDistinct,
                _ if simple.is_some() => simple.expect("checked"),
                "median" | "percentile_cont" | "approx_percentile_cont" => {
                    if argument_type.as_ref() != Some(&DataType::Float64) {
                        return Err(self.error(format!(
                            "{name} takes a DOUBLE value here, not {}; cast it: {name}(CAST(… AS DOUBLE)): {shown}",
                            argument_type.map_or("nothing".to_string(), |t| t.to_string())
                        )));
                    }
                    let fraction = fraction.expect("set with the argument");
                    Function::Percentile {
                        millionths: (fraction * 1e6).round() as u32,
                    }
                }
                "first_value" | "last_value" => {
                    let first = name == "first_value";
                    if order.is_none() {
                        let event_time = input_node.event_time.ok_or_else(|| {
                            self.error(format!("{name} needs ORDER BY here (no event-time column to order by): {shown}"))
                        })?;
                        order = Some((
                            Expr::Column(Column::from_name(input_schema.field(event_time).name())),
                            true,
                        ));
                    }
                    let ascending = order.as_ref().is_none_or(|(_, asc)| *asc);
                    if first == ascending {
                        Function::FirstValue
                    } else {
                        Function::LastValue
                    }
                }
                "psi" => Function::PopulationStability,
                "array_agg" => match params.order_by.first() {
                    None => Function::ArrayAgg,
                    Some(sort) => match (sort.asc, sort.nulls_first) {
                        (true, false) => Function::ArrayAgg,
                        (true, true) => Function::ArrayAggNullsFirst,
                        (false, true) => Function::ArrayAggDescending,
                        (false, false) => Function::ArrayAggDescendingNullsLast,
                    },
                },
                "integral" | "time_weighted_avg" | "dli" | "rate_of_change" => {
                    let ts = params.args.get(1).cloned().ok_or_else(|| {
                        self.error(format!(
                            "{name}(value, ts) needs the event time as its second argument: {shown}"
                        ))
                    })?;
                    order = Some((ts, true));
                    match name.as_str() {
                        "integral" => Function::Integral,
                        "time_weighted_avg" => Function::TimeWeightedAvg,
                        "dli" => Function::Dli,
                        _ => Function::RateOfChange,
                    }
                }
                other => {
                    return Err(self.error(format!(
                        "aggregate function {other} is not supported in streaming views yet"
                    )));
                }
            };
            let argument = match function {
                Function::CountRows => None,
                _ => {
                    let arg =
                        argument.ok_or_else(|| self.error(format!("{name} needs an argument")))?;
                    projections.push(arg);
                    Some(projections.len() - 1)
                }
            };
            let order_by = match (function, order) {
                (
                    Function::FirstValue
                    | Function::LastValue
                    | Function::ArrayAgg
                    | Function::ArrayAggDescending
                    | Function::ArrayAggNullsFirst
                    | Function::ArrayAggDescendingNullsLast
                    | Function::Integral
                    | Function::TimeWeightedAvg
                    | Function::Dli
                    | Function::RateOfChange,
                    Some((expr, _)),
                ) => {
                    projections.push(expr);
                    Some(projections.len() - 1)
                }
                _ => None,
            };
            let filter = list_filter.map(|condition| {
                projections.push(condition.clone());
                projections.len() - 1
            });
            specs.push(AggregateSpec {
                function,
                argument,
                order_by,
                reference,
                filter,
            });
            labels.push(shown);
        }
        let pre_fields = projections
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let data_type = e
                    .get_type(input_schema.as_ref())
                    .map_err(|error| located(error, self.position))?;
                Ok(Field::new(format!("_{i}"), data_type, true))
            })
            .collect::<SqlResult<Vec<_>>>()?;
        let pre = self.calc(
            input,
            input_schema,
            None,
            &projections,
            Arc::new(Schema::new(pre_fields)),
        )?;

        // A key column holding a window bound makes each group a window that closes.
        let group_column = |column: Option<usize>| -> Option<usize> {
            let column = column?;
            group_exprs.iter().position(|e| match e.clone().unalias() {
                Expr::Column(c) => input_schema.index_of_column(&c).ok() == Some(column),
                _ => false,
            })
        };
        let appends = input_node.changes == Changes::AppendOnly;
        let window = input_node.window.and_then(|w| {
            let columns = WindowColumns {
                start: group_column(w.start),
                end: group_column(w.end),
                kind: w.kind,
            };
            (columns.start.is_some() || columns.end.is_some()).then_some(columns)
        });
        // Sessions merge by rewriting both bounds, so both must be keys.
        let session = match window {
            Some(WindowColumns {
                kind: WindowKind::Session { .. },
                start: Some(start),
                end: Some(end),
            }) => Some(SessionColumns { start, end }),
            Some(WindowColumns {
                kind: WindowKind::Session { .. },
                ..
            }) => {
                return Err(
                    self.error("a SESSION window is grouped by both window_start and window_end")
                );
            }
            _ => None,
        };
        let close = window.map(|w| match w.end {
            Some(end) => WindowClose {
                key_column: end,
                ends_of_starts: None,
                lateness_nanos: input_node.lateness_nanos,
            },
            None => WindowClose {
                key_column: w.start.expect("a window column"),
                ends_of_starts: Some(w.kind),
                lateness_nanos: input_node.lateness_nanos,
            },
        });
        let keys: Vec<String> = group_exprs.iter().map(|e| e.to_string()).collect();
        let label = format!(
            "Aggregate keys=[{}] aggregates=[{}]{}",
            keys.join(", "),
            labels.join(", "),
            if close.is_some() {
                " (windowed: final when the watermark passes window_end + lateness)"
            } else {
                ""
            }
        );
        let output_schema =
            carried_schema(&output_schema).map_err(|message| self.error(message))?;
        let output_schema = with_units(
            &output_schema,
            group_exprs
                .iter()
                .chain(aggregate_exprs)
                .map(|e| unit_of(e, input_schema, &input_node.schema)),
        );
        // Sums and means of lengths of time leave the aggregate as numbers of nanoseconds.
        let in_nanoseconds = Arc::new(Schema::new(
            output_schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, field)| match as_durations.contains(&i) {
                    false => field.as_ref().clone(),
                    true => {
                        let mean = matches!(specs[i - group_exprs.len()].function, Function::Avg);
                        let number = if mean {
                            DataType::Float64
                        } else {
                            DataType::Int64
                        };
                        field.as_ref().clone().with_data_type(number)
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let plan = AggregatePlan {
            key_columns: group_exprs.len(),
            aggregates: specs,
            input_retracts: !appends,
            window: close,
            session,
        };
        let (aggregate_schema, final_schema) = match as_durations.is_empty() {
            true => (output_schema, None),
            false => (in_nanoseconds, Some(output_schema)),
        };
        let aggregated = self.plan.add(PlanNode {
            kind: NodeKind::Aggregate {
                input: pre,
                plan: Arc::new(plan),
            },
            schema: aggregate_schema.clone(),
            changes: Changes::Updates {
                finals: window.is_some(),
            },
            window,
            event_time: None,
            lateness_nanos: input_node.lateness_nanos,
            key: Some((0..group_exprs.len()).collect()),
            label,
        });
        let Some(final_schema) = final_schema else {
            return Ok(aggregated);
        };
        self.lengths_of_time_again(aggregated, &aggregate_schema, final_schema)
    }

    /// `node`'s columns as `wanted` has them: the sums and means of lengths of time that left
    /// it as numbers of nanoseconds become lengths of time again (a mean's fraction of a
    /// nanosecond dropped), the other columns pass.
    pub(super) fn lengths_of_time_again(
        &mut self,
        node: NodeId,
        numbers: &SchemaRef,
        wanted: SchemaRef,
    ) -> SqlResult<NodeId> {
        let input = DFSchema::try_from(numbers.as_ref().clone())
            .map_err(|error| located(error, self.position))?;
        let projections: Vec<Expr> = numbers
            .fields()
            .iter()
            .zip(wanted.fields())
            .map(|(field, wanted)| {
                let column = Expr::Column(Column::new_unqualified(field.name()));
                match field.data_type() == wanted.data_type() {
                    true => column,
                    false => Expr::Cast(Cast::new(
                        Box::new(Expr::Cast(Cast::new(Box::new(column), DataType::Int64))),
                        wanted.data_type().clone(),
                    )),
                }
            })
            .collect();
        self.calc(node, &input, None, &projections, wanted)
    }
}

/// The aggregates that fold values one at a time, by their SQL name (`count(*)` when the
/// argument is absent or a constant): what `GROUP BY` and window frames share.
pub(crate) fn plain_aggregate(
    name: &str,
    argument: Option<&Expr>,
    argument_type: Option<&DataType>,
) -> Option<Function> {
    Some(match name {
        "count" if matches!(argument, None | Some(Expr::Literal(..))) => Function::CountRows,
        "count" => Function::Count,
        "sum" if argument_type.is_some_and(|t| storage_type(t) == Some(DataType::Int64)) => {
            Function::SumInt
        }
        "sum" | "avg" | "mean" if decimal_scale(argument_type).is_some() => {
            let scale = decimal_scale(argument_type).expect("checked");
            match name {
                "sum" => Function::SumDecimal { scale },
                _ => Function::AvgDecimal { scale },
            }
        }
        "sum" => Function::SumFloat,
        "avg" | "mean" => Function::Avg,
        "min" => Function::Min,
        "max" => Function::Max,
        "stddev" | "stddev_samp" => Function::StddevSample,
        "stddev_pop" => Function::StddevPopulation,
        "var" | "var_samp" | "var_sample" | "variance" => Function::VarianceSample,
        "var_pop" | "var_population" => Function::VariancePopulation,
        _ => return None,
    })
}

/// The scale of an exact decimal argument.
fn decimal_scale(argument_type: Option<&DataType>) -> Option<i8> {
    match argument_type.and_then(storage_type) {
        Some(DataType::Decimal128(_, scale)) => Some(scale),
        _ => None,
    }
}

/// Why aggregate `name` cannot take lengths of time (`INTERVAL`s, such as `ts - LAG(ts)`), if it
/// cannot: the sums behind the others are of numbers.
pub(crate) fn refused_over_durations(
    name: &str,
    argument_type: Option<&DataType>,
) -> Option<String> {
    let durations = matches!(argument_type, Some(DataType::Duration(_)));
    let takes_them = matches!(
        name,
        "count" | "min" | "max" | "sum" | "avg" | "mean" | "first_value" | "last_value"
    );
    (durations && !takes_them).then(|| {
        format!(
            "{name} of an INTERVAL is not supported yet (count, min, max, sum, avg, first_value and last_value are); aggregate its seconds instead, {name}(date_part('epoch', …))"
        )
    })
}
