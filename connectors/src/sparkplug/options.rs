//! `WITH (…)` options of Sparkplug B sources.

use crate::mqtt::broker::{QoS, parse_qos};
use crate::payload::RowLayout;
use crate::sparkplug::source::{COLUMNS, SparkplugSourceConfig};

use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::{Options, parse_bool};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "group",
    "qos",
    "protocol",
    "session_expiry",
    "host_id",
    "rebirth",
    "client_id",
    "clean_session",
    "username",
    "password",
    "keep_alive",
    "tls_ca",
    "tls_client_cert",
    "tls_client_key",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

/// A Sparkplug source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> Result<SparkplugSourceConfig, OptionError> {
    let what = "a 'sparkplug' source";
    crate::fixed_columns::check(options, layout, "sparkplug", COLUMNS)?;
    let broker = crate::mqtt::options::broker(options, format!("vibelux-{name}"), what)?;
    let group = match options.take("group") {
        None => "+".to_string(),
        Some((group, position)) => {
            if group.is_empty()
                || group.contains(['/', '#'])
                || (group.contains('+') && group != "+")
            {
                return Err(OptionError::new(
                    position,
                    format!(
                        "option `group`: expected a Sparkplug group id or '+', found {group:?}"
                    ),
                ));
            }
            group
        }
    };
    let qos = options
        .parsed("qos", parse_qos)?
        .unwrap_or(QoS::AtLeastOnce);
    let host_id = match options.take("host_id") {
        Some((id, position)) if id.is_empty() || id.contains(['/', '+', '#']) => {
            return Err(OptionError::new(
                position,
                format!("option `host_id`: expected an id without '/', '+' or '#', found {id:?}"),
            ));
        }
        other => other.map(|(id, _)| id),
    };
    let rebirth = options.parsed("rebirth", parse_bool)?.unwrap_or(true);
    let protocol = crate::mqtt::options::protocol(options)?;
    Ok(SparkplugSourceConfig {
        broker,
        group,
        qos,
        host_id,
        rebirth,
        protocol,
    })
}
