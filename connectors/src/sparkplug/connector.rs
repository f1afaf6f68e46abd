//! Sparkplug B as a plug-in source: a host application over one MQTT client.

use std::sync::Arc;

use vibelux_interfaces::connector::{DeclaredSource, SourceConnector, SourceSpec, SourceStart};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::source::{SourceReader, boxed_readers};

use super::source::SparkplugSourceConfig;
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

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let positions: Vec<JournalPosition> = start
            .resume
            .iter()
            .map(|position| JournalPosition::decode(position))
            .collect::<Result<_, _>>()?;
        let durability = start
            .durable_directory
            .as_ref()
            .map(|directory| Durability {
                directory: directory.join("journal"),
                positions: positions.clone(),
                journal_of: None,
            });
        let mut readers = super::source::subscribe(
            &start.name,
            self.config.clone(),
            self.layout.clone(),
            start.workers,
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
        Ok(boxed_readers(readers))
    }
}
