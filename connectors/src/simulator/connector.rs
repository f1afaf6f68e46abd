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

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        self.config
            .write_fault_ground_truth(self.config.resolved_start())
            .map_err(|error| format!("writing the faults' ground truth: {error}"))?;
        (0..start.workers)
            .map(|worker| {
                SimulatorReader::new(self.config.clone(), &self.schema, worker, start.workers)
                    .map(|reader| Box::new(reader) as Box<dyn SourceReader + Send>)
            })
            .collect()
    }
}
