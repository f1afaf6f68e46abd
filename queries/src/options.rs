//! `WITH (…)` options of sources and sinks, checked and turned into connector configurations.
//!
//! Every option is either understood or refused by name: a misspelt `zones_per_rom` must not be
//! ignored silently. Errors point at the option's value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use vibelux_connectors::file_source::{FileFormat, FileSourceConfig};
use vibelux_connectors::parquet_sink::{ParquetSinkConfig, PartitionKey};
use vibelux_connectors::payload::{RowLayout, parse_timestamp};
use vibelux_connectors::simulator::{FaultKind, SimulatorConfig, Speed};
use vibelux_connectors::target::SinkTarget;

use crate::error::{Position, SqlError, SqlResult};
use crate::parser::OptionEntry;
use crate::plan::SourceConnector;

mod fixed_columns;
mod kafka;
mod message;
mod modbus;
mod mqtt;
mod sparkplug;
mod webhook;

/// Options not yet consumed, by lower-case name: value, value position, name position.
pub struct Options {
    entries: BTreeMap<String, (String, Position, Position)>,
    statement: Position,
}

impl Options {
    pub fn new(entries: &[OptionEntry], statement: Position) -> SqlResult<Self> {
        let mut map = BTreeMap::new();
        for entry in entries {
            let key = entry.key.value.to_ascii_lowercase();
            let key_position = Position::of(entry.key.span.start);
            if map
                .insert(
                    key.clone(),
                    (entry.value.clone(), entry.value_position, key_position),
                )
                .is_some()
            {
                return Err(SqlError::new(
                    entry.value_position,
                    format!("option `{key}` is given twice"),
                ));
            }
        }
        Ok(Options {
            entries: map,
            statement,
        })
    }

    pub fn take(&mut self, key: &str) -> Option<(String, Position)> {
        self.entries
            .remove(key)
            .map(|(value, position, _)| (value, position))
    }

    /// Every `prefix<name> = 'value'` option, as (name, value): settings passed through.
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let (value, _) = self.take(&key)?;
                Some((key[prefix.len()..].to_string(), value))
            })
            .collect()
    }

    pub fn required(&mut self, key: &str, what: &str) -> SqlResult<(String, Position)> {
        self.take(key).ok_or_else(|| {
            SqlError::new(self.statement, format!("{what} needs the option `{key}`"))
        })
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> SqlResult<Option<T>> {
        match self.take(key) {
            None => Ok(None),
            Some((value, position)) => parse(&value)
                .map(Some)
                .map_err(|problem| SqlError::new(position, format!("option `{key}`: {problem}"))),
        }
    }

    pub fn duration(&mut self, key: &str) -> SqlResult<Option<Duration>> {
        self.parsed(key, parse_duration)
    }

    pub fn count(&mut self, key: &str) -> SqlResult<Option<usize>> {
        self.parsed(key, |text| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| format!("expected a whole number, found {text:?}"))
        })
    }

    /// Refuses whatever options are left, naming them and the ones that are understood.
    pub fn finish(self, what: &str, known: &[&str]) -> SqlResult<()> {
        match self.entries.into_iter().next() {
            None => Ok(()),
            Some((key, (_, _, position))) => Err(SqlError::new(
                position,
                format!(
                    "unknown option `{key}` for {what}; known options: {}",
                    known.join(", ")
                ),
            )),
        }
    }
}

/// Parses `5 seconds`, `1 minute`, `500ms`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("expected a duration such as '5 seconds' or '500ms', found {text:?}"))
}

pub fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

const SIMULATOR_OPTIONS: &[&str] = &[
    "connector",
    "rooms",
    "zones_per_room",
    "sensors_per_zone",
    "seed",
    "interval",
    "speed",
    "start",
    "duration",
    "faults",
    "faults_path",
    "disorder",
    "duplicates",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
];
const FILE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "mode",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
];

