//! `x NOT IN (SELECT y FROM t)` with SQL's NULL semantics, which an anti join alone does not
//! give: a NULL among `t`'s values makes `x NOT IN (…)` unknown for every `x`, so no row
//! passes; and a NULL `x` passes only when `t` is empty. So the view is the union of
//! - rows whose `x` is not NULL, that no `y` equals, while `t` has no NULL `y`;
//! - rows whose `x` is NULL, while `t` is empty,
//!
//! each an anti join of the kind `NOT EXISTS` already is (the last two against a constant key,
//! since they ask about `t` as a whole). All three follow `t` as it changes: a NULL added to
//! `t` retracts every row, removing it brings them back.

use datafusion::logical_expr::{
    Expr, ExprSchemable, Join, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, lit,
};

use super::{Lowering, located};
use crate::error::SqlResult;
use crate::plan::NodeId;

impl Lowering<'_> {
    pub(super) fn not_in(&mut self, join: &Join) -> SqlResult<NodeId> {
        let compared = match (join.on.as_slice(), &join.filter) {
            ([(value, listed)], None) => Some((value.clone(), listed.clone())),
            ([], Some(Expr::BinaryExpr(binary))) if binary.op == Operator::Eq => {
                let reads = |expr: &Expr, plan: &LogicalPlan| {
                    let columns = expr.column_refs();
                    !columns.is_empty() && columns.iter().all(|c| plan.schema().has_column(c))
                };
                let (a, b) = (binary.left.as_ref(), binary.right.as_ref());
                if reads(a, &join.left) && reads(b, &join.right) {
                    Some((a.clone(), b.clone()))
                } else if reads(b, &join.left) && reads(a, &join.right) {
                    Some((b.clone(), a.clone()))
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some((value, listed)) = compared else {
            return Err(self.error("NOT IN (subquery) compares one value with one column of the subquery, uncorrelated; use NOT EXISTS for more"));
        };
        let plan =
            not_in_plan(join, &value, &listed).map_err(|error| located(error, self.position))?;
        self.lower(&plan)
    }
}

fn not_in_plan(
    join: &Join,
    value: &Expr,
    listed: &Expr,
) -> datafusion::common::Result<LogicalPlan> {
    let right = join.right.as_ref().clone();
    let columns: Vec<Expr> = join
        .left
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    // The whole of `t` answers under one key, which each side carries as a column.
    let keyed = |plan: LogicalPlan, name: &str| -> datafusion::common::Result<LogicalPlan> {
        let mut exprs: Vec<Expr> = plan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        exprs.push(lit(1i64).alias(name));
        LogicalPlanBuilder::from(plan).project(exprs)?.build()
    };
    let key = |name: &str| Expr::Column(name.into());
    let nulls_listed = keyed(
        LogicalPlanBuilder::from(right.clone())
            .filter(listed.clone().is_null())?
            .build()?,
        "__not_in_null",
    )?;
    let anything_listed = keyed(right.clone(), "__not_in_any")?;
    let value_type = value.get_type(join.left.schema())?;
    let left = keyed(join.left.as_ref().clone(), "__not_in_key")?;
    let unmatched = LogicalPlanBuilder::from(left.clone())
        .filter(value.clone().is_not_null())?
        .join_with_expr_keys(
            right,
            JoinType::LeftAnti,
            (
                vec![value.clone()],
                vec![listed.clone().cast_to(&value_type, join.right.schema())?],
            ),
            None,
        )?
        .join_with_expr_keys(
            nulls_listed,
            JoinType::LeftAnti,
            (vec![key("__not_in_key")], vec![key("__not_in_null")]),
            None,
        )?
        .project(columns.clone())?
        .build()?;
    let null_values = LogicalPlanBuilder::from(left)
        .filter(value.clone().is_null())?
        .join_with_expr_keys(
            anything_listed,
            JoinType::LeftAnti,
            (vec![key("__not_in_key")], vec![key("__not_in_any")]),
            None,
        )?
        .project(columns)?
        .build()?;
    LogicalPlanBuilder::from(unmatched)
        .union(null_values)?
        .build()
}
