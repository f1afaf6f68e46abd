//! Lowering of `FROM stream r [LEFT] JOIN versions FOR SYSTEM_TIME AS OF r.ts AS v ON r.key =
//! v.key` to one `AsOfJoin` node over the stream and the table's versions, both keyed by the
//! table's primary key (`operators/src/as_of_join.rs`).

use datafusion::common::Column;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, when};
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use vibelux_operators::as_of_join::AsOfSpec;

use super::join::{described_keys, equalities};
use super::{Lowering, located};

use crate::error::{Position, SqlError, SqlResult};
use crate::plan::{Changes, NodeId, NodeKind, PlanNode};

/// A versioned table read as of a time, as the planner found it.
#[derive(Debug, Clone)]
pub struct AsOfTarget {
    pub table: String,
    /// Its primary key's columns.
    pub key_columns: Vec<usize>,
    /// The time it is read as of, as written: the other side's event-time column.
    pub time: SqlExpr,
    pub position: Position,
}

impl Lowering<'_> {
    /// Declares the synthetic relations of tables read as of a time.
    pub fn with_as_of(mut self, as_of: impl IntoIterator<Item = (String, AsOfTarget)>) -> Self {
        self.as_of.extend(as_of);
        self
    }

    /// The synthetic relation `plan` reads, if it is a table read as of a time.
    pub(super) fn read_as_of(&self, plan: &LogicalPlan) -> Option<String> {
        match plan {
            LogicalPlan::SubqueryAlias(alias) => self.read_as_of(&alias.input),
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                self.as_of.contains_key(name).then(|| name.to_string())
            }
            _ => None,
        }
    }

    pub(super) fn as_of_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        relation: String,
    ) -> SqlResult<NodeId> {
        let target = self.as_of[&relation].clone();
        let at = |message: String| SqlError::new(target.position, message);
        let keep_unmatched = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => {
                return Err(at(format!(
                    "a join FOR SYSTEM_TIME AS OF is an inner or a LEFT join, not {}",
                    other.to_string().to_uppercase()
                )));
            }
        };
        let (left_schema, right_schema) = (join.left.schema().clone(), join.right.schema().clone());
        let (left_keys, right_keys, mut residual) = equalities(join);
        // The table's key, matched whole: other equalities are conditions on the pair.
        let mut keys: Vec<(usize, Expr, Expr)> = Vec::new();
        for (left, right) in left_keys.into_iter().zip(right_keys) {
            let key_column = match &right {
                Expr::Column(column) => right_schema
                    .index_of_column(column)
                    .ok()
                    .filter(|index| target.key_columns.contains(index)),
                _ => None,
            };
            match key_column {
                Some(index) if !keys.iter().any(|(seen, _, _)| *seen == index) => {
                    keys.push((index, left, right));
                }
                _ => residual.push(left.eq(right)),
            }
        }
        let key_names: Vec<&str> = target
            .key_columns
            .iter()
            .map(|&index| right_schema.field(index).name().as_str())
            .collect();
        if keys.len() != target.key_columns.len() {
            return Err(at(format!(
                "a join FOR SYSTEM_TIME AS OF matches the whole primary key of `{}` ({}) with equalities to the stream's columns",
                target.table,
                key_names.join(", ")
            )));
        }
        keys.sort_by_key(|(index, _, _)| *index);
        let left = self.lower(&join.left)?;
        self.admitted_as_of = Some(relation);
        let right = self.lower(&join.right);
        self.admitted_as_of = None;
        let right = right?;
        let (left_node, right_node) = (
            self.plan.nodes[left].clone(),
            self.plan.nodes[right].clone(),
        );
        if left_node.changes != Changes::AppendOnly {
            return Err(at(
                "a join FOR SYSTEM_TIME AS OF looks up the rows of a stream, and the other side updates (a table, an aggregate): join it with JOIN … ON instead".to_string(),
            ));
        }
        let time = self.as_of_time(&target, &left_schema, left_node.event_time)?;
        let version_time = right_node
            .event_time
            .expect("a versioned table's versions have an event time");
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = keys
            .into_iter()
            .map(|(_, left, right)| (left, right))
            .unzip();
        let described_keys = described_keys(&left_keys, &right_keys);
        let stream = self.keyed(left, &left_schema, &left_keys)?;
        let versions = self.keyed(right, &right_schema, &right_keys)?;
        let schema = self.joined_schema(join, &left_node, &right_node)?;
        let spec = AsOfSpec {
            key_columns: left_keys.len(),
            stream_time: time,
            version_time,
            stream_lateness_nanos: left_node.lateness_nanos,
            version_lateness_nanos: right_node.lateness_nanos,
            output_lateness_nanos: left_node.lateness_nanos.max(right_node.lateness_nanos),
            version_width: right_schema.fields().len(),
            keep_unmatched,
        };
        let joined = self.plan.add(PlanNode {
            kind: NodeKind::AsOfJoin {
                stream,
                versions,
                spec,
            },
            schema: schema.clone(),
            changes: Changes::AppendOnly,
            window: left_node.window,
            event_time: left_node.event_time,
            // A waiting row leaves stamped after its event time by up to this much.
            lateness_nanos: spec.output_lateness_nanos,
            key: None,
            label: format!(
                "{}AsOfJoin {} as of {} on {}",
                if keep_unmatched { "Left" } else { "" },
                target.table,
                target.time,
                described_keys.join(" AND ")
            ),
        });
        match conjunction(residual) {
            // A reading meets one version at most, the one in force at its time: LEFT keeps
            // it with NULLs where that version fails the other conditions, as Flink does.
            Some(condition) if keep_unmatched => {
                let left_width = left_schema.fields().len();
                let projections = join
                    .schema
                    .columns()
                    .into_iter()
                    .enumerate()
                    .map(|(index, column)| match index < left_width {
                        true => Ok(Expr::Column(column)),
                        false => when(condition.clone(), Expr::Column(column)).end(),
                    })
                    .collect::<datafusion::common::Result<Vec<_>>>()
                    .map_err(|error| located(error, self.position))?;
                self.calc(joined, &join.schema, None, &projections, schema)
            }
            condition => self.filtered(joined, join, condition.into_iter().collect(), schema),
        }
    }

    /// Where the time a table is read as of is among the stream's columns: it must be the
    /// stream's event time, which tells when no earlier version can still come.
    fn as_of_time(
        &self,
        target: &AsOfTarget,
        stream_schema: &datafusion::common::DFSchema,
        event_time: Option<usize>,
    ) -> SqlResult<usize> {
        let column = match &target.time {
            SqlExpr::Identifier(name) => Some(Column::from_name(name.value.to_ascii_lowercase())),
            SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => Some(Column::new(
                Some(parts[0].value.to_ascii_lowercase()),
                parts[1].value.to_ascii_lowercase(),
            )),
            _ => None,
        };
        let index = column.and_then(|column| stream_schema.index_of_column(&column).ok());
        match index {
            Some(index) if Some(index) == event_time => Ok(index),
            _ => Err(SqlError::new(
                target.position,
                format!(
                    "`{}` is read FOR SYSTEM_TIME AS OF the event time of the stream it joins (its WATERMARK column, e.g. r.ts), which tells when no earlier version can still come; `{}` is not",
                    target.table, target.time
                ),
            )),
        }
    }
}
