//! `SELECT DISTINCT ON (sensor_id) … ORDER BY sensor_id, ts DESC`: one row per group, the one
//! the order puts first (the latest reading per sensor). It is a `GROUP BY` on the `ON`
//! expressions whose columns are each the `first_value` in that order, an updating view like
//! any other aggregate (a later reading replaces the row).

use datafusion::functions_aggregate::first_last::first_value_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{DistinctOn, Expr, LogicalPlanBuilder, col};

use super::{Lowering, located};
use crate::error::SqlResult;
use crate::plan::NodeId;

impl Lowering<'_> {
    pub(super) fn distinct_on(&mut self, on: &DistinctOn) -> SqlResult<NodeId> {
        let sort = on.sort_expr.as_deref().unwrap_or_default();
        let deciding: Vec<_> = sort
            .iter()
            .filter(|sort| !on.on_expr.contains(&sort.expr))
            .collect();
        let [decider] = deciding.as_slice() else {
            return Err(self.error(
                "DISTINCT ON (…) takes ORDER BY the ON expressions then one key that picks each group's row (ts DESC for the latest)",
            ));
        };
        let picked: Vec<Expr> = on
            .select_expr
            .iter()
            .enumerate()
            .map(|(index, expr)| {
                Expr::AggregateFunction(AggregateFunction::new_udf(
                    first_value_udaf(),
                    vec![expr.clone()],
                    false,
                    None,
                    vec![(*decider).clone()],
                    None,
                ))
                .alias(format!("__distinct_on_{index}"))
            })
            .collect();
        let names = on.schema.fields().iter().map(|field| field.name().clone());
        let plan = LogicalPlanBuilder::from(on.input.as_ref().clone())
            .aggregate(on.on_expr.clone(), picked)
            .and_then(|plan| {
                plan.project(
                    names
                        .enumerate()
                        .map(|(index, name)| col(format!("__distinct_on_{index}")).alias(name)),
                )
            })
            .and_then(LogicalPlanBuilder::build)
            .map_err(|error| located(error, self.position))?;
        self.lower(&plan)
    }
}
