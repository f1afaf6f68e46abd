//! `WITH (…)` options of Sparkplug B sources.

use vibelux_connectors::mqtt::broker::{QoS, parse_qos};
use vibelux_connectors::payload::RowLayout;
use vibelux_connectors::sparkplug::source::{COLUMNS, SparkplugSourceConfig};

use super::{Options, parse_bool};
use crate::error::{SqlError, SqlResult};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "group",
    "qos",
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
];

/// A Sparkplug source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> SqlResult<SparkplugSourceConfig> {
    let what = "a 'sparkplug' source";
    check_columns(options, layout)?;
    let broker = super::mqtt::broker(options, format!("vibelux-{name}"), what)?;
    let group = match options.take("group") {
        None => "+".to_string(),
        Some((group, position)) => {
            if group.is_empty()
                || group.contains(['/', '#'])
                || (group.contains('+') && group != "+")
            {
                return Err(SqlError::new(
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
            return Err(SqlError::new(
                position,
                format!("option `host_id`: expected an id without '/', '+' or '#', found {id:?}"),
            ));
        }
        other => other.map(|(id, _)| id),
    };
    let rebirth = options.parsed("rebirth", parse_bool)?.unwrap_or(true);
    Ok(SparkplugSourceConfig {
        broker,
        group,
        qos,
        host_id,
        rebirth,
    })
}

/// Every declared column must be one the host fills, with its type; the event time is `ts`.
fn check_columns(options: &Options, layout: &RowLayout) -> SqlResult<()> {
    let available = || {
        COLUMNS
            .iter()
            .map(|(name, kind)| format!("{name} {}", sql_type_name(kind)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for field in layout.schema.fields() {
        let name = field.name().to_ascii_lowercase();
        match COLUMNS.iter().find(|(column, _)| *column == name) {
            None => {
                return Err(SqlError::new(
                    options.statement,
                    format!(
                        "column `{}` is not filled by a 'sparkplug' source; its columns are: {}",
                        field.name(),
                        available()
                    ),
                ));
            }
            Some((column, kind)) if !same_type(kind, field.data_type()) => {
                return Err(SqlError::new(
                    options.statement,
                    format!(
                        "column `{column}` of a 'sparkplug' source is {}, declared {}",
                        sql_type_name(kind),
                        sql_type_name(field.data_type())
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(column) = layout.event_time_column {
        let name = layout.schema.field(column).name();
        if !name.eq_ignore_ascii_case("ts") {
            return Err(SqlError::new(
                options.statement,
                format!(
                    "the watermark of a 'sparkplug' source is on `ts` (the metric's timestamp), not `{name}`"
                ),
            ));
        }
    }
    Ok(())
}

fn same_type(
    expected: &datafusion::arrow::datatypes::DataType,
    declared: &datafusion::arrow::datatypes::DataType,
) -> bool {
    use datafusion::arrow::datatypes::DataType;
    match (expected, declared) {
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _)) => true,
        _ => expected == declared,
    }
}

fn sql_type_name(data_type: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::DataType;
    match data_type {
        DataType::Utf8 => "TEXT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        other => other.to_string(),
    }
}
