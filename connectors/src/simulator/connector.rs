//! The simulator as a plug-in source: an embedded facility, partitioned by sensor.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{DeclaredSource, SourceConnector, SourceSpec, SourceStart};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::source::SourceReader;

use super::{SimulatorConfig, SimulatorReader, Speed, check_columns, simulated_unit};

pub struct Simulator;

impl SourceConnector for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::OPTIONS
    }

    fn column_unit(&self, column: &str) -> Option<&'static str> {
        simulated_unit(column)
    }

    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError> {
        let config = super::options::simulator_config(options)?;
        check_columns(&source.schema).map_err(|message| options.error(message))?;
        Ok(Arc::new(SimulatedFacility {
            config,
            schema: source.schema.clone(),
        }))
    }
}

#[derive(Debug)]
struct SimulatedFacility {
    config: SimulatorConfig,
    schema: SchemaRef,
}

impl SourceSpec for SimulatedFacility {
    /// Each worker simulates its share of the sensors.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "simulator"
    }

    fn is_bounded(&self) -> bool {
        self.config.duration_nanos.is_some()
    }

    fn paced_by_clock(&self) -> bool {
        self.config.speed != Speed::Max
    }

    fn describe(&self) -> String {
        format!(
            "a simulated facility of {} sensors",
            self.config.sensor_count()
        )
    }

    fn resumes(&self) -> bool {
        true
    }

    fn rescales(&self) -> bool {
        true
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        // A resumed simulation keeps the start it had: its faults are placed from it.
        let first = match start.resume.first() {
            Some(position) => SimulatorReader::checkpointed_start(position)?,
            None => self.config.resolved_start(),
        };
        self.config
            .write_fault_ground_truth(first)
            .map_err(|error| format!("writing the faults' ground truth: {error}"))?;
        let config = SimulatorConfig {
            start_nanos: Some(first),
            ..self.config.clone()
        };
        (0..start.workers)
            .map(|worker| {
                let mut reader =
                    SimulatorReader::new(config.clone(), &self.schema, worker, start.workers)?;
                // `resume` tells a facility following the wall clock by the configuration.
                reader.config.start_nanos = self.config.start_nanos;
                match start.resume.len() {
                    0 => {}
                    old_workers if old_workers == start.workers => {
                        reader.resume(&start.resume[worker])?
                    }
                    _ => reader.resume_rescaled(&start.resume, worker, start.workers)?,
                }
                Ok(Box::new(reader) as Box<dyn SourceReader + Send>)
            })
            .collect()
    }
}
