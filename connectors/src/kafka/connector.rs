//! Kafka as a plug-in source and sink: a consumer per worker in one group; a producer.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::SourceReader;

use super::partitions::Discovery;
use super::resume::Positions;
use super::sink::{KafkaProducer, KafkaSinkConfig};
use super::source::{Assignment, KafkaReader, KafkaSourceConfig};
use crate::payload::RowLayout;

pub struct Kafka;

impl SourceConnector for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
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
        Ok(Arc::new(Consumers {
            config: Arc::new(config),
            layout,
        }))
    }

    /// A table's rows are its topics' messages by key, tombstones deleting.
    fn reads_tables(&self) -> bool {
        true
    }
}

impl SinkConnector for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        let config = super::options::sink(options, &sink.schema)?;
        Ok(Arc::new(Producer(config)))
    }
}

#[derive(Debug)]
struct Consumers {
    config: Arc<KafkaSourceConfig>,
    layout: RowLayout,
}

impl SourceSpec for Consumers {
    /// Partitions are assigned across every process's workers.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "kafka"
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} topics {}",
            self.config.brokers,
            self.config.topics.join(", ")
        )
    }

    fn resumes(&self) -> bool {
        true
    }

    /// Positions are offsets per partition, merged from every old worker: the consumer group
    /// hands the partitions out again, whatever the number of workers.
    fn rescales(&self) -> bool {
        true
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let resume = Arc::new(std::sync::Mutex::new(Positions::merge(&start.resume)?));
        // Across processes the readers deal the partitions out themselves (`partitions.rs`).
        let discovery = if start.processes > 1 {
            Some(Discovery::start(
                &start.name,
                &self.config.brokers,
                self.config.topics.clone(),
                &self.config.properties,
            )?)
        } else {
            None
        };
        (0..start.workers)
            .map(|worker| {
                // Another process's worker: that process connects for it.
                if !start.local.contains(&worker) {
                    return Ok(Box::new(OtherProcess) as Box<dyn SourceReader + Send>);
                }
                let assignment = match &discovery {
                    Some(discovery) => Assignment::Own {
                        discovery: discovery.clone(),
                        worker,
                        workers: start.workers,
                        dealt: 0,
                        failing: false,
                    },
                    None => Assignment::Group,
                };
                KafkaReader::open(
                    &start.name,
                    self.config.clone(),
                    self.layout.clone(),
                    worker,
                    start.metrics.clone(),
                    resume.clone(),
                    start.checkpointed,
                    assignment,
                )
                .map(|reader| Box::new(reader) as Box<dyn SourceReader + Send>)
                .map_err(|error| format!("starting the Kafka consumer: {error}"))
            })
            .collect()
    }
}

#[derive(Debug)]
struct Producer(KafkaSinkConfig);

impl SinkSpec for Producer {
    fn connector(&self) -> &'static str {
        "kafka"
    }

    fn reach(&self) -> Reach {
        Reach {
            paths: self.0.audit.iter().cloned().collect(),
            hosts: self
                .0
                .brokers
                .split(',')
                .map(|broker| broker.trim().to_string())
                .filter(|broker| !broker.is_empty())
                .collect(),
            ..Reach::default()
        }
    }

    fn describe(&self) -> String {
        format!("kafka {} topic {}", self.0.brokers, self.0.topic)
    }

    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(KafkaProducer::open(
            self.0.clone(),
            schema,
            changelog,
            false,
        )?))
    }

    /// At least once, with an idempotent producer: a cut waits until the broker has
    /// acknowledged every row before it, and each message carries its row's id in a header.
    fn resumes(&self) -> bool {
        true
    }

    fn open_resuming(
        &self,
        schema: SchemaRef,
        changelog: bool,
        _part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(KafkaProducer::open(
            self.0.clone(),
            schema,
            changelog,
            true,
        )?))
    }
}

/// The reader of another process's worker, never polled here.
struct OtherProcess;

impl SourceReader for OtherProcess {
    fn poll(
        &mut self,
        _out: &mut Vec<vibelux_interfaces::source::Record>,
        _max_records: usize,
    ) -> vibelux_interfaces::source::Poll {
        vibelux_interfaces::source::Poll::Finished
    }
}
