//! The host application's view of its edge nodes: what each node's births declared, whether
//! it is online, and whether its messages arrive in sequence.
//!
//! Sparkplug data is only meaningful against the birth that preceded it: births name each
//! metric, give its type and the alias later data uses in place of the name. So every node's
//! messages are read in order by one [`HostState`] (see `topic::route_by_edge_node`). When the
//! host cannot read a node's data — it never saw the birth (it started after the node), the
//! sequence skipped (a message was lost), or an alias is unknown — it asks the node to be born
//! again (`Node Control/Rebirth`), as the specification tells hosts to, rather than guess.
//! A death (the node's own, or the broker's will on its behalf) makes every series of the node
//! stale: a row per series says so, carrying the last value.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use super::proto::{DataType, Metric, Payload, Value, decode_value};
use super::topic::{MessageType, SparkplugTopic};

/// A node is asked to rebirth at most this often.
const REBIRTH_INTERVAL: Duration = Duration::from_secs(5);

/// How far a value can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
    /// The node or device died: the value is the last one known.
    Stale,
}

impl Quality {
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }

    /// A metric's `Quality` property: an OPC quality code (192 good, below 64 bad, between
    /// uncertain) or 500, which Sparkplug systems use for stale.
    fn from_code(code: i64) -> Quality {
        match code {
            500 => Quality::Stale,
            ..64 => Quality::Bad,
            64..192 => Quality::Uncertain,
            _ => Quality::Good,
        }
    }
}

/// One metric reading (or staleness notice) of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub group: String,
    pub edge_node: String,
    pub device: Option<String>,
    pub metric: String,
    pub value: Option<Value>,
    pub datatype: DataType,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub quality: Quality,
    pub historical: bool,
    pub message_type: MessageType,
}

/// What one message produced.
#[derive(Debug, Default)]
pub struct Applied {
    pub rows: Vec<MetricRow>,
    /// Metrics that could not be read, with the reason (dead letters).
    pub problems: Vec<String>,
    /// Ask the node to rebirth, for this reason.
    pub rebirth: Option<String>,
}

/// A metric a birth declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    datatype: DataType,
    last: Option<Value>,
}

type SeriesKey = (Option<String>, String);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Node {
    /// The birth/death sequence number of the current session, from the NBIRTH's `bdSeq`.
    bd_seq: Option<u64>,
    /// The last message's sequence number; `None` until born.
    seq: Option<u64>,
    aliases: HashMap<u64, SeriesKey>,
    series: HashMap<SeriesKey, Series>,
    /// Not kept across a restart: a restarted host may ask again at once.
    #[serde(skip)]
    rebirth_requested: Option<Instant>,
}

/// Every node one worker has heard from, by (group, edge node). Checkpoints keep it: the
/// births (aliases, types, last values) a node sent before a restart are not sent again.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HostState {
    nodes: HashMap<(String, String), Node>,
}

impl HostState {
    /// Takes the nodes of `other` that `keep` says this host reads (a checkpoint of another
    /// worker count shared out).
    pub fn take_nodes(&mut self, other: HostState, keep: impl Fn(&str, &str) -> bool) {
        for ((group, edge_node), node) in other.nodes {
            if keep(&group, &edge_node) {
                self.nodes.insert((group, edge_node), node);
            }
        }
    }

    /// Applies one message; `arrival` (milliseconds) stands in for missing timestamps and is
    /// the time of deaths.
    pub fn apply(&mut self, topic: &SparkplugTopic, payload: &Payload, arrival: i64) -> Applied {
        let key = (topic.group.to_string(), topic.edge_node.to_string());
        let mut applied = Applied::default();
        let born = self.nodes.get(&key).is_some_and(|node| node.seq.is_some());
        match topic.message_type {
            MessageType::NCmd | MessageType::DCmd => return applied,
            MessageType::NBirth => {
                let node = self.nodes.entry(key.clone()).or_default();
                *node = Node {
                    bd_seq: bd_seq(payload),
                    seq: Some(payload.seq.unwrap_or(0)),
                    ..Node::default()
                };
                self.birth(topic, payload, arrival, &mut applied);
                return applied;
            }
            MessageType::NDeath => {
                if let Some(node) = self.nodes.get_mut(&key) {
                    let death = bd_seq(payload);
                    // A will from an earlier session arriving after the new birth is old news.
                    let current = node.bd_seq.is_none() || death.is_none() || death == node.bd_seq;
                    if current && node.seq.is_some() {
                        node.seq = None;
                        stale_rows(topic, node, None, arrival, &mut applied);
                    }
                }
                return applied;
            }
            _ if !born => {
                applied.rebirth = Some(format!(
                    "{} before the node's NBIRTH",
                    topic.message_type.name()
                ));
            }
            _ => {
                let node = self.nodes.get_mut(&key).expect("born");
                let expected = node.seq.map(|seq| (seq + 1) % 256);
                node.seq = payload.seq.or(expected);
                if payload.seq.is_some() && payload.seq != expected {
                    applied.rebirth = Some(format!(
                        "sequence number {} where {} was due",
                        payload.seq.unwrap_or_default(),
                        expected.unwrap_or_default()
                    ));
                }
            }
        }
        match topic.message_type {
            MessageType::DBirth if born => self.birth(topic, payload, arrival, &mut applied),
            MessageType::DDeath if born => {
                // The device's series are stale now and gone until its next birth.
                let node = self.nodes.get_mut(&key).expect("born");
                stale_rows(topic, node, topic.device, arrival, &mut applied);
                let device = topic.device.map(str::to_string);
                node.series.retain(|(owner, _), _| *owner != device);
                node.aliases.retain(|_, (owner, _)| *owner != device);
            }
            MessageType::NData | MessageType::DData => {
                self.data(topic, payload, arrival, &mut applied)
            }
            _ => {}
        }
        self.limit_rebirths(&key, &mut applied);
        applied
    }

