//! Which runs can be checkpointed today, and why not when they cannot.
//!
//! A checkpoint is only worth taking if restoring it is exact, so a run checkpoints only when
//! every part of it can leave its state and continue from it: sources that resume from a
//! position, operators whose state is snapshotted, sinks that deliver up to a checkpoint. A run
//! with anything else runs as before (nothing persisted) and says which parts kept it from
//! checkpointing, rather than storing checkpoints that a restart would restore wrongly.

use vibelux_queries::plan::{DataflowPlan, NodeId, NodeKind};

/// The reasons the run built from `order` (with these sources and tables) cannot be
/// checkpointed yet; empty when it can.
pub fn unsupported(
    plan: &DataflowPlan,
    order: &[NodeId],
    sources: &[usize],
    tables: &[usize],
) -> Vec<String> {
    let mut reasons = Vec::new();
    for &source in sources {
        let source = &plan.sources[source];
        if !source.spec.resumes() {
            reasons.push(format!(
                "source {} ({}) cannot resume from a position yet",
                source.name,
                source.spec.connector()
            ));
        }
    }
    for &table in tables {
        reasons.push(format!(
            "table {} is not checkpointed yet",
            plan.tables[table].name
        ));
    }
    for &node in order {
        let what = match &plan.nodes[node].kind {
            NodeKind::Join { .. } => "joins",
            _ => continue,
        };
        let reason = format!("{what} are not checkpointed yet");
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    for sink in &plan.sinks {
        if !sink.target.resumes() {
            reasons.push(format!(
                "sink {} ({}) cannot deliver up to a checkpoint yet",
                sink.name,
                sink.target.connector()
            ));
        }
    }
    reasons
}