/// "a 'file' source", "an 'mqtt' sink": for messages.
pub fn connector_kind(connector: &str, kind: &str) -> String {
    let spoken_vowel = connector.starts_with(['a', 'e', 'i', 'o', 'u']) || connector == "mqtt";
    let article = if spoken_vowel { "an" } else { "a" };
    format!("{article} '{connector}' {kind}")
}

/// Reads `true`/`false` (and `on`/`off`, `yes`/`no`, `1`/`0`).
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

/// The connector of a `CREATE SOURCE` named `name` whose rows are laid out as `layout`, from its
/// options (source-wide options are left in place).
pub fn source_connector(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> SqlResult<SourceConnector> {
    let (connector, position) = options.required("connector", "a source")?;
    match connector.to_ascii_lowercase().as_str() {
        "simulator" => simulator_config(options).map(SourceConnector::Simulator),
        "file" => {
            let (path, path_position) = options.required("path", "a file source")?;
            let format = file_format(options, &path, path_position)?;
            let follow = match options.take("mode") {
                None => false,
                Some((mode, position)) => match mode.to_ascii_lowercase().as_str() {
                    "replay" | "bounded" => false,
                    "tail" | "follow" => true,
                    _ => {
                        return Err(SqlError::new(
                            position,
                            format!("option `mode`: expected 'replay' or 'tail', found {mode:?}"),
                        ));
                    }
                },
            };
            Ok(SourceConnector::File(FileSourceConfig {
                path: PathBuf::from(path),
                format,
                follow,
            }))
        }
        "mqtt" => mqtt::source(options, name, layout).map(SourceConnector::Mqtt),
        "sparkplug" => sparkplug::source(options, name, layout).map(SourceConnector::Sparkplug),
        "modbus" => modbus::source(options, name, layout).map(SourceConnector::Modbus),
        "kafka" => kafka::source(options, name, layout)
            .map(|config| SourceConnector::Kafka(std::sync::Arc::new(config))),
        other => Err(SqlError::new(
            position,
            format!(
                "unknown source connector '{other}'; available: 'simulator', 'file', 'mqtt', 'sparkplug', 'kafka', 'modbus'"
            ),
        )),
    }
}

pub fn known_source_options(connector: &SourceConnector) -> &'static [&'static str] {
    match connector {
        SourceConnector::Simulator(_) => SIMULATOR_OPTIONS,
        SourceConnector::File(_) => FILE_OPTIONS,
        SourceConnector::Mqtt(_) => mqtt::SOURCE_OPTIONS,
        SourceConnector::Sparkplug(_) => sparkplug::SOURCE_OPTIONS,
        SourceConnector::Modbus(_) => modbus::SOURCE_OPTIONS,
        SourceConnector::Kafka(_) => kafka::SOURCE_OPTIONS,
    }
}

fn file_format(
    options: &mut Options,
    path: &str,
    path_position: Position,
) -> SqlResult<FileFormat> {
    match options.take("format") {
        Some((format, position)) => FileFormat::parse(&format).ok_or_else(|| {
            SqlError::new(
                position,
                format!("option `format`: expected 'json' or 'csv', found {format:?}"),
            )
        }),
        None => {
            let extension = path.rsplit('.').next().unwrap_or_default();
            FileFormat::parse(extension).ok_or_else(|| {
                SqlError::new(
                    path_position,
                    "cannot tell the format from the file name; add format = 'json' or 'csv'",
                )
            })
        }
    }
}

