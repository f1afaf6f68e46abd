//! Lowering of joins: equi-joins where one side updates, inner, outer (LEFT, RIGHT, FULL),
//! semi (`IN`, `EXISTS`, `INTERSECT`) and anti (`NOT EXISTS`, `EXCEPT`), to one `Join` node
//! over two keyed inputs (`operators/src/join.rs`); `NOT IN` to three anti joins (`not_in.rs`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};
use vibelux_interfaces::metadata::UNIT as UNIT_METADATA;
use vibelux_operators::join::Outer;

use super::{Lowering, carried_schema, located, with_units};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

impl Lowering<'_> {
    /// An equi-join where at least one side updates (a table, an aggregate): the join keeps
    /// both sides' rows by key. Two append-only streams would keep every row forever, so they are
    /// refused until interval joins exist.
    pub(super) fn join(&mut self, join: &datafusion::logical_expr::Join) -> SqlResult<NodeId> {
        use datafusion::logical_expr::JoinType;
        use datafusion::logical_expr::utils::{conjunction, split_conjunction};
        let (keep_left, keep_right, left_rows_matching) = match join.join_type {
            JoinType::Inner => (false, false, None),
            JoinType::Left => (true, false, None),
            JoinType::Right => (false, true, None),
            JoinType::Full => (true, true, None),
            JoinType::LeftSemi => (false, false, Some(true)),
            JoinType::LeftAnti if join.null_aware => return self.not_in(join),
            JoinType::LeftAnti => (false, false, Some(false)),
            other => {
                return Err(self.error(format!(
                    "{} joins are not supported yet; use JOIN, LEFT, RIGHT or FULL JOIN … ON, IN or EXISTS",
                    other.to_string().to_uppercase()
                )));
            }
        };
        let nulls_match = join.null_equality == datafusion::common::NullEquality::NullEqualsNull;
        let left_schema = join.left.schema().clone();
        let right_schema = join.right.schema().clone();
        let mut left_keys: Vec<Expr> = join.on.iter().map(|(l, _)| l.clone()).collect();
        let mut right_keys: Vec<Expr> = join.on.iter().map(|(_, r)| r.clone()).collect();
        let mut residual = Vec::new();
        // Which side an expression reads: Some(true) left, Some(false) right, None both or neither.
        let side_of = |expr: &Expr| -> Option<bool> {
            let columns = expr.column_refs();
            if columns.is_empty() {
                None
            } else if columns.iter().all(|c| left_schema.has_column(c)) {
                Some(true)
            } else if columns.iter().all(|c| right_schema.has_column(c)) {
                Some(false)
            } else {
                None
            }
        };
        // Without DataFusion's optimizer the ON condition stays a filter: take its equalities.
        if let Some(filter) = &join.filter {
            for predicate in split_conjunction(filter) {
                if let Expr::BinaryExpr(binary) = predicate
                    && binary.op == datafusion::logical_expr::Operator::Eq
                {
                    match (side_of(&binary.left), side_of(&binary.right)) {
                        (Some(true), Some(false)) => {
                            left_keys.push((*binary.left).clone());
                            right_keys.push((*binary.right).clone());
                            continue;
                        }
                        (Some(false), Some(true)) => {
                            left_keys.push((*binary.right).clone());
                            right_keys.push((*binary.left).clone());
                            continue;
                        }
                        _ => {}
                    }
                }
                residual.push(predicate.clone());
            }
        }
        if left_keys.is_empty() {
            return Err(self.error(
                "a join needs an equality between the two sides (JOIN … ON a.key = b.key)",
            ));
        }
        if (keep_left || keep_right || left_rows_matching.is_some()) && !residual.is_empty() {
            return Err(self.error(format!(
                "an outer, semi or anti join (LEFT/RIGHT/FULL JOIN, IN, EXISTS) matches on equalities between the two sides only (yet); filter the other conditions in a view before it: {}",
                conjunction(residual).map_or(String::new(), |c| c.to_string())
            )));
        }
        let left = self.lower(&join.left)?;
        let right = self.lower(&join.right)?;
        let left_node = self.plan.nodes[left].clone();
        let right_node = self.plan.nodes[right].clone();
        if left_node.changes == Changes::AppendOnly && right_node.changes == Changes::AppendOnly {
            return Err(self.error(
                "joining two streams would keep every row of both forever; join a stream with a TABLE (interval joins are not supported yet)",
            ));
        }
        let left_keyed = self.keyed(left, &left_schema, &left_keys)?;
        let right_keyed = self.keyed(right, &right_schema, &right_keys)?;
        let keys: Vec<String> = left_keys
            .iter()
            .zip(&right_keys)
            .map(|(l, r)| format!("{l} = {r}"))
            .collect();
        let schema = carried_schema(join.schema.inner()).map_err(|message| self.error(message))?;
        let schema = with_units(
            &schema,
            left_node
                .schema
                .fields()
                .iter()
                .chain(right_node.schema.fields())
                .map(|f| f.metadata().get(UNIT_METADATA).cloned()),
        );
        let joined = self.plan.add(PlanNode {
            kind: NodeKind::Join {
                left: left_keyed,
                right: right_keyed,
                key_columns: left_keys.len(),
                outer: Outer {
                    keep_left,
                    keep_right,
                    left_width: left_schema.fields().len(),
                    right_width: right_schema.fields().len(),
                    left_rows_matching,
                    nulls_match,
                },
            },
            schema: schema.clone(),
            changes: Changes::Updates { finals: false },
            window: left_node.window,
            event_time: left_node.event_time,
            lateness_nanos: left_node.lateness_nanos.max(right_node.lateness_nanos),
            key: None,
            label: format!(
                "{}Join on {}",
                match (keep_left, keep_right, left_rows_matching) {
                    (_, _, Some(true)) => "Semi",
                    (_, _, Some(false)) => "Anti",
                    (false, false, None) => "",
                    (true, false, None) => "Left",
                    (false, true, None) => "Right",
                    (true, true, None) => "Full",
                },
                keys.join(" AND ")
            ),
        });
        match conjunction(residual) {
            None => Ok(joined),
            Some(predicate) => {
                let identity: Vec<Expr> = join
                    .schema
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                self.calc(joined, &join.schema, Some(&predicate), &identity, schema)
            }
        }
    }

    /// Projects a join input to its key expressions followed by all its columns.
    fn keyed(&mut self, node: NodeId, schema: &DFSchema, keys: &[Expr]) -> SqlResult<NodeId> {
        let mut projections = keys.to_vec();
        projections.extend(schema.columns().into_iter().map(Expr::Column));
        let fields = projections
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let data_type = e
                    .get_type(schema)
                    .map_err(|error| located(error, self.position))?;
                Ok(Field::new(format!("_{i}"), data_type, true))
            })
            .collect::<SqlResult<Vec<_>>>()?;
        self.calc(
            node,
            schema,
            None,
            &projections,
            Arc::new(Schema::new(fields)),
        )
    }
}
