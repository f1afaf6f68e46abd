//! `WITH (…)` options of MQTT sources and sinks.

use std::time::Duration;

use datafusion::arrow::datatypes::Schema;
use vibelux_connectors::mqtt::broker::{BrokerConfig, QoS, parse_qos};
use vibelux_connectors::mqtt::sink::MqttSinkConfig;
use vibelux_connectors::mqtt::source::{EventTimeFrom, MqttPayload, MqttSourceConfig};
use vibelux_connectors::mqtt::topic::{TopicPattern, TopicTemplate};
use vibelux_connectors::payload::{JsonPath, RowLayout};

use super::{Options, parse_bool};
use crate::error::{SqlError, SqlResult};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "topic",
    "qos",
    "client_id",
    "clean_session",
    "username",
    "password",
    "keep_alive",
    "format",
    "json_paths",
    "value_column",
    "event_time",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
];

pub const SINK_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "topic",
    "qos",
    "client_id",
    "clean_session",
    "username",
    "password",
    "keep_alive",
    "retain",
];

fn broker(options: &mut Options, default_client_id: String, what: &str) -> SqlResult<BrokerConfig> {
    let (url, position) = options.required("url", what)?;
    let (host, port) = BrokerConfig::parse_url(&url)
        .map_err(|problem| SqlError::new(position, format!("option `url`: {problem}")))?;
    let client_id = match options.take("client_id") {
        None => default_client_id,
        Some((id, position)) if id.trim().is_empty() || id.len() > 65_535 => {
            return Err(SqlError::new(
                position,
                "option `client_id`: expected a non-empty id",
            ));
        }
        Some((id, _)) => id,
    };
    let clean_session = options
        .parsed("clean_session", parse_bool)?
        .unwrap_or(false);
    let username = options.take("username").map(|(value, _)| value);
    let password = match options.take("password") {
        Some((_, position)) if username.is_none() => {
            return Err(SqlError::new(
                position,
                "option `password` needs `username` as well",
            ));
        }
        other => other.map(|(value, _)| value),
    };
    let keep_alive = options
        .duration("keep_alive")?
        .unwrap_or(Duration::from_secs(30));
    if keep_alive < Duration::from_secs(1) {
        return Err(SqlError::new(
            options.statement,
            "option `keep_alive` must be at least 1 second",
        ));
    }
    Ok(BrokerConfig {
        host,
        port,
        client_id,
        clean_session,
        username,
        password,
        keep_alive,
    })
}

/// An MQTT source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> SqlResult<MqttSourceConfig> {
    let what = "an 'mqtt' source";
    let broker = broker(options, format!("vibelux-{name}"), what)?;
    let schema = &layout.schema;
    let (topic_text, topic_position) = options.required("topic", what)?;
    let topic = TopicPattern::parse(&topic_text, schema)
        .map_err(|problem| SqlError::new(topic_position, format!("option `topic`: {problem}")))?;
    let qos = options
        .parsed("qos", parse_qos)?
        .unwrap_or(QoS::AtLeastOnce);
    let format = options.take("format");
    let raw = match &format {
        None => false,
        Some((format, position)) => match format.to_ascii_lowercase().as_str() {
            "json" => false,
            "raw" => true,
            _ => {
                return Err(SqlError::new(
                    *position,
                    format!("option `format`: expected 'json' or 'raw', found {format:?}"),
                ));
            }
        },
    };
    let payload = if raw {
        if let Some((_, position)) = options.take("json_paths") {
            return Err(SqlError::new(
                position,
                "option `json_paths` is for format = 'json'",
            ));
        }
        MqttPayload::Raw {
            column: value_column(options, schema, &topic, layout.event_time_column)?,
        }
    } else {
        if let Some((_, position)) = options.take("value_column") {
            return Err(SqlError::new(
                position,
                "option `value_column` is for format = 'raw'",
            ));
        }
        let paths = match options.take("json_paths") {
            None => Vec::new(),
            Some((text, position)) => json_paths(&text, schema).map_err(|problem| {
                SqlError::new(position, format!("option `json_paths`: {problem}"))
            })?,
        };
        MqttPayload::Json { paths }
    };
    let event_time = match options.take("event_time") {
        None if raw => EventTimeFrom::Arrival,
        None => EventTimeFrom::Payload,
        Some((text, position)) => match text.to_ascii_lowercase().as_str() {
            "payload" if raw => {
                return Err(SqlError::new(
                    position,
                    "option `event_time`: a raw payload carries no timestamp; use 'arrival'",
                ));
            }
            "payload" => EventTimeFrom::Payload,
            "arrival" => EventTimeFrom::Arrival,
            _ => {
                return Err(SqlError::new(
                    position,
                    format!("option `event_time`: expected 'payload' or 'arrival', found {text:?}"),
                ));
            }
        },
    };
    Ok(MqttSourceConfig {
        broker,
        topic,
        qos,
        payload,
        event_time,
    })
}

/// The column a raw payload fills: `value_column`, or the one column neither the topic nor
/// the clock fills.
fn value_column(
    options: &mut Options,
    schema: &Schema,
    topic: &TopicPattern,
    event_time: Option<usize>,
) -> SqlResult<usize> {
    if let Some((name, position)) = options.take("value_column") {
        return schema
            .fields()
            .iter()
            .position(|field| field.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                SqlError::new(
                    position,
                    format!("option `value_column`: no column `{name}`"),
                )
            });
    }
    let from_topic: Vec<usize> = topic.columns().collect();
    let free: Vec<usize> = (0..schema.fields().len())
        .filter(|column| Some(*column) != event_time && !from_topic.contains(column))
        .collect();
    match free.as_slice() {
        [column] => Ok(*column),
        _ => Err(SqlError::new(
            options.statement,
            "a raw payload fills one column: name it with value_column = '…'",
        )),
    }
}

/// Parses `temp_c = $.data.temp, ts = $.meta.time`.
fn json_paths(text: &str, schema: &Schema) -> Result<Vec<(usize, JsonPath)>, String> {
    let mut paths = Vec::new();
    for entry in text.split(',').filter(|entry| !entry.trim().is_empty()) {
        let (name, path) = entry
            .split_once('=')
            .ok_or_else(|| format!("expected `column = $.path`, found {:?}", entry.trim()))?;
        let name = name.trim();
        let column = schema
            .fields()
            .iter()
            .position(|field| field.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("no column `{name}`"))?;
        if paths.iter().any(|(seen, _)| *seen == column) {
            return Err(format!("column `{name}` has two paths"));
        }
        paths.push((column, JsonPath::parse(path)?));
    }
    Ok(paths)
}

/// An MQTT sink `name` publishing rows of `schema`.
pub fn sink(options: &mut Options, name: &str, schema: &Schema) -> SqlResult<MqttSinkConfig> {
    let what = "an 'mqtt' sink";
    let broker = broker(options, format!("vibelux-sink-{name}"), what)?;
    let (topic_text, topic_position) = options.required("topic", what)?;
    let topic = TopicTemplate::parse(&topic_text, schema)
        .map_err(|problem| SqlError::new(topic_position, format!("option `topic`: {problem}")))?;
    let qos = options
        .parsed("qos", parse_qos)?
        .unwrap_or(QoS::AtLeastOnce);
    let retain = options.parsed("retain", parse_bool)?.unwrap_or(false);
    Ok(MqttSinkConfig {
        broker,
        topic,
        qos,
        retain,
    })
}
