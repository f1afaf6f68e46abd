//! Temporal filters: a `WHERE ts > now() - INTERVAL '1 hour'` on a stream's event time becomes a
//! `TemporalFilter` node (`operators/src/temporal_filter.rs`), in which `now()` is the
//! watermark. The rest of the condition stays an ordinary filter.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use vibelux_operators::temporal_filter::TemporalFilter;

use super::Lowering;
use crate::error::SqlResult;
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

/// `ts > now() - horizon` (or `>=`), in either order: the column, the horizon, and whether the
/// bound is included.
fn recent_rows(predicate: &Expr) -> Option<(String, i64, bool)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let (column, bound, inclusive) = match op {
        Operator::Gt => (left, right, false),
        Operator::GtEq => (left, right, true),
        Operator::Lt => (right, left, false),
        Operator::LtEq => (right, left, true),
        _ => return None,
    };
    let Expr::Column(column) = without_casts(column) else {
        return None;
    };
    let Expr::BinaryExpr(BinaryExpr {
        left: now,
        op: Operator::Minus,
        right: horizon,
    }) = without_casts(bound)
    else {
        return None;
    };
    let Expr::ScalarFunction(function) = without_casts(now) else {
        return None;
    };
    if function.name() != "now" {
        return None;
    }
    let Expr::Literal(horizon, _) = without_casts(horizon) else {
        return None;
    };
    Some((column.name.clone(), fixed_nanos(horizon)?, inclusive))
}

fn without_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) => without_casts(&cast.expr),
        Expr::TryCast(cast) => without_casts(&cast.expr),
        other => other,
    }
}

fn fixed_nanos(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(interval)) if interval.months == 0 => {
            Some(i64::from(interval.days) * DAY + interval.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(interval)) => {
            Some(i64::from(interval.days) * DAY + i64::from(interval.milliseconds) * 1_000_000)
        }
        _ => None,
    }
}

/// Whether `predicate` mentions `now()` anywhere: outside the pattern above it would be the
/// wall clock at planning, which a streaming view cannot mean.
fn mentions_now(predicate: &Expr) -> bool {
    let mut found = false;
    let _ = predicate.apply(|expr| {
        if let Expr::ScalarFunction(function) = expr
            && matches!(function.name(), "now" | "current_timestamp")
        {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

impl Lowering<'_> {
    /// Takes the temporal filters out of `predicate` (over `input`, whose columns `schema`
    /// describes): returns the node to read instead of `input`, and what is left to filter.
    pub(super) fn temporal_filter(
        &mut self,
        input: NodeId,
        schema: &DFSchema,
        predicate: &Expr,
    ) -> SqlResult<(NodeId, Option<Expr>)> {
        let mut temporal = Vec::new();
        let mut rest = Vec::new();
        for part in split_conjunction(predicate) {
            match recent_rows(part) {
                Some(found) => temporal.push(found),
                None if mentions_now(part) => {
                    return Err(self.error(format!(
                        "now() in a streaming view is the watermark, usable as `ts > now() - INTERVAL '1 hour'` on the event time (a temporal filter), not in {part}"
                    )));
                }
                None => rest.push(part.clone()),
            }
        }
        let rest = conjunction(rest);
        let [(column, horizon_nanos, inclusive)] = temporal.as_slice() else {
            if temporal.len() > 1 {
                return Err(self.error("one temporal filter (ts > now() - INTERVAL …) per view"));
            }
            return Ok((input, Some(predicate.clone())));
        };
        let input_node = self.plan.nodes[input].clone();
        let named = |index: usize| schema.field(index).name() == column;
        let appends = input_node.changes == Changes::AppendOnly;
        // A window's bounds age like event time: the windows of a windowed view leave the
        // interval as the watermark passes them, whatever their results were.
        let window_bound = input_node.window.as_ref().and_then(|window| {
            [window.end, window.start]
                .into_iter()
                .flatten()
                .find(|i| named(*i))
        });
        let time = match (
            input_node.event_time.filter(|time| named(*time)),
            window_bound,
        ) {
            (Some(time), _) if appends => Some(time),
            (_, Some(bound)) if !appends => Some(bound),
            (Some(_), _) => {
                return Err(self.error(
                    "a temporal filter takes a stream of rows or the windows of a windowed view; its input here is a view whose rows update",
                ));
            }
            _ => None,
        };
        let Some(time) = time else {
            return Err(self.error(format!(
                "a temporal filter compares the event time (the WATERMARK column) or a window's bounds (window_end) with now(), not `{column}`"
            )));
        };
        let filter = TemporalFilter {
            time,
            horizon_nanos: *horizon_nanos,
            inclusive: *inclusive,
        };
        let node = self.plan.add(PlanNode {
            kind: NodeKind::TemporalFilter {
                input,
                filter: Arc::new(filter),
            },
            schema: input_node.schema.clone(),
            changes: Changes::Updates { finals: false },
            window: None,
            event_time: Some(time),
            lateness_nanos: input_node.lateness_nanos,
            key: None,
            label: format!(
                "TemporalFilter {column} {} now() - {} (rows retracted as the watermark passes them)",
                if *inclusive { ">=" } else { ">" },
                crate::planner::show_nanos(*horizon_nanos)
            ),
        });
        Ok((node, rest))
    }
}
