//! Lowering: DataFusion's logical plan of a query becomes nodes of the dataflow plan.
//!
//! DataFusion parses, resolves names and checks types; what comes back is a tree of
//! `TableScan`, `Filter`, `Projection`, `Aggregate`, `Union`… This module walks it bottom-up and
//! adds one [`PlanNode`] per streaming step: a filter and the projection over it fuse into one
//! `Calc`, an aggregate becomes a projection of its keys and arguments followed by an incremental
//! `Aggregate`. Along the way it tracks what the operators need to know: which columns hold window
//! bounds (so the aggregate knows when a window closes), where the event time is, and whether the
//! output is append-only. Plans that cannot run incrementally are refused with a reason.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Column, DFSchema};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Distinct, Expr, ExprSchemable, LogicalPlan, expr::AggregateFunction, lit, when,
};
use datafusion::physical_expr::create_physical_expr;
use vibelux_models::onnx::FeatureReference;
use vibelux_models::onnx::ModelRegistry;
use vibelux_operators::accumulator::{AggregateFunction as Function, AggregateSpec};
use vibelux_operators::aggregate::{AggregatePlan, WindowClose};
use vibelux_operators::anomaly::AnomalySpec;
use vibelux_operators::calc::{Calc, CalcDescription};
use vibelux_operators::row::storage_type;
use vibelux_operators::session::SessionColumns;
use vibelux_operators::window::WindowKind;

use vibelux_interfaces::metadata::UNIT as UNIT_METADATA;

use crate::context::located;
use crate::error::{Position, SqlError, SqlResult};
use crate::plan::{Changes, DataflowPlan, NodeId, NodeKind, PlanNode, WindowColumns};
pub use as_of_join::AsOfTarget;

mod analytic;
mod as_of_join;
mod distinct_on;
mod grouping_sets;
mod join;
mod not_in;
mod temporal;
mod top_n;

pub struct Lowering<'a> {
    pub plan: &'a mut DataflowPlan,
    /// Relation name → node producing it (catalog relations and this statement's windows).
    pub relations: &'a HashMap<String, NodeId>,
    /// The pipeline's models, for `psi`'s training references.
    models: &'a ModelRegistry,
    pub position: Position,
    props: ExecutionProps,
    /// Relations the query reads, for dependency tracking.
    pub reads: Vec<String>,
    /// Windows whose `ROW_NUMBER()` a filter above bounds: the window's address and the
    /// bound, for TOP-N.
    bounded_row_numbers: Vec<(usize, usize)>,
    /// The synthetic relations of tables read `FOR SYSTEM_TIME AS OF` a time, by name.
    as_of: HashMap<String, AsOfTarget>,
    /// The one of them an as-of join is lowering its versions from.
    admitted_as_of: Option<String>,
}

impl<'a> Lowering<'a> {
    pub fn new(
        plan: &'a mut DataflowPlan,
        relations: &'a HashMap<String, NodeId>,
        models: &'a ModelRegistry,
        position: Position,
    ) -> Self {
        Lowering {
            plan,
            relations,
            models,
            position,
            props: ExecutionProps::new(),
            reads: Vec::new(),
            bounded_row_numbers: Vec::new(),
            as_of: HashMap::new(),
            admitted_as_of: None,
        }
    }

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

    fn error(&self, message: impl Into<String>) -> SqlError {
        SqlError::new(self.position, message)
    }

