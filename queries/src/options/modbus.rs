//! `WITH (…)` options of Modbus TCP sources.

use std::sync::Arc;
use std::time::Duration;

use vibelux_connectors::modbus::plan::Limits;
use vibelux_connectors::modbus::poller::DeviceConfig;
use vibelux_connectors::modbus::source::COLUMNS;
use vibelux_connectors::modbus::tags::TagMap;
use vibelux_connectors::payload::RowLayout;

use super::{Options, parse_bool};
use crate::error::{SqlError, SqlResult};

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "host",
    "port",
    "unit_id",
    "tags",
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
];

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected a whole number in range, found {text:?}"))
}

/// A Modbus source `name` with rows laid out as `layout`.
pub fn source(options: &mut Options, name: &str, layout: &RowLayout) -> SqlResult<DeviceConfig> {
    let what = "a 'modbus' source";
    super::fixed_columns::check(options, layout, "modbus", COLUMNS)?;
    let simulate = options.parsed("simulate", parse_bool)?.unwrap_or(false);
    let host = match options.take("host") {
        Some((host, _)) => host,
        None if simulate => "127.0.0.1".to_string(),
        None => {
            return Err(SqlError::new(
                options.statement,
                format!("{what} needs the option `host` (or simulate = 'true')"),
            ));
        }
    };
    let port = options.parsed("port", number::<u16>)?.unwrap_or(502);
    let unit_id = options.parsed("unit_id", number::<u8>)?.unwrap_or(1);
    let interval = options
        .duration("poll_interval")?
        .unwrap_or(Duration::from_secs(1));
    if interval < Duration::from_millis(10) {
        return Err(SqlError::new(
            options.statement,
            "option `poll_interval` must be at least 10 ms",
        ));
    }
    let (tags_text, tags_position) = options.required("tags", what)?;
    // A tag map inline (TOML with [[tag]] tables), or the path of a TOML file.
    let tags = if tags_text.contains("[[tag]]") {
        TagMap::parse(&tags_text, interval)
    } else {
        TagMap::load(std::path::Path::new(&tags_text), interval)
    }
    .map_err(|problem| SqlError::new(tags_position, format!("option `tags`: {problem}")))?;
    let timeout = options
        .duration("timeout")?
        .unwrap_or(Duration::from_secs(1));
    let retries = options.parsed("retries", number::<u32>)?.unwrap_or(1);
    let gap_fill = options.parsed("gap_fill", number::<u16>)?.unwrap_or(0);
    let per_tag = options
        .parsed("request_per_tag", parse_bool)?
        .unwrap_or(false);
    let pause = options.duration("pause")?.unwrap_or(Duration::ZERO);
    let close_after_poll = options
        .parsed("close_after_poll", parse_bool)?
        .unwrap_or(false);
    let device = options
        .take("device")
        .map(|(device, _)| device)
        .unwrap_or_else(|| name.to_string());
    Ok(DeviceConfig {
        name: device,
        host,
        port,
        unit_id,
        tags: Arc::new(tags),
        limits: Limits {
            gap_fill,
            per_tag,
            ..Limits::default()
        },
        timeout,
        retries,
        pause,
        close_after_poll,
        simulate,
    })
}
