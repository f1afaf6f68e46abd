//! Which runs can be checkpointed today, and why not when they cannot.
//!
//! A checkpoint is only worth taking if restoring it is exact, so a run checkpoints only when
//! every part of it can leave its state and continue from it: sources that resume from a
//! position, operators whose state is snapshotted, sinks that deliver up to a checkpoint. A run
//! with anything else runs as before (nothing persisted) and says which parts kept it from
//! checkpointing, rather than storing checkpoints that a restart would restore wrongly.

use vibelux_queries::plan::DataflowPlan;

/// The reasons a run with these sources and tables (and the plan's sinks) cannot be
/// checkpointed yet; empty when it can. Every operator is checkpointed.
pub fn unsupported(plan: &DataflowPlan, sources: &[usize], tables: &[usize]) -> Vec<String> {
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
        let table = &plan.tables[table];
        if !table.spec.resumes() {
            reasons.push(format!(
                "table {} ({}) cannot resume from a position yet",
                table.name,
                table.spec.connector()
            ));
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use vibelux_interfaces::connector::{SourceSpec, SourceStart};
    use vibelux_interfaces::source::{SourceReader, SourceTiming};
    use vibelux_queries::plan::SourcePlan;

    use super::*;

    /// A connector registered by someone else, that keeps no positions and does not divide
    /// its input among the processes of a cluster.
    #[derive(Debug)]
    struct Forgetful;

    impl SourceSpec for Forgetful {
        fn connector(&self) -> &'static str {
            "forgetful"
        }

        fn is_bounded(&self) -> bool {
            false
        }

        fn describe(&self) -> String {
            "nothing".into()
        }

        fn start(&self, _: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
            Ok(Vec::new())
        }
    }

    /// A plan reading one source, `plant`, of that connector.
    pub(crate) fn plan_with_a_forgetful_source() -> DataflowPlan {
        let mut plan = DataflowPlan::default();
        plan.sources.push(SourcePlan {
            name: "plant".into(),
            definition: String::new(),
            spec: Arc::new(Forgetful),
            timing: SourceTiming {
                watermark_delay_nanos: 0,
                allowed_lateness_nanos: 0,
                idle_timeout: std::time::Duration::from_secs(1),
                batch_size: 1,
            },
        });
        plan
    }

    #[test]
    fn a_source_that_cannot_resume_keeps_the_run_from_checkpointing_and_is_named() {
        let plan = plan_with_a_forgetful_source();
        assert_eq!(
            unsupported(&plan, &[0], &[]),
            vec!["source plant (forgetful) cannot resume from a position yet".to_string()]
        );
        assert!(unsupported(&plan, &[], &[]).is_empty());
    }
}