    /// `expr` as written, without the simplifier: what a Calc is named by.
    fn physical_as_written(
        &self,
        expr: &Expr,
        schema: &DFSchema,
    ) -> SqlResult<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        create_physical_expr(
            expr,
            schema,
            &self.props,
            &PhysicalPlanningContext::default(),
        )
        .and_then(fail_on_overflow)
        .map_err(|error| located(error, self.position))
    }

    fn physical(
        &self,
        expr: &Expr,
        schema: &DFSchema,
    ) -> SqlResult<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        // DataFusion's simplifier first, as its own planner runs it: some functions (coalesce,
        // nvl) only run once rewritten by it, and constants are folded once instead of per
        // row. A plan it cannot simplify (a constant that fails to fold) runs as written, so
        // the failure stays a row's error in `<view>_errors`.
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .build();
        let simplified = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
            .simplify(expr.clone())
            .unwrap_or_else(|_| expr.clone());
        self.physical_as_written(&simplified, schema)
    }

    /// A Calc's predicate and projections as physical expressions, simplified to run or as
    /// written (what the Calc is named by).
    #[allow(clippy::type_complexity)]
    fn physicals(
        &self,
        predicate: Option<&Expr>,
        projections: &[Expr],
        schema: &DFSchema,
        as_written: bool,
    ) -> SqlResult<(
        Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    )> {
        let one = |expr: &Expr| match as_written {
            true => self.physical_as_written(expr, schema),
            false => self.physical(expr, schema),
        };
        Ok((
            predicate.map(one).transpose()?,
            projections.iter().map(one).collect::<SqlResult<Vec<_>>>()?,
        ))
    }

    pub fn lower(&mut self, logical: &LogicalPlan) -> SqlResult<NodeId> {
        match logical {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table().to_string();
                let node = *self.relations.get(&name).ok_or_else(|| self.error(format!("unknown relation `{name}`")))?;
                if !name.starts_with("__") {
                    self.reads.push(name.clone());
                }
                if self.as_of.contains_key(&name) && self.admitted_as_of.as_ref() != Some(&name) {
                    return Err(self.error(
                        "FOR SYSTEM_TIME AS OF reads a versioned table on the right of a join with a stream: FROM readings r JOIN setpoints FOR SYSTEM_TIME AS OF r.ts AS s ON r.zone = s.zone",
                    ));
                }
                if scan.fetch.is_some() {
                    return Err(self.error("LIMIT is not supported in a streaming view"));
                }
                let source_schema = DFSchema::try_from(self.plan.nodes[node].schema.as_ref().clone())
                    .map_err(|error| located(error, self.position))?;
                let projections = match &scan.projection {
                    None => return Ok(node),
                    Some(indices) => indices
                        .iter()
                        .map(|&index| Expr::Column(Column::from_name(source_schema.field(index).name())))
                        .collect::<Vec<_>>(),
                };
                self.calc(node, &source_schema, None, &projections, scan.projected_schema.inner().clone())
            }
            LogicalPlan::Projection(projection) => {
                let (input, predicate, input_schema) = match projection.input.as_ref() {
                    LogicalPlan::Filter(filter) => {
                        if let Some(bound) = Self::row_number_bound(&filter.predicate, &filter.input) {
                            self.bounded_row_numbers.push(bound);
                        }
                        let input = self.lower(&filter.input)?;
                        let schema = filter.input.schema().clone();
                        let (input, predicate) = self.temporal_filter(input, &schema, &filter.predicate)?;
                        (input, predicate, schema)
                    }
                    other => (self.lower(other)?, None, other.schema().clone()),
                };
                self.calc(input, &input_schema, predicate.as_ref(), &projection.expr, projection.schema.inner().clone())
            }
            LogicalPlan::Filter(filter) => {
                if let Some(bound) = Self::row_number_bound(&filter.predicate, &filter.input) {
                    self.bounded_row_numbers.push(bound);
                }
                let input = self.lower(&filter.input)?;
                let schema = filter.input.schema();
                let (input, predicate) = self.temporal_filter(input, schema, &filter.predicate)?;
                let identity: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
                self.calc(input, schema, predicate.as_ref(), &identity, schema.inner().clone())
            }
            LogicalPlan::SubqueryAlias(alias) => self.lower(&alias.input),
            LogicalPlan::Aggregate(aggregate) => self.aggregate(
                &aggregate.input,
                &aggregate.group_expr,
                &aggregate.aggr_expr,
                aggregate.schema.inner().clone(),
            ),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let keys: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
                self.aggregate(input, &keys, &[], input.schema().inner().clone())
            }
            LogicalPlan::Union(union) => {
                let inputs = union.inputs.iter().map(|input| self.lower(input)).collect::<SqlResult<Vec<_>>>()?;
                let all = |test: &dyn Fn(Changes) -> bool| inputs.iter().all(|&i| test(self.plan.nodes[i].changes));
                let changes = if all(&|c| c == Changes::AppendOnly) {
                    Changes::AppendOnly
                } else {
                    Changes::Updates { finals: all(&|c| c != Changes::Updates { finals: false }) }
                };
                let lateness = inputs.iter().map(|&i| self.plan.nodes[i].lateness_nanos).max().unwrap_or(0);
                Ok(self.plan.add(PlanNode {
                    kind: NodeKind::Union { inputs },
                    schema: union.schema.inner().clone(),
                    changes,
                    window: None,
                    event_time: None,
                    lateness_nanos: lateness,
                    key: None,
                    label: "Union".into(),
                }))
            }
            // DISTINCT ON's ORDER BY picks each group's row (the plan repeats it above).
            LogicalPlan::Sort(sort)
                if sort.fetch.is_none()
                    && matches!(sort.input.as_ref(), LogicalPlan::Distinct(Distinct::On(_))) =>
            {
                self.lower(&sort.input)
            }
            LogicalPlan::Distinct(Distinct::On(on)) => self.distinct_on(on),
            LogicalPlan::Sort(sort) if sort.fetch.is_some() => self.ordered_limit(
                &sort.input,
                &sort.expr,
                sort.fetch.expect("checked"),
                sort.input.schema().inner().clone(),
            ),
            LogicalPlan::Sort(_) => Err(self.error(
                "ORDER BY alone is not supported in a streaming view: a stream has no end to sort by; order the results where you read them, or keep the first rows with ORDER BY … LIMIT n",
            )),
            LogicalPlan::Limit(limit) => {
                use datafusion::logical_expr::{FetchType, SkipType};
                match (limit.get_skip_type(), limit.get_fetch_type(), limit.input.as_ref()) {
                    (Ok(SkipType::Literal(0)), Ok(FetchType::Literal(Some(fetch))), LogicalPlan::Sort(sort))
                        if sort.fetch.is_none() =>
                    {
                        self.ordered_limit(&sort.input, &sort.expr, fetch, limit.input.schema().inner().clone())
                    }
                    _ => Err(self.error(
                        "LIMIT in a streaming view keeps the first rows in an order: write ORDER BY … LIMIT n (a number, without OFFSET)",
                    )),
                }
            }
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Window(window) if is_anomaly_score(window) => self.score_anomalies(window),
            LogicalPlan::Window(window) => {
                let address = window as *const datafusion::logical_expr::Window as usize;
                let bound = self.bounded_row_numbers.iter().find(|(a, _)| *a == address);
                match bound {
                    Some(&(_, limit)) if window.window_expr.len() == 1 => self.numbered_top_n(window, limit),
                    _ => self.analytic(window),
                }
            }
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => {
                Err(self.error("a streaming view reads from a source or another view (FROM is missing)"))
            }
            other => Err(self.error(format!("{} is not supported in a streaming view", other.display()))),
        }
    }

    /// `anomaly_score('detector', value) OVER (PARTITION BY key …)`: each series is scored in
    /// event-time order by its own detector.
    fn score_anomalies(&mut self, window: &datafusion::logical_expr::Window) -> SqlResult<NodeId> {
        use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionDefinition};
        let refused = || {
            self.error(
                "anomaly_score('detector', value) OVER (PARTITION BY …) goes alone in its SELECT; compute other window functions in another view",
            )
        };
        let [expr] = window.window_expr.as_slice() else {
            return Err(refused());
        };
        let Expr::WindowFunction(function) = expr.clone().unalias() else {
            return Err(refused());
        };
        let WindowFunction { fun, params } = *function;
        let WindowFunctionDefinition::WindowUDF(udf) = fun else {
            return Err(refused());
        };
        if udf.name() != "anomaly_score" {
            return Err(refused());
        }
        let detector = match params.args.first() {
            Some(Expr::Literal(datafusion::common::ScalarValue::Utf8(Some(name)), _)) => name.clone(),
            _ => return Err(self.error("anomaly_score's first argument names the detector, as text: anomaly_score('auto', temp_c)")),
        };
        let values: Vec<Expr> = params.args[1..].to_vec();
        if values.is_empty() {
            return Err(
                self.error("anomaly_score needs the value to score: anomaly_score('auto', temp_c)")
            );
        }
        vibelux_models::detector::Scorer::for_values(&detector, &[], values.len())
            .map_err(|problem| self.error(format!("anomaly_score: {problem}")))?;
        let input = self.lower(&window.input)?;
        let input_node = self.plan.nodes[input].clone();
        if input_node.changes != Changes::AppendOnly {
            return Err(self.error("anomaly_score scores a stream of readings; its input here is a view whose rows update"));
        }
        let time = input_node.event_time.ok_or_else(|| {
            self.error("anomaly_score needs the readings' event time to pass through unchanged")
        })?;
        let input_schema = window.input.schema();
        let kept = input_schema.fields().len();
        let extra: Vec<Expr> = params.partition_by.iter().chain(&values).cloned().collect();
        let calc = self.with_columns(input, input_schema, &extra)?;
        let keys: Vec<usize> = (kept..kept + params.partition_by.len()).collect();
        let first_value = kept + keys.len();
        let spec = AnomalySpec {
            detector,
            values: (first_value..first_value + values.len()).collect(),
            keys,
            time,
            kept,
        };
        let schema =
            carried_schema(window.schema.inner()).map_err(|message| self.error(message))?;
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::ScoreAnomalies {
                input: calc,
                spec: Arc::new(spec),
            },
            schema,
            changes: Changes::AppendOnly,
            window: input_node.window,
            event_time: Some(time),
            lateness_nanos: input_node.lateness_nanos,
            key: None,
            label: format!("ScoreAnomalies {expr}"),
        }))
    }

    /// A Calc that passes `input`'s columns through and appends `extra` after them (what the
    /// series operators read: keys and values beside the row they give back).
    fn with_columns(
        &mut self,
        input: NodeId,
        input_schema: &DFSchema,
        extra: &[Expr],
    ) -> SqlResult<NodeId> {
        let mut projections: Vec<Expr> = input_schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let mut fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for expr in extra {
            let data_type = expr
                .get_type(input_schema)
                .map_err(|error| located(error, self.position))?;
            fields.push(Field::new(
                format!("__column_{}", fields.len()),
                data_type,
                true,
            ));
            projections.push(expr.clone());
        }
        let projected = Arc::new(Schema::new(fields));
        self.calc(input, input_schema, None, &projections, projected)
    }

    /// Adds a Calc over `input`, carrying window and event-time columns through plain references.
    fn calc(
        &mut self,
        input: NodeId,
        input_schema: &DFSchema,
        predicate: Option<&Expr>,
        projections: &[Expr],
        output_schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        let output_schema =
            carried_schema(&output_schema).map_err(|message| self.error(message))?;
        let output_schema = with_units(
            &output_schema,
            projections
                .iter()
                .map(|e| unit_of(e, input_schema, &self.plan.nodes[input].schema)),
        );
        let (physical_predicate, physical_projections) =
            self.physicals(predicate, projections, input_schema, false)?;
        let input_node = self.plan.nodes[input].clone();
        let passthrough = |column: Option<usize>| -> Option<usize> {
            let column = column?;
            projections
                .iter()
                .position(|expr| match expr.clone().unalias() {
                    Expr::Column(c) => input_schema.index_of_column(&c).ok() == Some(column),
                    _ => false,
                })
        };
        let window = input_node.window.and_then(|w| {
            let moved = WindowColumns {
                start: passthrough(w.start),
                end: passthrough(w.end),
                kind: w.kind,
            };
            (moved.start.is_some() || moved.end.is_some()).then_some(moved)
        });
        // The key survives a projection that keeps all of its columns.
        let key: Option<Vec<usize>> = input_node.key.as_ref().and_then(|key| {
            key.iter()
                .map(|&k| passthrough(Some(k)))
                .collect::<Option<Vec<_>>>()
        });
        let mut label = String::from("Calc");
        if let Some(predicate) = predicate {
            label.push_str(&format!(" filter=({predicate})"));
        }
        let is_identity = projections.len() == input_schema.fields().len()
            && projections.iter().enumerate().all(|(i, e)| {
                matches!(e, Expr::Column(c) if input_schema.index_of_column(c).ok() == Some(i))
            });
        if !is_identity {
            let shown: Vec<String> = projections.iter().map(|e| e.to_string()).collect();
            label.push_str(&format!(" project=[{}]", shown.join(", ")));
        }
        let (written_predicate, written_projections) =
            self.physicals(predicate, projections, input_schema, true)?;
        let calc = Calc::new(
            input_node.schema.clone(),
            physical_predicate,
            physical_projections,
        )
        .identified_as_written(written_predicate.as_ref(), &written_projections)
        .described(CalcDescription {
            view: String::new(),
            predicate: predicate.map(|p| p.to_string()),
            projections: projections.iter().map(|e| e.to_string()).collect(),
        });
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Calc {
                input,
                calc: Arc::new(calc),
            },
            schema: output_schema,
            changes: input_node.changes,
            window,
            event_time: passthrough(input_node.event_time),
            lateness_nanos: input_node.lateness_nanos,
            key,
            label,
        }))
    }

    fn aggregate(
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
            // aggregate skips (count(*) counts a 1 for each row that passes).
            let argument = match params.filter.as_deref() {
                None => argument,
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
                "array_agg" => {
                    if params.filter.is_some() {
                        return Err(self.error(format!(
                            "array_agg(…) FILTER (WHERE …) is not supported yet (a list keeps its NULLs); filter the rows in a view first: {shown}"
                        )));
                    }
                    let descending_or_nulls_first = params
                        .order_by
                        .first()
                        .is_some_and(|sort| !sort.asc || sort.nulls_first);
                    if descending_or_nulls_first {
                        return Err(self.error(format!(
                            "array_agg(… ORDER BY … DESC or NULLS FIRST) is not supported yet; order ascending, NULLs last: {shown}"
                        )));
                    }
                    Function::ArrayAgg
                }
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
            specs.push(AggregateSpec {
                function,
                argument,
                order_by,
                reference,
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
        let plan = AggregatePlan {
            key_columns: group_exprs.len(),
            aggregates: specs,
            input_retracts: !appends,
            window: close,
            session,
        };
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Aggregate {
                input: pre,
                plan: Arc::new(plan),
            },
            schema: output_schema,
            changes: Changes::Updates {
                finals: window.is_some(),
            },
            window,
            event_time: None,
            lateness_nanos: input_node.lateness_nanos,
            key: Some((0..group_exprs.len()).collect()),
            label,
        }))
    }
}