fn simulator_config(options: &mut Options) -> SqlResult<SimulatorConfig> {
    let mut config = SimulatorConfig::default();
    if let Some(rooms) = options.count("rooms")? {
        config.rooms = rooms;
    }
    if let Some(zones) = options.count("zones_per_room")? {
        config.zones_per_room = zones;
    }
    if let Some(sensors) = options.count("sensors_per_zone")? {
        config.sensors_per_zone = sensors;
    }
    if config.sensor_count() == 0 {
        return Err(SqlError::new(
            options.statement,
            "the simulated facility has no sensors",
        ));
    }
    if let Some(seed) = options.parsed("seed", |text| {
        text.parse::<u64>()
            .map_err(|_| format!("expected a whole number, found {text:?}"))
    })? {
        config.seed = seed;
    }
    if let Some(interval) = options.duration("interval")? {
        if interval.is_zero() {
            return Err(SqlError::new(
                options.statement,
                "option `interval` must be positive",
            ));
        }
        config.interval_nanos = nanos(interval);
    }
    if let Some(speed) = options.parsed("speed", parse_speed)? {
        config.speed = speed;
    }
    config.start_nanos = options.parsed("start", parse_timestamp)?;
    config.duration_nanos = options.duration("duration")?.map(nanos);
    if let Some(faults) = options.parsed("faults", |text| {
        text.split(',')
            .filter(|name| !name.trim().is_empty())
            .map(|name| {
                FaultKind::parse(name).ok_or_else(|| {
                    format!("unknown fault {name:?}; faults are hvac_drift, stuck, spike, dropout")
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })? {
        config.faults = faults;
    }
    config.faults_path = options
        .take("faults_path")
        .map(|(path, _)| PathBuf::from(path));
    if let Some(disorder) = options.duration("disorder")? {
        config.disorder_nanos = nanos(disorder);
    }
    if let Some(fraction) =
        options.parsed("duplicates", |text| match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
            _ => Err(format!(
                "expected a fraction between 0 and 1, found {text:?}"
            )),
        })?
    {
        config.duplicate_fraction = fraction;
    }
    Ok(config)
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.as_str() {
        "realtime" | "real-time" | "1x" => Ok(Speed::Realtime),
        "max" | "fast" => Ok(Speed::Max),
        other => match other.trim_end_matches('x').parse::<f64>() {
            Ok(factor) if factor > 0.0 => Ok(Speed::Factor(factor)),
            _ => Err(format!(
                "expected 'realtime', 'max' or a factor such as '60x', found {text:?}"
            )),
        },
    }
}

/// `partition_by = 'date(ts), room'`: columns of the view, or the day of a timestamp column.
fn partition_keys(text: &str, position: Position, schema: &Schema) -> SqlResult<Vec<PartitionKey>> {
    let column = |name: &str| -> SqlResult<usize> {
        let name = name.trim().to_ascii_lowercase();
        schema.index_of(&name).map_err(|_| {
            SqlError::new(
                position,
                format!("option `partition_by`: the view has no column `{name}`"),
            )
        })
    };
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            match lower
                .strip_prefix("date(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                Some(inner) => {
                    let index = column(inner)?;
                    if !matches!(schema.field(index).data_type(), DataType::Timestamp(..)) {
                        return Err(SqlError::new(
                            position,
                            format!(
                                "option `partition_by`: date({inner}) needs a TIMESTAMP column"
                            ),
                        ));
                    }
                    Ok(PartitionKey::Date { index })
                }
                None => Ok(PartitionKey::Column {
                    name: lower.clone(),
                    index: column(&lower)?,
                }),
            }
        })
        .collect()
}

fn parquet_config(options: &mut Options, schema: &Schema) -> SqlResult<ParquetSinkConfig> {
    let (path, _) = options.required("path", "a parquet sink")?;
    let mut config = ParquetSinkConfig::new(PathBuf::from(path));
    if let Some((text, position)) = options.take("partition_by") {
        config.partition_by = partition_keys(&text, position, schema)?;
    }
    if let Some(compression) = options.parsed("compression", |text| {
        match text.trim().to_ascii_lowercase().as_str() {
            "zstd" => Ok(Compression::ZSTD(ZstdLevel::default())),
            "snappy" => Ok(Compression::SNAPPY),
            "none" | "uncompressed" => Ok(Compression::UNCOMPRESSED),
            _ => Err(format!(
                "expected 'zstd', 'snappy' or 'none', found {text:?}"
            )),
        }
    })? {
        config.compression = compression;
    }
    if let Some(interval) = options.duration("rollover")? {
        config.rollover_interval = interval;
    }
    if let Some(rows) = options.count("rollover_rows")? {
        config.rollover_rows = rows.max(1);
    }
    if let Some(bytes) = options.parsed("rollover_size", parse_size)? {
        config.rollover_bytes = bytes.max(1);
    }
    if let Some(rows) = options.count("row_group_rows")? {
        config.row_group_rows = rows.max(1);
    }
    Ok(config)
}

