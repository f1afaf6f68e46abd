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
use aggregate::{plain_aggregate, refused_over_durations};
pub use as_of_join::AsOfTarget;

mod aggregate;
mod analytic;
mod as_of_join;
mod conditional_join;
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

/// The schema a node's rows are described by; refuses types rows cannot carry.
pub fn carried_schema(schema: &SchemaRef) -> Result<SchemaRef, String> {
    for field in schema.fields() {
        if let DataType::Union(..) = field.data_type() {
            return Err(format!(
                "column `{}` is a JSON value of any type (json_get, or ->), which views cannot carry; cast it (json_get(meta, 'fw')::text), use a typed getter (json_get_str, json_get_float, ->> for text), or json_get_json for the value's JSON text",
                field.name()
            ));
        }
        if storage_type(field.data_type()).is_none() {
            return Err(format!(
                "column `{}` has type {}, which views cannot carry yet; cast it to TEXT, BIGINT, DOUBLE, DECIMAL, BOOLEAN, TIMESTAMP or DATE",
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
