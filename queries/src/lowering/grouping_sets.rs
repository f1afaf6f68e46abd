//! `GROUP BY ROLLUP (room, zone)`, `CUBE (…)` and `GROUPING SETS ((…), …)`: totals per zone,
//! per room and overall in one view. Each set is a plain aggregate of its own, its rows padded
//! to the whole set's columns (NULL where the set does not group by a column, and the set's
//! number in `__grouping_id` as DataFusion numbers it), and the sets' rows are one union. Each
//! set's aggregate updates by itself, so a reading changes one row of every set; each set also
//! plans the input anew (its filters and projections run once per set).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{Aggregate, Expr, GroupingSet, LogicalPlan, lit};

use super::{Lowering, located};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

impl Lowering<'_> {
    pub(super) fn grouping_sets(
        &mut self,
        input_plan: &LogicalPlan,
        set: &GroupingSet,
        aggregate_exprs: &[Expr],
        output_schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        let all: Vec<Expr> = set.distinct_expr().into_iter().cloned().collect();
        let sets: Vec<Vec<Expr>> = match set {
            GroupingSet::Rollup(exprs) => (0..=exprs.len())
                .rev()
                .map(|length| exprs[..length].to_vec())
                .collect(),
            GroupingSet::Cube(exprs) => (0..1usize << exprs.len())
                .map(|mask| {
                    exprs
                        .iter()
                        .enumerate()
                        .filter(|(index, _)| mask & (1 << index) == 0)
                        .map(|(_, expr)| expr.clone())
                        .collect()
                })
                .collect(),
            GroupingSet::GroupingSets(sets) => sets.clone(),
        };
        let id_type = output_schema.field(all.len()).data_type().clone();
        let mut masks_seen: Vec<u64> = Vec::new();
        let mut branches = Vec::new();
        for grouped in &sets {
            // DataFusion's grouping id: a bit per column left out (the last column lowest),
            // and above them how many times this set came before.
            let mask = all.iter().enumerate().fold(0u64, |mask, (index, expr)| {
                match grouped.contains(expr) {
                    true => mask,
                    false => mask | 1 << (all.len() - 1 - index),
                }
            });
            let ordinal = masks_seen.iter().filter(|seen| **seen == mask).count() as u64;
            masks_seen.push(mask);
            let id = mask | ordinal << all.len();
            let plain = Aggregate::try_new(
                Arc::new(input_plan.clone()),
                grouped.clone(),
                aggregate_exprs.to_vec(),
            )
            .map_err(|error| located(error, self.position))?;
            let plain_schema: &DFSchema = plain.schema.as_ref();
            let node = self.aggregate(
                input_plan,
                grouped,
                aggregate_exprs,
                plain_schema.inner().clone(),
            )?;
            let column =
                |index: usize| Expr::Column(Column::from(plain_schema.qualified_field(index)));
            let mut projections = Vec::with_capacity(output_schema.fields().len());
            for (index, expr) in all.iter().enumerate() {
                match grouped.iter().position(|g| g == expr) {
                    Some(position) => projections.push(column(position)),
                    None => {
                        let null = ScalarValue::try_from(output_schema.field(index).data_type())
                            .map_err(|error| located(error, self.position))?;
                        projections.push(lit(null));
                    }
                }
            }
            projections.push(lit(grouping_id(&id_type, id)));
            for index in 0..aggregate_exprs.len() {
                projections.push(column(grouped.len() + index));
            }
            branches.push(self.calc(
                node,
                plain_schema,
                None,
                &projections,
                output_schema.clone(),
            )?);
        }
        let changes = Changes::Updates {
            finals: branches.iter().all(|&branch| {
                self.plan.nodes[branch].changes != Changes::Updates { finals: false }
            }),
        };
        let lateness = branches
            .iter()
            .map(|&branch| self.plan.nodes[branch].lateness_nanos)
            .max()
            .unwrap_or(0);
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Union { inputs: branches },
            schema: output_schema,
            changes,
            window: None,
            event_time: None,
            lateness_nanos: lateness,
            key: None,
            label: format!("GroupingSets({} sets)", sets.len()),
        }))
    }
}

fn grouping_id(data_type: &DataType, id: u64) -> ScalarValue {
    match data_type {
        DataType::UInt8 => ScalarValue::UInt8(Some(id as u8)),
        DataType::UInt16 => ScalarValue::UInt16(Some(id as u16)),
        DataType::UInt32 => ScalarValue::UInt32(Some(id as u32)),
        _ => ScalarValue::UInt64(Some(id)),
    }
}
