//! Parquet as a plug-in sink: a warehouse folder, one writer at a time.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{DeclaredSink, SinkConnector, SinkSpec};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use super::sink::{ParquetSinkConfig, ParquetWriter};

pub struct Parquet;

impl SinkConnector for Parquet {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        Ok(Arc::new(Warehouse(super::options::sink(
            options,
            &sink.schema,
        )?)))
    }
}

#[derive(Debug)]
struct Warehouse(ParquetSinkConfig);

impl SinkSpec for Warehouse {
    fn connector(&self) -> &'static str {
        "parquet"
    }

    fn describe(&self) -> String {
        format!("{} (parquet)", self.0.path.display())
    }

    /// The warehouse holds rows written once.
    fn takes_changelogs(&self) -> bool {
        false
    }

    fn open(&self, schema: SchemaRef, _changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(ParquetWriter::open(self.0.clone(), schema)?))
    }
}