    /// Records a node's or device's metrics and emits their birth values.
    fn birth(
        &mut self,
        topic: &SparkplugTopic,
        payload: &Payload,
        arrival: i64,
        applied: &mut Applied,
    ) {
        let key = (topic.group.to_string(), topic.edge_node.to_string());
        let node = self.nodes.get_mut(&key).expect("born");
        let device = topic.device.map(str::to_string);
        if device.is_some() {
            node.series.retain(|(owner, _), _| *owner != device);
            node.aliases.retain(|_, (owner, _)| *owner != device);
        }
        for metric in &payload.metrics {
            let Some(name) = metric.name.clone() else {
                applied.problems.push(format!(
                    "a {} metric has no name",
                    topic.message_type.name()
                ));
                continue;
            };
            if device.is_none() && name == "bdSeq" {
                continue;
            }
            let datatype = match metric.datatype {
                Some(number) => DataType::from_number(number),
                None => match &metric.value {
                    Some(value) => DataType::implied_by(value),
                    None => DataType::Other(0),
                },
            };
            let series_key = (device.clone(), name.clone());
            if let Some(alias) = metric.alias {
                node.aliases.insert(alias, series_key.clone());
            }
            node.series.insert(
                series_key,
                Series {
                    datatype,
                    last: None,
                },
            );
            if let Some(row) = reading(topic, &name, datatype, metric, payload, arrival, applied) {
                if !row.historical {
                    node.series
                        .get_mut(&(device.clone(), name))
                        .expect("inserted")
                        .last = row.value.clone();
                }
                applied.rows.push(row);
            }
        }
    }

    /// Reads data metrics by the names or aliases their birth declared.
    fn data(
        &mut self,
        topic: &SparkplugTopic,
        payload: &Payload,
        arrival: i64,
        applied: &mut Applied,
    ) {
        let key = (topic.group.to_string(), topic.edge_node.to_string());
        let device = topic.device.map(str::to_string);
        let node = self.nodes.entry(key).or_default();
        for metric in &payload.metrics {
            let name = match (&metric.name, metric.alias) {
                (Some(name), _) => name.clone(),
                (None, Some(alias)) => match node.aliases.get(&alias) {
                    Some((_, name)) => name.clone(),
                    None => {
                        applied.problems.push(format!(
                            "alias {alias} of {} is not in its birth certificate",
                            origin(topic)
                        ));
                        applied
                            .rebirth
                            .get_or_insert_with(|| format!("unknown alias {alias}"));
                        continue;
                    }
                },
                (None, None) => {
                    applied.problems.push(format!(
                        "a metric of {} has neither name nor alias",
                        origin(topic)
                    ));
                    continue;
                }
            };
            let series_key = (device.clone(), name.clone());
            let datatype = match (node.series.get(&series_key), metric.datatype, &metric.value) {
                (Some(series), _, _) => series.datatype,
                (None, Some(number), _) => DataType::from_number(number),
                (None, None, Some(value)) => DataType::implied_by(value),
                (None, None, None) => DataType::Other(0),
            };
            if let Some(row) = reading(topic, &name, datatype, metric, payload, arrival, applied) {
                if !row.historical
                    && let Some(series) = node.series.get_mut(&series_key)
                {
                    series.last = row.value.clone();
                }
                applied.rows.push(row);
            }
        }
    }

    /// Keeps rebirth requests to one per node per interval.
    fn limit_rebirths(&mut self, key: &(String, String), applied: &mut Applied) {
        if applied.rebirth.is_none() {
            return;
        }
        let node = self.nodes.entry(key.clone()).or_default();
        let recent = node
            .rebirth_requested
            .is_some_and(|at| at.elapsed() < REBIRTH_INTERVAL);
        if recent {
            applied.rebirth = None;
        } else {
            node.rebirth_requested = Some(Instant::now());
        }
    }
}

