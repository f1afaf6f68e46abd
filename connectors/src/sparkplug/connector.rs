//! Sparkplug B as a plug-in source: a host application over one MQTT client.

use std::sync::Arc;

use std::time::Duration;
use vibelux_interfaces::connector::{DeclaredSource, SourceConnector, SourceSpec, SourceStart};
use vibelux_interfaces::options::{OptionError, Options};

use vibelux_interfaces::source::{Poll, ReadByAnotherProcess, Record, SourceReader, boxed_readers};

use super::source::SparkplugSourceConfig;
use crate::mqtt::position::check_journals;
use crate::mqtt::source::{Durability, JournalPosition};
use crate::payload::RowLayout;

pub struct Sparkplug;

impl SourceConnector for Sparkplug {
    fn name(&self) -> &'static str {
        "sparkplug"
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
        Ok(Arc::new(HostApplication { config, layout }))
    }
}

#[derive(Debug)]
struct HostApplication {
    config: SparkplugSourceConfig,
    layout: RowLayout,
}

impl SourceSpec for HostApplication {
    /// The host runs on process 0 (see `start`).
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "sparkplug"
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("sparkplug {}", self.config.broker.address())
    }

    /// Like the `mqtt` source, received messages are journaled before they are acknowledged;
    /// each worker's host keeps its nodes' births in its part.
    fn resumes(&self) -> bool {
        true
    }

    /// As the `mqtt` source's; with another worker count each host takes the births of the
    /// nodes routed to it from every old host's part.
    fn rescales(&self) -> bool {
        true
    }

    /// In a cluster the host runs on process 0 alone, for its workers: a node's data can only
    /// be decoded with its birth certificate, which a shared subscription could hand to another
    /// process. The other processes' workers read nothing (idle live readers, whose watermark
    /// follows the clock) and the operators downstream spread the rows by their keys.
    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let mut positions: Vec<JournalPosition> = start
            .resume
            .iter()
            .map(|position| JournalPosition::decode(position))
            .collect::<Result<_, _>>()?;
        check_journals(&positions, start)?;
        let threads = start.local.len().max(1);
        let process = start.local.start / threads;
        let journal_of = (start.processes > 1).then_some((start.processes as u32, process as u32));
        if start.processes > 1 {
            if process != 0 {
                return Ok((0..start.workers)
                    .map(|worker| match start.local.contains(&worker) {
                        true => Box::new(HostOnProcessZero::new(journal_of))
                            as Box<dyn SourceReader + Send>,
                        false => Box::new(ReadByAnotherProcess),
                    })
                    .collect());
            }
            positions.truncate(threads);
        }
        let durability = start
            .durable_directory
            .as_ref()
            .map(|directory| Durability {
                directory: directory.join("journal"),
                positions: positions.clone(),
                journal_of,
            });
        let mut readers = super::source::subscribe(
            &start.name,
            self.config.clone(),
            self.layout.clone(),
            threads,
            start.metrics.clone(),
            durability,
        )
        .map_err(|error| format!("starting the MQTT client: {error}"))?;
        if positions.len() == readers.len() {
            for (reader, position) in readers.iter_mut().zip(&positions) {
                if let Some(state) = &position.decoder {
                    reader.restore_decoder(state)?;
                }
            }
        } else {
            // Another worker count: each host takes the births of the nodes now routed to it.
            let states: Vec<&[u8]> = positions
                .iter()
                .filter_map(|position| position.decoder.as_deref())
                .collect();
            for reader in &mut readers {
                reader.restore_decoder_share(&states)?;
            }
        }
        let mut readers = boxed_readers(readers);
        readers.extend(
            (threads..start.workers)
                .map(|_| Box::new(ReadByAnotherProcess) as Box<dyn SourceReader + Send>),
        );
        Ok(readers)
    }
}

/// The reader of a worker outside process 0 in a cluster: the host runs on process 0, so this
/// one reads nothing. It is live (its watermark follows the clock once idle, as a worker that
/// no node is routed to does in one process) and leaves an empty position in checkpoints.
struct HostOnProcessZero {
    position: Vec<u8>,
}

impl HostOnProcessZero {
    fn new(journal_of: Option<(u32, u32)>) -> Self {
        let position = JournalPosition {
            journal_of,
            ..JournalPosition::default()
        };
        HostOnProcessZero {
            position: vibelux_interfaces::checkpoint::encode(&position),
        }
    }
}

impl SourceReader for HostOnProcessZero {
    fn poll(&mut self, _out: &mut Vec<Record>, _max_records: usize) -> Poll {
        Poll::Idle(Duration::from_secs(1))
    }

    fn processing_time(&self) -> Option<i64> {
        Some(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    fn position(&self) -> Option<Vec<u8>> {
        Some(self.position.clone())
    }
}
