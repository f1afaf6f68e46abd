//! MQTT as a plug-in source and sink: one client per source, shared by the workers.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::{SourceReader, boxed_readers};

use super::sink::{MqttPublisher, MqttSinkConfig};
use super::source::MqttSourceConfig;
use crate::payload::RowLayout;

pub struct Mqtt;

impl SourceConnector for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
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
        let config = super::options::source(options, &source.name, &layout)?;
        Ok(Arc::new(Subscription { config, layout }))
    }
}

impl SinkConnector for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
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
        Ok(Arc::new(Publication(config)))
    }
}

#[derive(Debug)]
struct Subscription {
    config: MqttSourceConfig,
    layout: RowLayout,
}

impl SourceSpec for Subscription {
    fn connector(&self) -> &'static str {
        "mqtt"
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("mqtt {}", self.config.broker.address())
    }

    /// Received messages are journaled before they are acknowledged (`mqtt/journal.rs`).
    fn resumes(&self) -> bool {
        true
    }

    /// Topics are routed to workers by hash; positions of another worker count are kept as a
    /// generation until the backlog is replayed (`mqtt/position.rs`).
    fn rescales(&self) -> bool {
        true
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        // A checkpointed run journals what it receives, and resumes each worker after the
        // journaled messages its checkpoint had taken in (with another worker count: after
        // those the old worker owning each topic had taken in, `mqtt/position.rs`).
        let durability = match &start.durable_directory {
            Some(directory) => Some(super::source::Durability {
                directory: directory.join("journal"),
                positions: start
                    .resume
                    .iter()
                    .map(|position| super::source::JournalPosition::decode(position))
                    .collect::<Result<_, _>>()?,
            }),
            None => None,
        };
        let readers = super::source::subscribe(
            &start.name,
            self.config.clone(),
            self.layout.clone(),
            start.workers,
            start.metrics.clone(),
            durability,
        )
        .map_err(|error| format!("starting the MQTT client: {error}"))?;
        Ok(boxed_readers(readers))
    }
}

#[derive(Debug)]
struct Publication(MqttSinkConfig);

impl SinkSpec for Publication {
    fn connector(&self) -> &'static str {
        "mqtt"
    }

    fn reach(&self) -> Reach {
        Reach {
            paths: self.0.audit.iter().cloned().collect(),
            hosts: vec![format!("{}:{}", self.0.broker.host, self.0.broker.port)],
            ..Reach::default()
        }
    }

    fn describe(&self) -> String {
        format!("{} (mqtt)", self.0.broker.address())
    }

    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(MqttPublisher::open(
            self.0.clone(),
            schema,
            changelog,
            false,
        )?))
    }

    /// At least once (QoS 1): a cut waits until the broker has acknowledged every message
    /// before it, and each message carries its row's id as `_id`.
    fn resumes(&self) -> bool {
        true
    }

    fn open_resuming(
        &self,
        schema: SchemaRef,
        changelog: bool,
        _part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(MqttPublisher::open(
            self.0.clone(),
            schema,
            changelog,
            true,
        )?))
    }
}