/// Aggregates whose result is in the unit of their argument.
const UNIT_PRESERVING: &[&str] = &[
    "avg",
    "mean",
    "min",
    "max",
    "sum",
    "first_value",
    "last_value",
    "median",
    "stddev",
    "stddev_pop",
    "stddev_samp",
];

/// The unit of an expression's result, where it is plainly its input's: a column, a cast of
/// one, or an average, extreme or sum of one. Arithmetic yields no unit (°C × 1.8 + 32 is °F,
/// and guessing would mislabel).
fn unit_of(expr: &Expr, input_schema: &DFSchema, input_node_schema: &Schema) -> Option<String> {
    match expr.clone().unalias() {
        Expr::Column(column) => {
            let index = input_schema.index_of_column(&column).ok()?;
            input_node_schema
                .fields()
                .get(index)?
                .metadata()
                .get(UNIT_METADATA)
                .cloned()
        }
        Expr::Cast(cast) => unit_of(&cast.expr, input_schema, input_node_schema),
        Expr::TryCast(cast) => unit_of(&cast.expr, input_schema, input_node_schema),
        Expr::AggregateFunction(AggregateFunction { func, params })
            if UNIT_PRESERVING.contains(&func.name().to_ascii_lowercase().as_str()) =>
        {
            unit_of(params.args.first()?, input_schema, input_node_schema)
        }
        _ => None,
    }
}

