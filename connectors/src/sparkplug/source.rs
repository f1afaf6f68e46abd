//! The `sparkplug` source: a Sparkplug B host application on the MQTT source's connection.
//!
//! The MQTT client, its persistent session, acknowledgements and reconnection are the `mqtt`
//! source's; this adds the decoder each worker runs ([`HostState`] over the protobuf payloads)
//! and the host's `STATE` presence. Rows have one metric reading each, in declared columns
//! named from [`COLUMNS`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, TimeUnit};
use vibelux_operators::row::{Datum, Row};

use super::host::{HostState, MetricRow};
use super::proto::{decode_payload, rebirth_command};
use super::topic::{self, NAMESPACE, Parsed};
use crate::mqtt::broker::{BrokerConfig, QoS};
use crate::mqtt::source::{
    Commands, Durability, MessageDecoder, MqttMessage, MqttReader, Presence, Subscription,
    subscribe_with,
};
use crate::payload::RowLayout;
use crate::source::{Record, SourceMetrics};

/// The columns a Sparkplug source can declare (any subset, any order), with their types.
pub const COLUMNS: &[(&str, ArrowType)] = &[
    ("group_id", ArrowType::Utf8),
    ("edge_node", ArrowType::Utf8),
    ("device", ArrowType::Utf8),
    ("metric", ArrowType::Utf8),
    ("value", ArrowType::Float64),
    ("value_text", ArrowType::Utf8),
    ("datatype", ArrowType::Utf8),
    ("ts", ArrowType::Timestamp(TimeUnit::Nanosecond, None)),
    ("quality", ArrowType::Utf8),
    ("historical", ArrowType::Boolean),
    ("message_type", ArrowType::Utf8),
];

#[derive(Debug, Clone)]
pub struct SparkplugSourceConfig {
    pub broker: BrokerConfig,
    /// The Sparkplug group to follow, or `+` for all.
    pub group: String,
    pub qos: QoS,
    /// The host application id: when set, the host publishes its `STATE` (online on connect,
    /// offline as its will), which Sparkplug 3.0 edge nodes wait for.
    pub host_id: Option<String>,
    /// Ask nodes to rebirth when their data cannot be read (on by default).
    pub rebirth: bool,
    pub protocol: crate::mqtt::link::Protocol,
}

/// Connects as a host application and returns one reader per worker.
pub fn subscribe(
    name: &str,
    config: SparkplugSourceConfig,
    layout: RowLayout,
    peers: usize,
    metrics: Arc<SourceMetrics>,
    durability: Option<Durability>,
) -> std::io::Result<Vec<MqttReader>> {
    let presence = config.host_id.as_ref().map(|host| {
        let since = now_millis();
        let state = |online: bool| {
            serde_json::json!({ "online": online, "timestamp": since })
                .to_string()
                .into_bytes()
        };
        Presence {
            topic: format!("{NAMESPACE}/STATE/{host}"),
            online: state(true),
            offline: state(false),
        }
    });
    let subscription = Subscription {
        broker: config.broker.clone(),
        filter: format!("{NAMESPACE}/{}/#", config.group),
        qos: config.qos,
        route: topic::route_by_edge_node,
        presence,
        protocol: config.protocol,
    };
    let columns: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|(column, _)| layout.column_index(column))
        .collect();
    let source = name.to_string();
    subscribe_with(
        name,
        subscription,
        |commands| {
            Box::new(HostDecoder {
                source: source.clone(),
                layout: layout.clone(),
                columns: columns.clone(),
                host: HostState::default(),
                commands: config.rebirth.then(|| commands.clone()),
            })
        },
        peers,
        metrics,
        durability,
    )
}

/// One worker's host: the state of the nodes routed to it.
struct HostDecoder {
    source: String,
    layout: RowLayout,
    /// For each of [`COLUMNS`], where it is in the row.
    columns: Vec<Option<usize>>,
    host: HostState,
    commands: Option<Commands>,
}

