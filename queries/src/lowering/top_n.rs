//! TOP-N: `ROW_NUMBER() OVER (PARTITION BY zone ORDER BY temp_avg DESC)` bounded by a filter
//! on it (`WHERE rn <= 3`), and `ORDER BY … LIMIT n` for a whole view, to one `TopN` node
//! (`operators/src/top_n.rs`) that keeps each group's rows in order and updates the first
//! ones as rows come and go. Without a bound, numbering rows by a value would renumber every
//! later row at each new one, so it is refused, saying how to bound it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, Operator, SortExpr, Window};
use vibelux_operators::top_n::{SortKey, TopNSpec};

use super::{Lowering, carried_schema, located};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

impl Lowering<'_> {
    /// The bound a filter puts on a `ROW_NUMBER()` of a window below it (through projections
    /// and aliases): the window's address and the highest number the filter lets through.
    pub(super) fn row_number_bound(
        predicate: &Expr,
        input: &LogicalPlan,
    ) -> Option<(usize, usize)> {
        split_conjunction(predicate)
            .into_iter()
            .find_map(|conjunct| {
                let Expr::BinaryExpr(binary) = conjunct else {
                    return None;
                };
                let whole = |expr: &Expr| match expr {
                    Expr::Literal(ScalarValue::Int64(Some(n)), _) => Some(*n),
                    Expr::Literal(ScalarValue::UInt64(Some(n)), _) => i64::try_from(*n).ok(),
                    Expr::Literal(ScalarValue::Int32(Some(n)), _) => Some(i64::from(*n)),
                    Expr::Cast(cast) => match cast.expr.as_ref() {
                        Expr::Literal(ScalarValue::Int64(Some(n)), _) => Some(*n),
                        _ => None,
                    },
                    _ => None,
                };
                // The number may be cast to the bound's type.
                let column_of = |expr: &Expr| match expr {
                    Expr::Column(column) => Some(column.clone()),
                    Expr::Cast(cast) => match cast.expr.as_ref() {
                        Expr::Column(column) => Some(column.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                let (left, right) = (binary.left.as_ref(), binary.right.as_ref());
                let (column, op, bound) = match (column_of(left), column_of(right)) {
                    (Some(column), _) => (column, binary.op, whole(right)?),
                    (None, Some(column)) => (column, binary.op.swap()?, whole(left)?),
                    _ => return None,
                };
                let highest = match op {
                    Operator::LtEq => bound,
                    Operator::Lt => bound - 1,
                    Operator::Eq if bound == 1 => 1,
                    _ => return None,
                };
                let (window, index) = numbered_by(input, &column)?;
                let Expr::WindowFunction(function) = window.window_expr[index].clone().unalias()
                else {
                    return None;
                };
                (function.fun.name().eq_ignore_ascii_case("row_number") && highest >= 1)
                    .then_some((window as *const Window as usize, highest as usize))
            })
    }

    /// `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)` with at most `limit` rows per group.
    pub(super) fn numbered_top_n(&mut self, window: &Window, limit: usize) -> SqlResult<NodeId> {
        let [expr] = window.window_expr.as_slice() else {
            return Err(self.error(
                "a bounded ROW_NUMBER() goes alone in its SELECT here; compute other window functions in another view",
            ));
        };
        let shown = expr.to_string();
        let Expr::WindowFunction(function) = expr.clone().unalias() else {
            return Err(self.error(format!("expected a window function, found {shown}")));
        };
        let WindowFunction { params, .. } = *function;
        if params.order_by.is_empty() {
            return Err(self.error(format!(
                "ROW_NUMBER() needs ORDER BY to pick the first rows: {shown}"
            )));
        }
        let input = self.lower(&window.input)?;
        // Numbered in event-time order over a stream: the series operator numbers each row
        // once, final, as a stream again (as before bounds were recognised), and the filter
        // above keeps the first ones.
        let input_node = &self.plan.nodes[input];
        let by_event_time = match (input_node.event_time, params.order_by.as_slice()) {
            (Some(time), [sort]) => {
                let time_name = window.input.schema().field(time).name();
                sort.asc && matches!(&sort.expr, Expr::Column(column) if column.name == *time_name)
            }
            _ => false,
        };
        if by_event_time && input_node.changes == Changes::AppendOnly {
            return self.analytic_over(window, input);
        }
        self.top_n(
            window.input.schema(),
            input,
            &params.partition_by,
            &params.order_by,
            limit,
            window.schema.inner().clone(),
        )
    }

    /// `ORDER BY … LIMIT n`: the first `n` rows of the whole view, in order.
    pub(super) fn ordered_limit(
        &mut self,
        input: &LogicalPlan,
        order: &[SortExpr],
        limit: usize,
        output_schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        let lowered = self.lower(input)?;
        self.top_n(input.schema(), lowered, &[], order, limit, output_schema)
    }

    /// A TopN node over `input` (planned with `input_schema`), projected to `output_schema`
    /// (the input's columns, and the row number when the schema has one more column).
    #[allow(clippy::too_many_arguments)]
    fn top_n(
        &mut self,
        input_schema: &DFSchemaRef,
        input: NodeId,
        partition: &[Expr],
        order: &[SortExpr],
        limit: usize,
        output_schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        let kept = input_schema.fields().len();
        let numbered = output_schema.fields().len() > kept;
        let mut extra: Vec<Expr> = partition.to_vec();
        extra.extend(order.iter().map(|sort| sort.expr.clone()));
        let with_keys = self.with_columns(input, input_schema, &extra)?;
        let retracting = self.plan.nodes[input].changes != Changes::AppendOnly;
        let spec = TopNSpec {
            partition: (kept..kept + partition.len()).collect(),
            order: order
                .iter()
                .enumerate()
                .map(|(index, sort)| SortKey {
                    column: kept + partition.len() + index,
                    descending: !sort.asc,
                    nulls_first: sort.nulls_first,
                })
                .collect(),
            limit,
            numbered,
            retracting,
        };
        // The node's columns by position: the input's, the keys, the number.
        let carried = &self.plan.nodes[with_keys].schema;
        let mut fields: Vec<Field> = carried
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                Field::new(format!("__top_n_{index}"), field.data_type().clone(), true)
            })
            .collect();
        if numbered {
            fields.push(Field::new(
                format!("__top_n_{}", fields.len()),
                DataType::Int64,
                true,
            ));
        }
        let node_schema = Arc::new(Schema::new(fields));
        let order_shown: Vec<String> = order.iter().map(ToString::to_string).collect();
        let partition_shown: Vec<String> = partition.iter().map(ToString::to_string).collect();
        let label = match partition.is_empty() {
            true => format!("TopN {limit} by [{}]", order_shown.join(", ")),
            false => format!(
                "TopN {limit} per [{}] by [{}]",
                partition_shown.join(", "),
                order_shown.join(", ")
            ),
        };
        let lateness_nanos = self.plan.nodes[input].lateness_nanos;
        let top = self.plan.add(PlanNode {
            kind: NodeKind::TopN {
                input: with_keys,
                spec: Arc::new(spec),
            },
            schema: carried_schema(&node_schema).map_err(|message| self.error(message))?,
            changes: Changes::Updates { finals: false },
            window: None,
            event_time: None,
            lateness_nanos,
            key: None,
            label,
        });
        let top_schema = DFSchema::try_from(node_schema.as_ref().clone())
            .map_err(|error| located(error, self.position))?;
        let mut projections: Vec<Expr> = (0..kept)
            .map(|index| Expr::Column(Column::from_name(format!("__top_n_{index}"))))
            .collect();
        if numbered {
            projections.push(Expr::Column(Column::from_name(format!(
                "__top_n_{}",
                node_schema.fields().len() - 1
            ))));
        }
        let output: Vec<Field> = output_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| match numbered && index == kept {
                true => field.as_ref().clone().with_data_type(DataType::Int64),
                false => field.as_ref().clone(),
            })
            .collect();
        let output = Arc::new(Schema::new_with_metadata(
            output,
            output_schema.metadata().clone(),
        ));
        self.calc(top, &top_schema, None, &projections, output)
    }
}

/// The window and the index among its functions of the column `column` of `plan`, through
/// projections that pass it on and aliases of subqueries.
fn numbered_by<'p>(plan: &'p LogicalPlan, column: &Column) -> Option<(&'p Window, usize)> {
    match plan {
        LogicalPlan::SubqueryAlias(alias) => {
            let index = alias.schema.index_of_column(column).ok()?;
            let inner = Column::from(alias.input.schema().qualified_field(index));
            numbered_by(&alias.input, &inner)
        }
        LogicalPlan::Projection(projection) => {
            let index = projection.schema.index_of_column(column).ok()?;
            match projection.expr[index].clone().unalias() {
                Expr::Column(inner) => numbered_by(&projection.input, &inner),
                _ => None,
            }
        }
        LogicalPlan::Window(window) => {
            let index = window.schema.index_of_column(column).ok()?;
            let functions_from = window.input.schema().fields().len();
            (index >= functions_from).then(|| (window, index - functions_from))
        }
        _ => None,
    }
}