/// `schema` with each field's unit (in order) recorded in its metadata.
fn with_units(schema: &SchemaRef, units: impl Iterator<Item = Option<String>>) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(units.chain(std::iter::repeat(None)))
        .map(|(field, unit)| {
            let mut metadata = field.metadata().clone();
            match unit {
                Some(unit) => metadata.insert(UNIT_METADATA.to_string(), unit),
                None => metadata.remove(UNIT_METADATA),
            };
            field.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Integer `+`, `-` and `*` that overflow fail (and the row goes to `<view>_errors`) rather
/// than wrap around to a wrong number, which DataFusion does by default.
fn fail_on_overflow(
    expr: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
) -> datafusion::common::Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_expr::expressions::BinaryExpr;
    expr.transform_up(|node| {
        let Some(binary) = node.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(node));
        };
        let checked = BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
            .with_fail_on_overflow(true);
        Ok(Transformed::yes(Arc::new(checked)))
    })
    .map(|transformed| transformed.data)
}

/// The schema a node's rows are described by; refuses types rows cannot carry.
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

/// Why aggregate `name` cannot take lengths of time (`INTERVAL`s, such as `ts - LAG(ts)`), if it
/// cannot: the sums behind the others are of numbers.
pub(crate) fn refused_over_durations(
    name: &str,
    argument_type: Option<&DataType>,
) -> Option<String> {
    let durations = matches!(argument_type, Some(DataType::Duration(_)));
    let takes_them = matches!(name, "count" | "min" | "max" | "first_value" | "last_value");
    (durations && !takes_them).then(|| {
        format!(
            "{name} of an INTERVAL is not supported yet (count, min, max, first_value and last_value are); aggregate its seconds instead, {name}(date_part('epoch', …))"
        )
    })
}

/// Whether a window node computes `anomaly_score` (the rest are analytic functions).
fn is_anomaly_score(window: &datafusion::logical_expr::Window) -> bool {
    use datafusion::logical_expr::expr::WindowFunctionDefinition;
    window
        .window_expr
        .iter()
        .any(|expr| match expr.clone().unalias() {
            Expr::WindowFunction(function) => matches!(
                &function.fun,
                WindowFunctionDefinition::WindowUDF(udf) if udf.name() == "anomaly_score"
            ),
            _ => false,
        })
}

pub fn carried_schema(schema: &SchemaRef) -> Result<SchemaRef, String> {
    for field in schema.fields() {
        if storage_type(field.data_type()).is_none() {
            return Err(format!(
                "column `{}` has type {}, which views cannot carry yet; cast it to TEXT, BIGINT, DOUBLE, BOOLEAN or TIMESTAMP",
                field.name(),
                field.data_type()
            ));
        }
    }
    // Every node's fields are nullable: outer expressions may produce nulls a declaration forbids.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}
