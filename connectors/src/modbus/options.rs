//! `WITH (…)` options of Modbus TCP sources.

use std::sync::Arc;
use std::time::Duration;

use crate::modbus::plan::Limits;
use crate::modbus::poller::DeviceConfig;
use crate::modbus::sink::ModbusSinkConfig;
use crate::modbus::source::COLUMNS;
use crate::modbus::tags::TagMap;
use crate::payload::RowLayout;
use datafusion::arrow::datatypes::Schema;

use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::{Options, parse_bool};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "host",
    "port",
    "unit_id",
    "tags",
    "address_base",
    "device",
    "poll_interval",
    "timeout",
    "retries",
    "gap_fill",
    "request_per_tag",
    "pause",
    "close_after_poll",
    "simulate",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected a whole number in range, found {text:?}"))
}

pub const SINK_OPTIONS: &[&str] = &[
    "connector",
    "host",
    "port",
    "unit_id",
    "tags",
    "address_base",
    "device",
    "timeout",
    "tag_column",
    "value_column",
    "shadow",
    "audit",
];

/// A Modbus source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> Result<DeviceConfig, OptionError> {
    crate::fixed_columns::check(options, layout, "modbus", COLUMNS)?;
    device(options, name, "a 'modbus' source", true)
}

/// A Modbus sink `name` writing rows of `schema`: each row a tag and a value.
pub fn sink(
    options: &mut Options,
    name: &str,
    schema: &Schema,
) -> Result<ModbusSinkConfig, OptionError> {
    let device = device(options, name, "a 'modbus' sink", false)?;
    let mut column = |key: &str, default: &str| -> Result<usize, OptionError> {
        let (column, position) = options
            .take(key)
            .unwrap_or_else(|| (default.to_string(), options.statement));
        schema.index_of(&column).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            OptionError::new(
                position,
                format!(
                    "option `{key}`: the sink's rows have no column `{column}` ({})",
                    names.join(", ")
                ),
            )
        })
    };
    let tag_column = column("tag_column", "tag")?;
    let value_column = column("value_column", "value")?;
    let shadow = options.parsed("shadow", parse_bool)?.unwrap_or(false);
    let audit = options
        .take("audit")
        .map(|(path, _)| std::path::PathBuf::from(path))
        .unwrap_or_else(|| std::path::PathBuf::from(format!("{name}.audit.jsonl")));
    Ok(ModbusSinkConfig {
        device,
        tag_column,
        value_column,
        shadow,
        audit,
    })
}

/// The device, its tag map and the polling options.
fn device(
    options: &mut Options,
    name: &str,
    what: &str,
    polled: bool,
) -> Result<DeviceConfig, OptionError> {
    let simulate = polled && options.parsed("simulate", parse_bool)?.unwrap_or(false);
    let host = match options.take("host") {
        Some((host, _)) => host,
        None if simulate => "127.0.0.1".to_string(),
        None if polled => {
            return Err(OptionError::new(
                options.statement,
                format!("{what} needs the option `host` (or simulate = 'true')"),
            ));
        }
        None => options.required("host", what)?.0,
    };
    let port = options.parsed("port", number::<u16>)?.unwrap_or(502);
    let unit_id = options.parsed("unit_id", number::<u8>)?.unwrap_or(1);
    let interval = match polled {
        true => options.duration("poll_interval")?,
        false => None,
    }
    .unwrap_or(Duration::from_secs(1));
    if interval < Duration::from_millis(10) {
        return Err(OptionError::new(
            options.statement,
            "option `poll_interval` must be at least 10 ms",
        ));
    }
    let base = match options.take("address_base") {
        None => 0,
        Some((text, _)) if text.trim() == "0" => 0,
        Some((text, _)) if text.trim() == "1" => 1,
        Some((text, position)) => {
            return Err(OptionError::new(
                position,
                format!("option `address_base`: expected 0 or 1, found {text:?}"),
            ));
        }
    };
    let (tags_text, tags_position) = options.required("tags", what)?;
    // A tag map inline (TOML with [[tag]] tables), or the path of a TOML file.
    let inline = tags_text.contains("[[tag]]");
    let tags = if inline {
        TagMap::parse(&tags_text, interval)
    } else {
        TagMap::load(std::path::Path::new(&tags_text), interval)
    }
    .and_then(|map| match base {
        1 => map.one_based(),
        _ => Ok(map),
    })
    .map_err(|problem| OptionError::new(tags_position, format!("option `tags`: {problem}")))?;
    let timeout = options
        .duration("timeout")?
        .unwrap_or(Duration::from_secs(1));
    let device = options
        .take("device")
        .map(|(device, _)| device)
        .unwrap_or_else(|| name.to_string());
    let mut config = DeviceConfig {
        name: device,
        host,
        port,
        unit_id,
        tags: Arc::new(tags),
        tags_file: (!inline).then(|| std::path::PathBuf::from(&tags_text)),
        limits: Limits::default(),
        timeout,
        retries: 1,
        pause: Duration::ZERO,
        close_after_poll: false,
        simulate,
    };
    if polled {
        config.retries = options.parsed("retries", number::<u32>)?.unwrap_or(1);
        config.limits.gap_fill = options.parsed("gap_fill", number::<u16>)?.unwrap_or(0);
        config.limits.per_tag = options
            .parsed("request_per_tag", parse_bool)?
            .unwrap_or(false);
        config.pause = options.duration("pause")?.unwrap_or(Duration::ZERO);
        config.close_after_poll = options
            .parsed("close_after_poll", parse_bool)?
            .unwrap_or(false);
    }
    Ok(config)
}
