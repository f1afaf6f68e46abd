//! Loading pipeline files and running queries to completion.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, bail};
use vibelux_operators::changes::consolidate;
use vibelux_operators::row::{Row, Update};
use vibelux_queries::plan::{DataflowPlan, NodeId};
use vibelux_queries::planner::{Outcome, Planner};

use crate::diagnostics::render;
use crate::runtime::{RunOptions, start};

/// Reads and plans a pipeline file whose `audit` sources read the trail at `audit_trail`;
/// errors name the file, line and column.
pub fn load_pipeline(path: &Path, audit_trail: &Path) -> anyhow::Result<(Planner, Vec<Outcome>)> {
    let sql =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Planner::plan_pipeline(
        &sql,
        vibelux_connectors::registry::with_audit_trail(audit_trail),
    )
    .map_err(|error| anyhow::anyhow!(render(&path.display().to_string(), &sql, &error)))
}

/// Runs the dataflow for `node` over bounded inputs until they end; returns its final contents.
///
/// Every source the node reads must end by itself (a file replay, a simulator with a duration).
pub fn query_to_completion(
    plan: &DataflowPlan,
    node: NodeId,
    workers: usize,
) -> anyhow::Result<Vec<Row>> {
    let order = plan.build_order(&[node]);
    for source in plan.sources_of(&order) {
        let source = &plan.sources[source];
        if !source.spec.is_bounded() {
            bail!(
                "source `{}` never ends (a live {} source), so a query over it has no final answer; run the pipeline and read its sinks instead",
                source.name,
                source.spec.connector()
            );
        }
    }
    for table in plan.tables_of(&order) {
        let table = &plan.tables[table];
        if !table.spec.is_bounded() {
            bail!(
                "table `{}` is tailed and never ends, so a query over it has no final answer; run the pipeline and read its sinks instead",
                table.name
            );
        }
    }
    let mut query_plan = plan.clone();
    query_plan.sinks.clear();
    query_plan.materialized.clear();
    let options = RunOptions {
        workers,
        stop: Arc::new(AtomicBool::new(false)),
        capture: vec![node],
        retention: Default::default(),
        extensible: false,
        state: None,
        cluster: None,
    };
    let mut captured: HashMap<NodeId, Vec<Update>> =
        start(Arc::new(query_plan), options)?.join()?;
    let (rows, negative) = consolidate(
        captured
            .remove(&node)
            .unwrap_or_default()
            .into_iter()
            .map(|(row, _, diff)| (row, diff)),
    );
    if let Some((row, count)) = negative.first() {
        bail!("internal error: the result retracts a row it never held ({count} × {row:?})");
    }
    Ok(rows)
}