/// The `bdSeq` metric of a birth or death.
fn bd_seq(payload: &Payload) -> Option<u64> {
    payload
        .metrics
        .iter()
        .find(|metric| metric.name.as_deref() == Some("bdSeq"))
        .and_then(|metric| match metric.value {
            Some(super::proto::MetricValue::Long(value)) => Some(value),
            Some(super::proto::MetricValue::Int(value)) => Some(u64::from(value)),
            _ => None,
        })
}

fn origin(topic: &SparkplugTopic) -> String {
    match topic.device {
        Some(device) => format!("device {}/{}/{device}", topic.group, topic.edge_node),
        None => format!("node {}/{}", topic.group, topic.edge_node),
    }
}

/// One metric's row, or a problem recorded when its value cannot be read.
fn reading(
    topic: &SparkplugTopic,
    name: &str,
    datatype: DataType,
    metric: &Metric,
    payload: &Payload,
    arrival: i64,
    applied: &mut Applied,
) -> Option<MetricRow> {
    let value = match (&metric.value, metric.is_null.unwrap_or(false)) {
        (_, true) | (None, false) => None,
        (Some(value), false) => match decode_value(datatype, value) {
            Ok(value) => Some(value),
            Err(problem) => {
                applied
                    .problems
                    .push(format!("metric `{name}` of {}: {problem}", origin(topic)));
                return None;
            }
        },
    };
    let timestamp = metric
        .timestamp
        .or(payload.timestamp)
        .map(|millis| millis.min(i64::MAX as u64) as i64)
        .unwrap_or(arrival);
    Some(MetricRow {
        group: topic.group.to_string(),
        edge_node: topic.edge_node.to_string(),
        device: topic.device.map(str::to_string),
        metric: name.to_string(),
        value,
        datatype,
        timestamp,
        quality: quality(metric),
        historical: metric.is_historical.unwrap_or(false),
        message_type: topic.message_type,
    })
}

/// The metric's `Quality` property, if it has one.
fn quality(metric: &Metric) -> Quality {
    let Some(properties) = &metric.properties else {
        return Quality::Good;
    };
    let code = properties
        .keys
        .iter()
        .position(|key| key.eq_ignore_ascii_case("quality"))
        .and_then(|index| properties.values.get(index))
        .and_then(|value| match value.value {
            Some(super::proto::PropertyScalar::Int(code)) => Some(i64::from(code as i32)),
            Some(super::proto::PropertyScalar::Long(code)) => Some(code as i64),
            _ => None,
        });
    code.map_or(Quality::Good, Quality::from_code)
}

