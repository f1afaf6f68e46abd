//! What a run shares while it runs, for `/metrics`, `/healthz` and the final report.

use std::sync::Arc;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vibelux_connectors::sink::SinkMetrics;
use vibelux_connectors::source::{ReplayProgress, SourceMetrics};
use vibelux_operators::alarm::AlarmDesk;
use vibelux_queries::plan::{DataflowPlan, NodeKind};

use crate::live::view::LiveViews;
use crate::state::CheckpointMetrics;

/// What a run shares while it runs: counters (reported at its end), live views, and the desk
/// through which people acknowledge and shelve its alarms.
pub struct RunMetrics {
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
    /// The materialized views (their contents count their rows), live while the run lasts.
    pub views: LiveViews,
    pub replay: Vec<(String, Arc<ReplayProgress>)>,
    /// Seconds per step of this process's first worker that had work to do.
    pub step_seconds: Histogram,
    pub alarms: Arc<AlarmDesk>,
    /// The pipeline's alarms, each with the live view of its instances (`<alarm>_state`).
    pub alarm_states: Vec<(String, String)>,
    /// Each view's Calcs, which count the rows their expressions failed on.
    pub expression_errors: Vec<(String, Vec<Arc<vibelux_operators::calc::Calc>>)>,
    /// Checkpoints taken, when the run is checkpointed.
    pub checkpoints: Option<Arc<CheckpointMetrics>>,
}

impl RunMetrics {
    /// Counters for the sources and tables that run (in that order), every sink and view.
    pub(super) fn new(
        plan: &DataflowPlan,
        sources: &[usize],
        tables: &[usize],
        views: LiveViews,
        checkpoints: Option<Arc<CheckpointMetrics>>,
    ) -> Self {
        RunMetrics {
            sources: sources
                .iter()
                .map(|&s| (plan.sources[s].name.clone(), Arc::default()))
                .chain(
                    tables
                        .iter()
                        .map(|&t| (plan.tables[t].name.clone(), Arc::default())),
                )
                .collect(),
            sinks: plan
                .sinks
                .iter()
                .map(|sink| (sink.name.clone(), Arc::default()))
                .collect(),
            views,
            replay: sources
                .iter()
                .filter(|&&s| plan.sources[s].spec.reports_progress())
                .map(|&s| (plan.sources[s].name.clone(), Arc::default()))
                .collect(),
            step_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            alarms: Arc::default(),
            alarm_states: plan
                .nodes
                .iter()
                .filter_map(|node| match &node.kind {
                    NodeKind::RaiseAlarms { spec, .. } => {
                        Some((spec.name.clone(), format!("{}_state", spec.name)))
                    }
                    _ => None,
                })
                .collect(),
            expression_errors: calcs_by_view(plan),
            checkpoints,
        }
    }
}

/// Each view's Calcs, by view, for counting the rows their expressions failed on.
fn calcs_by_view(plan: &DataflowPlan) -> Vec<(String, Vec<Arc<vibelux_operators::calc::Calc>>)> {
    plan.expression_errors
        .iter()
        .map(|(view, errors)| {
            let calcs = plan.nodes[*errors]
                .kind
                .inputs()
                .into_iter()
                .filter_map(|node| match &plan.nodes[node].kind {
                    NodeKind::Calc { calc, .. } => Some(calc.clone()),
                    _ => None,
                })
                .collect();
            (view.clone(), calcs)
        })
        .collect()
}