/// Parses `64MB`, `1 GB`, `512kb`, `1000` (bytes).
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale: usize = match unit.trim() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        _ => return Err(format!("expected a size such as '128MB', found {text:?}")),
    };
    number
        .parse::<usize>()
        .map(|n| n * scale)
        .map_err(|_| format!("expected a size such as '128MB', found {text:?}"))
}

/// The target of a `CREATE SINK` named `name` for a view of `schema`.
pub fn sink_target(options: &mut Options, name: &str, schema: &Schema) -> SqlResult<SinkTarget> {
    let (connector, position) = options.required("connector", "a sink")?;
    let target = match connector.to_ascii_lowercase().as_str() {
        "file" => {
            let (path, path_position) = options.required("path", "a file sink")?;
            let format = file_format(options, &path, path_position)?;
            SinkTarget::File {
                path: PathBuf::from(path),
                format,
            }
        }
        "stdout" => {
            if let Some((format, position)) = options.take("format")
                && FileFormat::parse(&format) != Some(FileFormat::Json)
            {
                return Err(SqlError::new(
                    position,
                    "the stdout sink writes JSON lines only",
                ));
            }
            SinkTarget::Stdout
        }
        "parquet" => SinkTarget::Parquet(parquet_config(options, schema)?),
        "mqtt" => SinkTarget::Mqtt(mqtt::sink(options, name, schema)?),
        "modbus" => SinkTarget::Modbus(modbus::sink(options, name, schema)?),
        "kafka" => SinkTarget::Kafka(kafka::sink(options, schema)?),
        "webhook" => SinkTarget::Webhook(webhook::sink(options, name)?),
        other => {
            return Err(SqlError::new(
                position,
                format!(
                    "unknown sink connector '{other}'; available: 'file', 'stdout', 'parquet', 'mqtt', 'kafka', 'modbus', 'webhook'"
                ),
            ));
        }
    };
    let known: &[&str] = match target {
        SinkTarget::File { .. } => &["connector", "path", "format"],
        SinkTarget::Stdout => &["connector", "format"],
        SinkTarget::Parquet(_) => &[
            "connector",
            "path",
            "partition_by",
            "compression",
            "rollover",
            "rollover_rows",
            "rollover_size",
            "row_group_rows",
        ],
        SinkTarget::Mqtt(_) => mqtt::SINK_OPTIONS,
        SinkTarget::Modbus(_) => modbus::SINK_OPTIONS,
        SinkTarget::Kafka(_) => kafka::SINK_OPTIONS,
        SinkTarget::Webhook(_) => webhook::SINK_OPTIONS,
    };
    let what = connector_kind(&connector, "sink");
    std::mem::replace(
        options,
        Options {
            entries: BTreeMap::new(),
            statement: Position::default(),
        },
    )
    .finish(&what, known)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_way_people_write_them() {
        assert_eq!(parse_duration("5 seconds").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1 minute").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size("128MB").unwrap(), 128 << 20);
        assert_eq!(parse_size("1 gb").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn speeds_accept_factors() {
        assert_eq!(parse_speed("60x").unwrap(), Speed::Factor(60.0));
        assert_eq!(parse_speed("max").unwrap(), Speed::Max);
        assert!(parse_speed("-1").is_err());
    }
}
