//! `WITH (…)` options of MQTT sources and sinks.

use std::time::Duration;

use crate::mqtt::broker::{BrokerConfig, QoS, TlsFiles, parse_qos};
use crate::mqtt::link::Protocol;
use crate::mqtt::sink::MqttSinkConfig;
use crate::mqtt::source::{EventTimeFrom, MqttSourceConfig};
use crate::mqtt::topic::{TopicPattern, TopicTemplate};
use crate::payload::{MessageFormat, RowLayout};
use datafusion::arrow::datatypes::Schema;

use crate::message_options::message_format;
use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::{Options, parse_bool};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "topic",
    "qos",
    "protocol",
    "session_expiry",
    "client_id",
    "clean_session",
    "username",
    "password",
    "keep_alive",
    "tls_ca",
    "tls_client_cert",
    "tls_client_key",
    "format",
    "json_paths",
    "value_column",
    "event_time",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
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
    "tls_ca",
    "tls_client_cert",
    "tls_client_key",
    "retain",
    "audit",
];

pub(crate) fn broker(
    options: &mut Options,
    default_client_id: String,
    what: &str,
) -> Result<BrokerConfig, OptionError> {
    let (url, position) = options.required("url", what)?;
    let (host, port, tls) = BrokerConfig::parse_url(&url)
        .map_err(|problem| OptionError::new(position, format!("option `url`: {problem}")))?;
    let tls = tls_files(options, tls)?;
    let client_id = match options.take("client_id") {
        None => default_client_id,
        Some((id, position)) if id.trim().is_empty() || id.len() > 65_535 => {
            return Err(OptionError::new(
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
            return Err(OptionError::new(
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
        return Err(OptionError::new(
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
        tls,
    })
}

/// `protocol = '3.1.1' | '5'`, and with MQTT 5 `session_expiry` (how long the broker keeps the
/// session of a disconnected engine; default one day).
pub(crate) fn protocol(options: &mut Options) -> Result<Protocol, OptionError> {
    let protocol = match options.take("protocol") {
        None => "3.1.1".to_string(),
        Some((text, position)) => match text.trim() {
            "3.1.1" | "3" | "4" => "3.1.1".to_string(),
            "5" | "5.0" => "5".to_string(),
            other => {
                return Err(OptionError::new(
                    position,
                    format!("option `protocol`: expected '3.1.1' or '5', found {other:?}"),
                ));
            }
        },
    };
    let expiry = options.duration("session_expiry")?;
    match (protocol.as_str(), expiry) {
        ("5", expiry) => Ok(Protocol::V5 {
            session_expiry: expiry.unwrap_or(Duration::from_secs(24 * 3600)),
        }),
        (_, Some(_)) => Err(OptionError::new(
            options.statement,
            "option `session_expiry` needs protocol = '5' (MQTT 3.1.1 sessions last as the broker decides)",
        )),
        _ => Ok(Protocol::V311),
    }
}

/// `tls_ca`, `tls_client_cert`, `tls_client_key`: PEM files, checked to exist now.
fn tls_files(options: &mut Options, tls: bool) -> Result<Option<TlsFiles>, OptionError> {
    let mut file = |key: &str| -> Result<Option<std::path::PathBuf>, OptionError> {
        match options.take(key) {
            None => Ok(None),
            Some((_, position)) if !tls => Err(OptionError::new(
                position,
                format!("option `{key}` needs an mqtts:// url"),
            )),
            Some((path, position)) => {
                let path = std::path::PathBuf::from(path);
                if path.exists() {
                    Ok(Some(path))
                } else {
                    Err(OptionError::new(
                        position,
                        format!("option `{key}`: file {} does not exist", path.display()),
                    ))
                }
            }
        }
    };
    let ca = file("tls_ca")?;
    let cert = file("tls_client_cert")?;
    let key = file("tls_client_key")?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(OptionError::new(
                options.statement,
                "`tls_client_cert` and `tls_client_key` go together",
            ));
        }
    };
    Ok(tls.then_some(TlsFiles { ca, client }))
}

/// An MQTT source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> Result<MqttSourceConfig, OptionError> {
    let what = "an 'mqtt' source";
    let broker = broker(options, format!("vibelux-{name}"), what)?;
    let schema = &layout.schema;
    let (topic_text, topic_position) = options.required("topic", what)?;
    let topic = TopicPattern::parse(&topic_text, schema).map_err(|problem| {
        OptionError::new(topic_position, format!("option `topic`: {problem}"))
    })?;
    let qos = options
        .parsed("qos", parse_qos)?
        .unwrap_or(QoS::AtLeastOnce);
    let protocol = protocol(options)?;
    let from_topic: Vec<usize> = topic.columns().collect();
    let payload = message_format(options, layout, &from_topic)?;
    let raw = matches!(payload, MessageFormat::Raw { .. });
    let event_time = match options.take("event_time") {
        None if raw => EventTimeFrom::Arrival,
        None => EventTimeFrom::Payload,
        Some((text, position)) => match text.to_ascii_lowercase().as_str() {
            "payload" if raw => {
                return Err(OptionError::new(
                    position,
                    "option `event_time`: a raw payload carries no timestamp; use 'arrival'",
                ));
            }
            "payload" => EventTimeFrom::Payload,
            "arrival" => EventTimeFrom::Arrival,
            _ => {
                return Err(OptionError::new(
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
        protocol,
        share: None,
    })
}

/// An MQTT sink `name` publishing rows of `schema`.
pub fn sink(
    options: &mut Options,
    name: &str,
    schema: &Schema,
) -> Result<MqttSinkConfig, OptionError> {
    let what = "an 'mqtt' sink";
    let broker = broker(options, format!("vibelux-sink-{name}"), what)?;
    let (topic_text, topic_position) = options.required("topic", what)?;
    let topic = TopicTemplate::parse(&topic_text, schema).map_err(|problem| {
        OptionError::new(topic_position, format!("option `topic`: {problem}"))
    })?;
    let qos = options
        .parsed("qos", parse_qos)?
        .unwrap_or(QoS::AtLeastOnce);
    let retain = options.parsed("retain", parse_bool)?.unwrap_or(false);
    let audit = options
        .take("audit")
        .map(|(path, _)| std::path::PathBuf::from(path));
    Ok(MqttSinkConfig {
        broker,
        topic,
        qos,
        retain,
        audit,
    })
}
