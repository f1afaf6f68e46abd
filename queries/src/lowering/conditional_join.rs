//! Outer, semi and anti joins with conditions beside their equalities:
//! `LEFT JOIN setpoints s ON r.zone = s.zone AND r.temp_c > s.max_c`,
//! `WHERE EXISTS (SELECT 1 FROM alarms a WHERE a.zone = r.zone AND a.raised > r.ts)`.
//!
//! Whether a row matches depends on the pairs it makes, not on its key alone, so the key
//! presence an unconditional outer join reads (`operators/src/arranged_join.rs`) cannot answer
//! it. The pairs that meet every condition are the inner join filtered; a row matched when it
//! is in one of them. So a side's unmatched rows are an anti join of that side with the matched
//! pairs' columns of it, on every column (NULLs matching NULLs, as a row equals itself): each
//! copy of a row that no pair met, however many copies. An outer join is the pairs met plus
//! each side's unmatched rows padded with NULLs; a semi join is the matched rows of the left,
//! an anti join the unmatched ones. All of it is built from the join and filter nodes there
//! already are, on the same arrangements, and follows the tables as they change: a setpoint
//! that rises above a reading retracts the pair and brings the padded reading back.
//!
//! The state is the inner join's arrangements plus the kept side arranged by all its columns
//! and the matched pairs' rows of it: a stream kept by an outer join against a table is held
//! whole, as it is for any join of a stream with a table.
//!
//! The common case is cheaper: when the join's keys cover the right side's key (a table joined
//! by its primary key, an aggregate by its groups), a left row has one partner at most, and
//! whether it matches is whether that one pair meets the condition. Then a `LEFT JOIN` is the
//! plain one with the right side's columns NULL where the condition fails, a semi join the
//! inner join filtered by it, an anti join the plain `LEFT JOIN` filtered by its failing (no
//! partner counts as failing): the plain join's state, and its cost.

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Join, JoinType, build_join_schema, when};
use vibelux_operators::arranged_join::Outer;

use super::join::described_keys;
use super::{Lowering, carried_schema, located, with_units};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

/// What a conditional join gives: which sides' unmatched rows, or which left rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    pub keep_left: bool,
    pub keep_right: bool,
    /// A semi join (`Some(true)`) or an anti join (`Some(false)`).
    pub left_rows_matching: Option<bool>,
}

/// One side of the join, lowered.
pub(super) struct Side<'a> {
    pub node: NodeId,
    pub schema: &'a DFSchema,
    pub keys: &'a [Expr],
}

