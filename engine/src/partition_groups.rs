//! Aggregates grouped by a partition column, rewritten to one ungrouped aggregate per value.
//!
//! `SELECT room, max(co2_ppm) FROM climate GROUP BY room` over a warehouse partitioned by room
//! would hash the room of every row, although each file holds one room: profiled, that hashing
//! was 40% of the query. Every file of a partition value belongs to that value's group, so the
//! query is the union, over the values (read from the folder names), of an aggregate without a
//! group key over that value's files (partition pruning picks them), each tagged with its value.
//! A hidden row count drops the values a `WHERE` leaves empty, as the grouped form would.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ExprSchema, ScalarValue};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, lit};

/// Partition values by table, then by column: `climate` → `room` → {r01, r02, …}.
pub type PartitionValues = HashMap<String, HashMap<String, BTreeSet<String>>>;

/// The values in a table's Hive folders (`column=value`), down to `levels` deep.
pub fn partition_values(table: &Path, levels: usize) -> HashMap<String, BTreeSet<String>> {
    let mut values: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut folders = vec![(table.to_path_buf(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        if depth >= levels {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some((column, value)) = name.split_once('=')
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                values
                    .entry(column.to_string())
                    .or_default()
                    .insert(value.to_string());
                folders.push((entry.path(), depth + 1));
            }
        }
    }
    values
}

/// Rewrites every aggregate grouped by one partition column directly over a table scan.
pub fn rewrite(plan: LogicalPlan, values: &PartitionValues) -> Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(aggregate) => match per_value(&aggregate, values)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(LogicalPlan::Aggregate(aggregate))),
        },
        other => Ok(Transformed::no(other)),
    })
    .map(|transformed| transformed.data)
}

/// Most values a rewrite unions (beyond that, one grouped scan is the better plan).
const MAX_VALUES: usize = 256;

fn per_value(aggregate: &Aggregate, values: &PartitionValues) -> Result<Option<LogicalPlan>> {
    let [Expr::Column(key)] = aggregate.group_expr.as_slice() else {
        return Ok(None);
    };
    let (scan, predicate) = match aggregate.input.as_ref() {
        LogicalPlan::TableScan(_) => (aggregate.input.as_ref().clone(), None),
        LogicalPlan::Filter(filter)
            if matches!(filter.input.as_ref(), LogicalPlan::TableScan(_)) =>
        {
            (
                filter.input.as_ref().clone(),
                Some(filter.predicate.clone()),
            )
        }
        _ => return Ok(None),
    };
    let LogicalPlan::TableScan(table_scan) = &scan else {
        return Ok(None);
    };
    let Some(column_values) = values
        .get(table_scan.table_name.table())
        .and_then(|columns| columns.get(&key.name))
    else {
        return Ok(None);
    };
    // Null and escaped values are read back differently from their folder names: leave them.
    if column_values.is_empty()
        || column_values.len() > MAX_VALUES
        || column_values
            .iter()
            .any(|v| v.contains('%') || v == "__HIVE_DEFAULT_PARTITION__")
    {
        return Ok(None);
    }
    let key_type = aggregate
        .input
        .schema()
        .field_from_column(key)?
        .data_type()
        .clone();
    let output = aggregate.schema.clone();
    let rows = "__vibelux_rows";
    let mut union: Option<LogicalPlanBuilder> = None;
    for value in column_values {
        let literal = ScalarValue::try_from_string(value.clone(), &key_type)?;
        let mut condition = Expr::Column(key.clone()).eq(lit(literal.clone()));
        if let Some(predicate) = &predicate {
            condition = condition.and(predicate.clone());
        }
        let mut aggregates = aggregate.aggr_expr.clone();
        aggregates.push(count(lit(1)).alias(rows));
        let mut projection = vec![lit(literal).alias_qualified(key.relation.clone(), &key.name)];
        for field in output.fields().iter().skip(1) {
            projection.push(Expr::Column(Column::from_name(field.name())).alias(field.name()));
        }
        let branch = LogicalPlanBuilder::from(scan.clone())
            .filter(condition)?
            .aggregate(Vec::<Expr>::new(), aggregates)?
            .filter(Expr::Column(Column::from_name(rows)).gt(lit(0i64)))?
            .project(projection)?;
        union = Some(match union {
            None => branch,
            Some(union) => union.union(branch.build()?)?,
        });
    }
    let Some(union) = union else { return Ok(None) };
    // A union's columns lose their table qualifier: give the key back the one readers use.
    let mut outer = vec![
        Expr::Column(Column::from_name(&key.name)).alias_qualified(key.relation.clone(), &key.name),
    ];
    for field in output.fields().iter().skip(1) {
        outer.push(Expr::Column(Column::from_name(field.name())).alias(field.name()));
    }
    Ok(Some(union.project(outer)?.build()?))
}
