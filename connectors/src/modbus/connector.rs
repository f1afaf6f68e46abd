//! Modbus TCP as a plug-in: a PLC polled by its tag map (a source with a health relation), and
//! tags written within their safety limits (a sink).

use std::sync::Arc;

use crate::modbus::tags::Register;
use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::{SourceReader, boxed_readers};

use super::poller::DeviceConfig;
use super::sink::{ModbusSinkConfig, ModbusWriter};
use crate::payload::RowLayout;

pub struct Modbus;

impl SourceConnector for Modbus {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SOURCE_OPTIONS
    }

    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError> {
        let layout = RowLayout::declared(source);
        let device = super::options::source(options, &source.name, &layout)?;
        Ok(Arc::new(PolledDevice { device, layout }))
    }
}

impl SinkConnector for Modbus {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        let config = super::options::sink(options, &sink.name, &sink.schema)?;
        Ok(Arc::new(TagWrites(config)))
    }
}

#[derive(Debug)]
struct PolledDevice {
    device: DeviceConfig,
    layout: RowLayout,
}

impl SourceSpec for PolledDevice {
    /// A device is polled by the one worker it is routed to.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "modbus"
    }

    fn is_bounded(&self) -> bool {
        false
    }

    /// Polled on its own clock: flow control must not wait for it.
    fn paced_by_clock(&self) -> bool {
        true
    }

    /// It resumes by polling again: a device's past values cannot be read back.
    fn resumes(&self) -> bool {
        true
    }

    fn rescales(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "modbus {}:{} unit {}",
            self.device.host, self.device.port, self.device.unit_id
        )
    }

    fn health_schema(&self) -> Option<SchemaRef> {
        Some(super::source::health_schema())
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let readers = super::source::start(
            &start.name,
            self.device.clone(),
            self.layout.clone(),
            start.workers,
            start.local.clone(),
            start.metrics.clone(),
        )
        .map_err(|error| format!("starting the Modbus poller: {error}"))?;
        Ok(boxed_readers(readers))
    }
}

#[derive(Debug)]
struct TagWrites(ModbusSinkConfig);

impl SinkSpec for TagWrites {
    fn connector(&self) -> &'static str {
        "modbus"
    }

    /// A shadow sink records what it would write and writes nothing.
    fn actuates(&self) -> bool {
        !self.0.shadow
    }

    fn reach(&self) -> Reach {
        let device = &self.0.device;
        Reach {
            paths: vec![self.0.audit.clone()],
            reads: device.tags_file.iter().cloned().collect(),
            hosts: vec![format!("{}:{}", device.host, device.port)],
            // Coils are bits: only registers can be written out of range.
            unbounded: device
                .tags
                .tags
                .iter()
                .filter(|tag| tag.register == Register::Holding)
                .filter(|tag| tag.limits.min.is_none() || tag.limits.max.is_none())
                .map(|tag| tag.name.clone())
                .collect(),
            limits_inline: device.tags_file.is_none(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "modbus {}:{} unit {}",
            self.0.device.host, self.0.device.port, self.0.device.unit_id
        )
    }

    fn open(&self, schema: SchemaRef, _changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(ModbusWriter::open(self.0.clone(), schema)?))
    }

    /// Its part is the audit log's length at the cut: after a crash, the writes the log shows
    /// made since are not made again.
    fn resumes(&self) -> bool {
        true
    }

    fn open_resuming(
        &self,
        schema: SchemaRef,
        _changelog: bool,
        part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(ModbusWriter::open_resuming(
            self.0.clone(),
            schema,
            part,
        )?))
    }
}