impl Lowering<'_> {
    pub(super) fn conditional_join(
        &mut self,
        join: &Join,
        left: Side<'_>,
        right: Side<'_>,
        conditions: Vec<Expr>,
        kept: Kept,
    ) -> SqlResult<NodeId> {
        let described = conjunction(conditions.clone()).map_or(String::new(), |c| c.to_string());
        let Some(condition) = conjunction(conditions) else {
            return Err(self.error("a conditional join needs a condition"));
        };
        let left_node = self.plan.nodes[left.node].clone();
        let right_node = self.plan.nodes[right.node].clone();
        if !kept.keep_right && one_partner_at_most(&right_node, &right) {
            return self.one_partner_join(join, left, right, condition, kept);
        }
        let lateness = left_node.lateness_nanos.max(right_node.lateness_nanos);
        let both = left
            .schema
            .join(right.schema)
            .map_err(|error| located(error, self.position))?;
        let both_schema = self.schema_of(&both, &left_node, &right_node)?;
        // Every pair on the keys, then those that meet the condition.
        let pairs = self.pairs(&left, &right, false, both_schema.clone())?;
        let every_column: Vec<Expr> = both.columns().into_iter().map(Expr::Column).collect();
        let met = self.calc(
            pairs,
            &both,
            Some(&condition),
            &every_column,
            both_schema.clone(),
        )?;
        if let Some(matching) = kept.left_rows_matching {
            return self.rows_met(met, &both, &left, matching, &described);
        }
        let output = self.joined_schema(join, &left_node, &right_node)?;
        let mut parts = vec![self.calc(met, &both, None, &every_column, output.clone())?];
        if kept.keep_left {
            let unmatched = self.rows_met(met, &both, &left, false, &described)?;
            parts.push(self.padded(unmatched, &left, right.schema, true, output.clone())?);
        }
        if kept.keep_right {
            let unmatched = self.rows_met(met, &both, &right, false, &described)?;
            parts.push(self.padded(unmatched, &right, left.schema, false, output.clone())?);
        }
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Union { inputs: parts },
            schema: output,
            changes: Changes::Updates { finals: false },
            window: left_node.window,
            event_time: left_node.event_time,
            lateness_nanos: lateness,
            key: None,
            label: "Union of the pairs met and the rows that met none".into(),
        }))
    }

    /// A conditional join whose left rows have one partner at most: the plain join, and the
    /// condition applied to its one pair.
    fn one_partner_join(
        &mut self,
        join: &Join,
        left: Side<'_>,
        right: Side<'_>,
        condition: Expr,
        kept: Kept,
    ) -> SqlResult<NodeId> {
        let left_node = self.plan.nodes[left.node].clone();
        let right_node = self.plan.nodes[right.node].clone();
        let both = left
            .schema
            .join(right.schema)
            .map_err(|error| located(error, self.position))?;
        // Semi: the pairs; LEFT and anti: every left row, padded where it has no partner.
        let keep_left = kept.left_rows_matching != Some(true);
        let padded_schema = match keep_left {
            true => build_join_schema(left.schema, right.schema, &JoinType::Left)
                .map_err(|error| located(error, self.position))?,
            false => both.clone(),
        };
        let pairs_schema = self.schema_of(&padded_schema, &left_node, &right_node)?;
        let pairs = self.pairs(&left, &right, keep_left, pairs_schema)?;
        let left_columns: Vec<Expr> = left
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let output = self.joined_schema(join, &left_node, &right_node)?;
        match kept.left_rows_matching {
            Some(true) => self.calc(pairs, &both, Some(&condition), &left_columns, output),
            Some(false) => {
                let failed = condition.is_not_true();
                self.calc(pairs, &padded_schema, Some(&failed), &left_columns, output)
            }
            None => {
                // The right side's columns where the pair meets the condition, NULL elsewhere.
                let right_columns = right
                    .schema
                    .columns()
                    .into_iter()
                    .map(|column| when(condition.clone(), Expr::Column(column)).end());
                let projections = left_columns
                    .into_iter()
                    .map(Ok)
                    .chain(right_columns)
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(|error| located(error, self.position))?;
                self.calc(pairs, &padded_schema, None, &projections, output)
            }
        }
    }

    /// Every pair of rows equal on the keys (and with `keep_left`, the left rows with no
    /// partner, padded), laid out as `schema`.
    fn pairs(
        &mut self,
        left: &Side<'_>,
        right: &Side<'_>,
        keep_left: bool,
        schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        let left_node = self.plan.nodes[left.node].clone();
        let right_node = self.plan.nodes[right.node].clone();
        let left_keyed = self.keyed(left.node, left.schema, left.keys)?;
        let right_keyed = self.keyed(right.node, right.schema, right.keys)?;
        let keys = described_keys(left.keys, right.keys);
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Join {
                left: left_keyed,
                right: right_keyed,
                key_columns: left.keys.len(),
                outer: Outer {
                    keep_left,
                    left_width: left.schema.fields().len(),
                    right_width: right.schema.fields().len(),
                    ..Outer::default()
                },
                expiry: None,
            },
            schema,
            changes: Changes::Updates { finals: false },
            window: left_node.window,
            event_time: left_node.event_time,
            lateness_nanos: left_node.lateness_nanos.max(right_node.lateness_nanos),
            key: None,
            label: format!(
                "{}Join on {}",
                if keep_left { "Left" } else { "" },
                keys.join(" AND ")
            ),
        }))
    }

    /// The Arrow schema of rows laid out as `schema`: the two sides' columns, with their units.
    fn schema_of(
        &self,
        schema: &DFSchema,
        left: &PlanNode,
        right: &PlanNode,
    ) -> SqlResult<SchemaRef> {
        let carried = carried_schema(schema.inner()).map_err(|message| self.error(message))?;
        Ok(with_units(
            &carried,
            left.schema
                .fields()
                .iter()
                .chain(right.schema.fields())
                .map(|f| {
                    f.metadata()
                        .get(vibelux_interfaces::metadata::UNIT)
                        .cloned()
                }),
        ))
    }

    /// The rows of `side` that some pair in `met` holds (`matching`), or that none does: a semi
    /// or anti join on all of the side's columns, NULLs matching NULLs.
    fn rows_met(
        &mut self,
        met: NodeId,
        both: &DFSchema,
        side: &Side<'_>,
        matching: bool,
        described: &str,
    ) -> SqlResult<NodeId> {
        let columns: Vec<Expr> = side
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let width = columns.len();
        let side_schema = self.plan.nodes[side.node].schema.clone();
        let side_rows = self.keyed(side.node, side.schema, &columns)?;
        let met_rows = self.calc(met, both, None, &columns, side_schema.clone())?;
        let met_rows = self.keyed(met_rows, side.schema, &columns)?;
        let node = self.plan.nodes[side.node].clone();
        Ok(self.plan.add(PlanNode {
            kind: NodeKind::Join {
                left: side_rows,
                right: met_rows,
                key_columns: width,
                outer: Outer {
                    left_width: width,
                    right_width: width,
                    left_rows_matching: Some(matching),
                    nulls_match: true,
                    ..Outer::default()
                },
                expiry: None,
            },
            schema: side_schema,
            changes: Changes::Updates { finals: false },
            window: node.window,
            event_time: node.event_time,
            lateness_nanos: node.lateness_nanos,
            key: None,
            label: match matching {
                true => format!("SemiJoin: the rows in a pair meeting {described}"),
                false => format!("AntiJoin: the rows in no pair meeting {described}"),
            },
        }))
    }

    /// `rows` of one side with NULLs where the other side's columns go, in the join's layout.
    fn padded(
        &mut self,
        rows: NodeId,
        side: &Side<'_>,
        other: &DFSchema,
        side_is_left: bool,
        output: SchemaRef,
    ) -> SqlResult<NodeId> {
        let own: Vec<Expr> = side
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let nulls = other
            .fields()
            .iter()
            .map(|field| {
                ScalarValue::try_from(field.data_type())
                    .map(|null| Expr::Literal(null, None))
                    .map_err(|error| located(error, self.position))
            })
            .collect::<SqlResult<Vec<_>>>()?;
        let projections: Vec<Expr> = match side_is_left {
            true => own.into_iter().chain(nulls).collect(),
            false => nulls.into_iter().chain(own).collect(),
        };
        let fields = output.fields().iter().cloned().collect::<Vec<_>>();
        self.calc(
            rows,
            side.schema,
            None,
            &projections,
            std::sync::Arc::new(Schema::new(fields)),
        )
    }
}

/// Whether each left row meets one right row at most: the join's keys on the right are plain
/// columns that cover the right side's key (a table's primary key, an aggregate's groups).
fn one_partner_at_most(right_node: &PlanNode, right: &Side<'_>) -> bool {
    let Some(key) = &right_node.key else {
        return false;
    };
    key.iter().all(|&column| {
        right.keys.iter().any(|expr| match expr {
            Expr::Column(c) => right.schema.index_of_column(c).ok() == Some(column),
            _ => false,
        })
    })
}
