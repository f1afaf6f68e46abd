//! MQTT as a plug-in source and sink: one client per source, shared by the workers.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::{ReadByAnotherProcess, SourceReader, boxed_readers};

use super::position::check_journals;
use super::sink::{MqttPublisher, MqttSinkConfig};
use super::source::{JournalPosition, MqttSourceConfig};
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
    /// Each process joins one shared subscription, and its workers share its messages.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

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

    /// In a cluster each process runs a client of its own (`client_id` followed by the
    /// process's number) in a shared subscription (group `client_id`), so the broker hands each
    /// message to one process; the process's workers share its messages by topic, and its
    /// journal (`journal-P`) holds what its client received.
    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let positions: Vec<JournalPosition> = start
            .resume
            .iter()
            .map(|position| JournalPosition::decode(position))
            .collect::<Result<_, _>>()?;
        check_journals(&positions, start)?;
        let mut config = self.config.clone();
        let (journal, journal_of, positions) = if start.processes > 1 {
            let process = start.local.start / start.local.len().max(1);
            let identity = config.broker.client_id.clone();
            config.share = Some(identity.replace(['/', '+', '#'], "_"));
            config.broker.client_id = format!("{identity}-{process}");
            let journal_of = Some((start.processes as u32, process as u32));
            let mine = match positions.is_empty() {
                true => Vec::new(),
                false => positions[start.local.clone()].to_vec(),
            };
            (format!("journal-{process}"), journal_of, mine)
        } else {
            ("journal".to_string(), None, positions)
        };
        // A checkpointed run journals what it receives, and resumes each worker after the
        // journaled messages its checkpoint had taken in (with another worker count: after
        // those the old worker owning each topic had taken in, `mqtt/position.rs`).
        let durability =
            start
                .durable_directory
                .as_ref()
                .map(|directory| super::source::Durability {
                    directory: directory.join(journal),
                    positions,
                    journal_of,
                });
        let readers = super::source::subscribe(
            &start.name,
            config,
            self.layout.clone(),
            start.local.len(),
            start.metrics.clone(),
            durability,
        )
        .map_err(|error| format!("starting the MQTT client: {error}"))?;
        let mut readers = boxed_readers(readers).into_iter();
        Ok((0..start.workers)
            .map(|worker| match start.local.contains(&worker) {
                true => readers.next().expect("a reader per local worker"),
                false => Box::new(ReadByAnotherProcess) as Box<dyn SourceReader + Send>,
            })
            .collect())
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
