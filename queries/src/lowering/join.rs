//! Lowering of joins: equi-joins where one side updates, inner, outer (LEFT, RIGHT, FULL),
//! semi (`IN`, `EXISTS`, `INTERSECT`) and anti (`NOT EXISTS`, `EXCEPT`), to one `Join` node
//! over two keyed inputs (`operators/src/arranged_join.rs`); `NOT IN` to three anti joins
//! (`not_in.rs`); outer, semi and anti joins with other conditions beside their equalities to
//! the pairs that meet them and the rows that meet none (`conditional_join.rs`).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, lit};
use vibelux_interfaces::metadata::UNIT as UNIT_METADATA;
use vibelux_operators::arranged_join::Outer;
use vibelux_operators::interval_join::{Expiry, SideExpiry};

use super::conditional_join::{Kept, Side};
use super::{Lowering, carried_schema, located, with_units};
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

impl Lowering<'_> {
    /// An equi-join where at least one side updates (a table, an aggregate): the join keeps
    /// both sides' rows by key. Two append-only streams would keep every row forever, so they are
    /// refused until interval joins exist.
    pub(super) fn join(&mut self, join: &datafusion::logical_expr::Join) -> SqlResult<NodeId> {
        if let Some(relation) = self.read_as_of(&join.right) {
            return self.as_of_join(join, relation);
        }
        if self.read_as_of(&join.left).is_some() {
            return Err(self.error(
                "a table read FOR SYSTEM_TIME AS OF goes on the right of the join: FROM readings r JOIN setpoints FOR SYSTEM_TIME AS OF r.ts AS s ON r.zone = s.zone",
            ));
        }
        use datafusion::logical_expr::JoinType;
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
        let (mut left_keys, mut right_keys, mut residual) = equalities(join);
        // A scalar subquery becomes a LEFT JOIN … ON true; with no equality, the join is with a
        // relation of one row at most, on a constant key.
        residual.retain(|predicate| predicate != &lit(true));
        if left_keys.is_empty() && at_most_one_row(&join.right) {
            left_keys.push(lit(true));
            right_keys.push(lit(true));
        }
        if left_keys.is_empty() {
            if let LogicalPlan::SubqueryAlias(alias) = join.right.as_ref()
                && alias.alias.table().starts_with("__scalar_sq")
            {
                return Err(self.error(
                    "a scalar subquery in a streaming view gives one row at most: aggregate it (SELECT max(…) FROM …) or relate it to the outer row by an equality (WHERE t.key = r.key)",
                ));
            }
            return Err(self.error(
                "a join needs an equality between the two sides (JOIN … ON a.key = b.key)",
            ));
        }
        let left = self.lower(&join.left)?;
        let right = self.lower(&join.right)?;
        let left_node = self.plan.nodes[left].clone();
        let right_node = self.plan.nodes[right].clone();
        // Two streams join only within an interval of each other's event time, which lets each
        // side's rows go once the other side has passed them.
        let mut expiry = None;
        let mut reach_nanos = 0;
        let mut event_time = left_node.event_time;
        if left_node.changes == Changes::AppendOnly && right_node.changes == Changes::AppendOnly {
            let refused = "joining two streams needs a bound on their event times, so that rows can leave the state: ON a.key = b.key AND a.ts BETWEEN b.ts - INTERVAL '1 minute' AND b.ts + INTERVAL '1 minute' (both bounds); or join a stream with a TABLE";
            let (Some(left_time), Some(right_time)) = (left_node.event_time, right_node.event_time)
            else {
                return Err(self.error(refused));
            };
            let bounds = interval_bounds(
                &residual,
                &left_schema,
                left_time,
                &right_schema,
                right_time,
            );
            let Some(IntervalBounds {
                lower,
                upper,
                other_conditions,
            }) = bounds
            else {
                return Err(self.error(refused));
            };
            let unmatched_rows = keep_left || keep_right || left_rows_matching.is_some();
            if unmatched_rows {
                // Whether a row met nothing is decided in the join, which knows the key and the
                // bounds; another condition would have to be, too.
                if let Some(condition) = other_conditions.first() {
                    return Err(self.error(format!(
                        "an outer, semi or anti join of two streams takes only key equalities and the bounds on their event times in its condition, not `{condition}`: filter either stream in a view first"
                    )));
                }
                residual.clear();
            }
            // l.ts - r.ts lies in [lower, upper]: a left row meets right rows up to its own
            // time - lower, a right row left rows up to its own time + upper.
            let lateness = left_node.lateness_nanos.max(right_node.lateness_nanos);
            expiry = Some(Expiry {
                left: SideExpiry {
                    time_column: left_time,
                    keep_nanos: lower.saturating_neg().saturating_add(lateness),
                },
                right: SideExpiry {
                    time_column: right_time,
                    keep_nanos: upper.saturating_add(lateness),
                },
                lower_nanos: lower,
                upper_nanos: upper,
            });
            // A pair leaves when its later row comes: its left time lags by up to the reach.
            // A row that met nothing comes out once the other side has passed it by the
            // reach (and the lateness), in the millisecond after.
            const MILLISECOND: i64 = 1_000_000;
            reach_nanos = lower.saturating_neg().max(0);
            if keep_left || left_rows_matching == Some(false) {
                reach_nanos = reach_nanos.max(lower.saturating_neg().saturating_add(MILLISECOND));
            }
            if keep_right {
                reach_nanos = reach_nanos.max(upper.saturating_add(MILLISECOND));
            }
            // A row padded with NULLs has no time on the padded side: a RIGHT join's rows keep
            // the right's, a FULL join's have none that every row has.
            event_time = match (keep_left, keep_right) {
                (false, true) => Some(left_schema.fields().len() + right_time),
                (true, true) => None,
                _ => left_node.event_time,
            };
        }
        if (keep_left || keep_right || left_rows_matching.is_some())
            && !residual.is_empty()
            && expiry.is_none()
        {
            let side = |node, schema, keys| Side { node, schema, keys };
            return self.conditional_join(
                join,
                side(left, &left_schema, &left_keys),
                side(right, &right_schema, &right_keys),
                residual,
                Kept {
                    keep_left,
                    keep_right,
                    left_rows_matching,
                },
            );
        }
        let left_keyed = self.keyed(left, &left_schema, &left_keys)?;
        let right_keyed = self.keyed(right, &right_schema, &right_keys)?;
        let keys = described_keys(&left_keys, &right_keys);
        let schema = self.joined_schema(join, &left_node, &right_node)?;
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
                expiry,
            },
            schema: schema.clone(),
            changes: Changes::Updates { finals: false },
            // An interval join's padded right rows have no left window.
            window: match expiry.is_some() && keep_right {
                true => None,
                false => left_node.window,
            },
            event_time,
            lateness_nanos: left_node
                .lateness_nanos
                .max(right_node.lateness_nanos)
                .saturating_add(reach_nanos),
            key: None,
            label: format!(
                "{}{}Join on {}",
                if expiry.is_some() { "Interval" } else { "" },
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
        self.filtered(joined, join, residual, schema)
    }

    /// The schema of a join's rows, with each side's columns' units.
    pub(super) fn joined_schema(
        &self,
        join: &datafusion::logical_expr::Join,
        left: &PlanNode,
        right: &PlanNode,
    ) -> SqlResult<SchemaRef> {
        let schema = carried_schema(join.schema.inner()).map_err(|message| self.error(message))?;
        Ok(with_units(
            &schema,
            left.schema
                .fields()
                .iter()
                .chain(right.schema.fields())
                .map(|f| f.metadata().get(UNIT_METADATA).cloned()),
        ))
    }

    /// The joined rows that meet a join's other conditions (all of them without any).
    pub(super) fn filtered(
        &mut self,
        joined: NodeId,
        join: &datafusion::logical_expr::Join,
        conditions: Vec<Expr>,
        schema: SchemaRef,
    ) -> SqlResult<NodeId> {
        use datafusion::logical_expr::utils::conjunction;
        let Some(predicate) = conjunction(conditions) else {
            return Ok(joined);
        };
        let identity: Vec<Expr> = join
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        self.calc(joined, &join.schema, Some(&predicate), &identity, schema)
    }

    /// Projects a join input to its key expressions followed by all its columns.
    pub(super) fn keyed(
        &mut self,
        node: NodeId,
        schema: &DFSchema,
        keys: &[Expr],
    ) -> SqlResult<NodeId> {
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

/// A join's key equalities as `EXPLAIN` shows them.
pub(super) fn described_keys(left_keys: &[Expr], right_keys: &[Expr]) -> Vec<String> {
    left_keys
        .iter()
        .zip(right_keys)
        .map(|(l, r)| format!("{l} = {r}"))
        .collect()
}

/// Whether a relation has one row at most: an aggregate without groups (a scalar subquery's),
/// perhaps projected, filtered or aliased.
fn at_most_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.is_empty(),
        LogicalPlan::SubqueryAlias(alias) => at_most_one_row(&alias.input),
        LogicalPlan::Projection(projection) => at_most_one_row(&projection.input),
        LogicalPlan::Filter(filter) => at_most_one_row(&filter.input),
        _ => false,
    }
}