/// Rows marking every series of the node (or of one device) stale, with their last values.
fn stale_rows(
    topic: &SparkplugTopic,
    node: &Node,
    device: Option<&str>,
    at: i64,
    applied: &mut Applied,
) {
    let mut series: Vec<(&SeriesKey, &Series)> = node
        .series
        .iter()
        .filter(|((owner, _), _)| device.is_none() || owner.as_deref() == device)
        .collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    for ((owner, name), series) in series {
        applied.rows.push(MetricRow {
            group: topic.group.to_string(),
            edge_node: topic.edge_node.to_string(),
            device: owner.clone(),
            metric: name.clone(),
            value: series.last.clone(),
            datatype: series.datatype,
            timestamp: at,
            quality: Quality::Stale,
            historical: false,
            message_type: topic.message_type,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::MetricValue;
    use super::*;

    fn topic(message_type: MessageType, device: Option<&'static str>) -> SparkplugTopic<'static> {
        SparkplugTopic {
            group: "g",
            message_type,
            edge_node: "gw",
            device,
        }
    }

    fn metric(name: Option<&str>, alias: Option<u64>, datatype: u32, value: MetricValue) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias,
            datatype: Some(datatype),
            value: Some(value),
            ..Default::default()
        }
    }

    fn payload(seq: u64, metrics: Vec<Metric>) -> Payload {
        Payload {
            timestamp: Some(1_000),
            metrics,
            seq: Some(seq),
            uuid: None,
        }
    }

    fn born() -> HostState {
        let mut host = HostState::default();
        let birth = payload(
            0,
            vec![
                metric(Some("bdSeq"), None, 8, MetricValue::Long(3)),
                metric(Some("temp"), Some(1), 9, MetricValue::Float(21.5)),
            ],
        );
        let applied = host.apply(&topic(MessageType::NBirth, None), &birth, 5);
        assert_eq!(applied.rows.len(), 1, "bdSeq is not a row");
        host
    }

    #[test]
    fn data_by_alias_reads_through_the_birth() {
        let mut host = born();
        let data = payload(1, vec![metric(None, Some(1), 0, MetricValue::Float(22.0))]);
        let applied = host.apply(&topic(MessageType::NData, None), &data, 5);
        assert_eq!(applied.rows[0].metric, "temp");
        assert_eq!(applied.rows[0].value, Some(Value::Number(22.0)));
        assert_eq!(applied.rows[0].datatype, DataType::Float);
        assert!(applied.rebirth.is_none());
    }

    #[test]
    fn a_sequence_gap_asks_for_rebirth_once() {
        let mut host = born();
        let data = payload(5, vec![metric(None, Some(1), 0, MetricValue::Float(22.0))]);
        let applied = host.apply(&topic(MessageType::NData, None), &data, 5);
        assert_eq!(applied.rows.len(), 1, "the data is still read");
        assert_eq!(
            applied.rebirth.as_deref(),
            Some("sequence number 5 where 1 was due")
        );
        let data = payload(7, vec![]);
        let again = host.apply(&topic(MessageType::NData, None), &data, 5);
        assert!(again.rebirth.is_none(), "not again within the interval");
    }

    #[test]
    fn data_before_any_birth_asks_for_rebirth_and_keeps_unknown_aliases_as_problems() {
        let mut host = HostState::default();
        let data = payload(
            4,
            vec![
                metric(None, Some(1), 0, MetricValue::Float(22.0)),
                metric(Some("rh"), None, 9, MetricValue::Float(60.0)),
            ],
        );
        let applied = host.apply(&topic(MessageType::NData, None), &data, 5);
        assert_eq!(
            applied.rebirth.as_deref(),
            Some("NDATA before the node's NBIRTH")
        );
        assert_eq!(applied.rows.len(), 1, "named metrics are still read");
        assert!(applied.problems[0].contains("alias 1 of node g/gw"));
    }

    #[test]
    fn death_makes_series_stale_unless_it_is_from_an_earlier_session() {
        let mut host = born();
        let old_will = payload(
            0,
            vec![metric(Some("bdSeq"), None, 8, MetricValue::Long(2))],
        );
        let applied = host.apply(&topic(MessageType::NDeath, None), &old_will, 9);
        assert!(applied.rows.is_empty());
        let death = payload(
            0,
            vec![metric(Some("bdSeq"), None, 8, MetricValue::Long(3))],
        );
        let applied = host.apply(&topic(MessageType::NDeath, None), &death, 9);
        assert_eq!(applied.rows.len(), 1);
        let row = &applied.rows[0];
        assert_eq!(
            (row.quality, row.timestamp, row.value.clone()),
            (Quality::Stale, 9, Some(Value::Number(21.5)))
        );
    }

    #[test]
    fn device_death_makes_only_that_device_stale() {
        let mut host = born();
        let birth = payload(
            1,
            vec![metric(Some("co2"), Some(2), 3, MetricValue::Int(900))],
        );
        host.apply(&topic(MessageType::DBirth, Some("room1")), &birth, 5);
        let death = payload(2, vec![]);
        let applied = host.apply(&topic(MessageType::DDeath, Some("room1")), &death, 9);
        assert_eq!(applied.rows.len(), 1);
        assert_eq!(applied.rows[0].metric, "co2");
        assert_eq!(applied.rows[0].device.as_deref(), Some("room1"));
        let death = payload(0, vec![]);
        let node_death = host.apply(&topic(MessageType::NDeath, None), &death, 10);
        let stale: Vec<&str> = node_death
            .rows
            .iter()
            .map(|row| row.metric.as_str())
            .collect();
        assert_eq!(stale, ["temp"], "the dead device is not stale twice");
    }

    #[test]
    fn historical_values_keep_their_time_and_do_not_become_the_last_value() {
        let mut host = born();
        let mut old = metric(None, Some(1), 0, MetricValue::Float(19.0));
        old.is_historical = Some(true);
        old.timestamp = Some(100);
        let applied = host.apply(&topic(MessageType::NData, None), &payload(1, vec![old]), 5);
        assert!(applied.rows[0].historical);
        assert_eq!(applied.rows[0].timestamp, 100);
        let death = payload(0, vec![]);
        let stale = host.apply(&topic(MessageType::NDeath, None), &death, 9);
        assert_eq!(stale.rows[0].value, Some(Value::Number(21.5)));
    }

    #[test]
    fn quality_codes_map_to_names() {
        assert_eq!(Quality::from_code(192), Quality::Good);
        assert_eq!(Quality::from_code(0), Quality::Bad);
        assert_eq!(Quality::from_code(100), Quality::Uncertain);
        assert_eq!(Quality::from_code(500), Quality::Stale);
    }
}