impl MessageDecoder for HostDecoder {
    /// The births of the nodes this worker follows: a restarted host reads their data by alias
    /// without waiting for a rebirth.
    fn state(&self) -> Option<Vec<u8>> {
        Some(vibelux_interfaces::checkpoint::encode(&self.host))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.host = vibelux_interfaces::checkpoint::decode("sparkplug births", state)?;
        Ok(())
    }

    fn restore_share(
        &mut self,
        states: &[&[u8]],
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        for state in states {
            let host: HostState =
                vibelux_interfaces::checkpoint::decode("sparkplug births", state)?;
            self.host.take_nodes(host, |group, edge_node| {
                owns(&topic::node_command_topic(group, edge_node))
            });
        }
        Ok(())
    }

    fn decode(&mut self, message: &MqttMessage, out: &mut Vec<Record>) {
        let topic_name = &message.publish.topic;
        let dead_letter = |reason: String| Record::Invalid {
            reason,
            raw: hex_preview(&message.publish.payload),
            origin: format!("sparkplug topic {topic_name}"),
        };
        let topic = match topic::parse(topic_name) {
            Ok(Parsed::Message(topic)) => topic,
            Ok(Parsed::HostState) => return,
            Err(problem) => return out.push(dead_letter(problem)),
        };
        let payload = match decode_payload(&message.publish.payload) {
            Ok(payload) => payload,
            Err(problem) => return out.push(dead_letter(problem)),
        };
        let arrival = message.received_nanos / 1_000_000;
        let applied = self.host.apply(&topic, &payload, arrival);
        for row in &applied.rows {
            out.push(match self.layout.finish(self.row(row)) {
                Ok((row, event_time)) => Record::Row {
                    row,
                    event_time,
                    partition: 0,
                },
                Err(problem) => dead_letter(format!("metric `{}`: {problem}", row.metric)),
            });
        }
        out.extend(applied.problems.into_iter().map(dead_letter));
        if let (Some(reason), Some(commands)) = (applied.rebirth, &self.commands) {
            let sent = commands.publish(
                topic::node_command_topic(topic.group, topic.edge_node),
                rebirth_command(now_millis() as u64),
            );
            tracing::info!(
                source = %self.source,
                node = %format!("{}/{}", topic.group, topic.edge_node),
                %reason,
                sent,
                "sparkplug: asked the node to rebirth"
            );
        }
    }
}

impl HostDecoder {
    fn row(&self, metric: &MetricRow) -> Row {
        let mut row = vec![Datum::Null; self.layout.schema.fields().len()];
        let text = |text: &str| Datum::Utf8(text.into());
        for (index, column) in self.columns.iter().enumerate() {
            let Some(column) = *column else { continue };
            row[column] = match COLUMNS[index].0 {
                "group_id" => text(&metric.group),
                "edge_node" => text(&metric.edge_node),
                "device" => metric.device.as_deref().map_or(Datum::Null, text),
                "metric" => text(&metric.metric),
                "value" => metric
                    .value
                    .as_ref()
                    .and_then(|value| value.number())
                    .map_or(Datum::Null, Datum::Float64),
                "value_text" => metric
                    .value
                    .as_ref()
                    .map_or(Datum::Null, |value| text(&value.text())),
                "datatype" => text(&metric.datatype.name()),
                "ts" => Datum::Timestamp(metric.timestamp.saturating_mul(1_000_000)),
                "quality" => text(metric.quality.name()),
                "historical" => Datum::Boolean(metric.historical),
                "message_type" => text(metric.message_type.name()),
                _ => Datum::Null,
            };
        }
        row
    }
}

/// Binary payloads in dead letters: hex, the first 2 KiB.
fn hex_preview(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let shown = &bytes[..bytes.len().min(2048)];
    let mut text = String::with_capacity(shown.len() * 2 + 24);
    text.push_str("hex:");
    for byte in shown {
        let _ = write!(text, "{byte:02x}");
    }
    if shown.len() < bytes.len() {
        let _ = write!(text, "… ({} bytes)", bytes.len());
    }
    text
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