/// A join's equalities between its two sides, as the left's and the right's key expressions,
/// and its other conditions. Without DataFusion's optimizer the ON condition stays a filter:
/// its equalities are taken from it here.
pub(super) fn equalities(
    join: &datafusion::logical_expr::Join,
) -> (Vec<Expr>, Vec<Expr>, Vec<Expr>) {
    use datafusion::logical_expr::utils::split_conjunction;
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
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
    (left_keys, right_keys, residual)
}

/// The bounds an interval join's conditions put on `l.ts - r.ts` (nanoseconds, inclusive),
/// the two event times: from `l.ts BETWEEN r.ts - INTERVAL … AND r.ts + INTERVAL …`,
/// comparisons of the two (`>=`, `>`, `<=`, `<`, either side first) and intervals added or
/// subtracted; and the conditions that are not such bounds. `None` unless both a lower and an
/// upper bound are found.
fn interval_bounds(
    residual: &[Expr],
    left_schema: &DFSchema,
    left_time: usize,
    right_schema: &DFSchema,
    right_time: usize,
) -> Option<IntervalBounds> {
    use datafusion::logical_expr::{Between, Operator};
    // Which time an expression is (true: the left's), and the interval added to it.
    let time_plus = |expr: &Expr| -> Option<(bool, i64)> {
        let (column, offset) = match expr {
            Expr::Column(column) => (column, 0),
            Expr::BinaryExpr(binary) => {
                let Expr::Column(column) = binary.left.as_ref() else {
                    return None;
                };
                let nanos = interval_nanos(binary.right.as_ref())?;
                match binary.op {
                    Operator::Plus => (column, nanos),
                    Operator::Minus => (column, nanos.checked_neg()?),
                    _ => return None,
                }
            }
            _ => return None,
        };
        if left_schema.index_of_column(column).ok() == Some(left_time) {
            Some((true, offset))
        } else if right_schema.index_of_column(column).ok() == Some(right_time) {
            Some((false, offset))
        } else {
            None
        }
    };
    let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
    // `a >= b` (`a > b` when strict) with a = x + p, b = y + q: for x left, y right,
    // l - r >= q - p (+ 1 ns when strict: times are whole nanoseconds).
    let mut at_least = |a: &Expr, b: &Expr, strict: bool| -> Option<()> {
        let ((a_left, p), (b_left, q)) = (time_plus(a)?, time_plus(b)?);
        let step = i64::from(strict);
        match (a_left, b_left) {
            (true, false) => {
                let bound = q.checked_sub(p)?.checked_add(step)?;
                lower = Some(lower.map_or(bound, |l| l.max(bound)));
            }
            (false, true) => {
                let bound = p.checked_sub(q)?.checked_sub(step)?;
                upper = Some(upper.map_or(bound, |u| u.min(bound)));
            }
            _ => return None,
        }
        Some(())
    };
    let mut other_conditions = Vec::new();
    for predicate in residual {
        let bounded = match predicate {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let low = at_least(expr, low, false);
                let high = at_least(high, expr, false);
                low.and(high)
            }
            Expr::BinaryExpr(binary) => match binary.op {
                Operator::GtEq | Operator::Gt => {
                    at_least(&binary.left, &binary.right, binary.op == Operator::Gt)
                }
                Operator::LtEq | Operator::Lt => {
                    at_least(&binary.right, &binary.left, binary.op == Operator::Lt)
                }
                _ => None,
            },
            _ => None,
        };
        if bounded.is_none() {
            other_conditions.push(predicate.clone());
        }
    }
    Some(IntervalBounds {
        lower: lower?,
        upper: upper?,
        other_conditions,
    })
}

/// What an interval join's conditions say about its two event times.
struct IntervalBounds {
    /// `l.ts - r.ts` lies in `[lower, upper]` (nanoseconds).
    lower: i64,
    upper: i64,
    /// The conditions besides the key equalities and these bounds.
    other_conditions: Vec<Expr>,
}

/// A constant interval's length in nanoseconds (no months: their length varies).
fn interval_nanos(expr: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue;
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            i64::from(v.days)
                .checked_mul(86_400_000_000_000)?
                .checked_add(v.nanoseconds)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => i64::from(v.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(v.milliseconds) * 1_000_000),
        Expr::Cast(cast) => interval_nanos(&cast.expr),
        _ => None,
    }
}
