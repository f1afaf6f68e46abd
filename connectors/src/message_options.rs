//! How message bodies (MQTT, Kafka) are read: `format`, `json_paths`, `value_column`.

use crate::payload::{JsonPath, MessageFormat, RowLayout};
use datafusion::arrow::datatypes::Schema;

use vibelux_interfaces::metadata::is_changelog_op;
use vibelux_interfaces::options::Options;
use vibelux_interfaces::options::{OptionError, Position};

/// The body format; `filled_elsewhere` are columns the connector fills itself (topic levels,
/// metadata), which a raw body does not.
pub fn message_format(
    options: &mut Options,
    layout: &RowLayout,
    filled_elsewhere: &[usize],
) -> Result<MessageFormat, OptionError> {
    let schema = &layout.schema;
    let raw = match options.take("format") {
        None => false,
        Some((format, position)) => match format.to_ascii_lowercase().as_str() {
            "json" => false,
            "raw" => true,
            "debezium-json" => return debezium(options, layout, position),
            _ => {
                return Err(OptionError::new(
                    position,
                    format!(
                        "option `format`: expected 'json', 'raw' or 'debezium-json', found \
                         {format:?}"
                    ),
                ));
            }
        },
    };
    if raw {
        if let Some((_, position)) = options.take("json_paths") {
            return Err(OptionError::new(
                position,
                "option `json_paths` is for format = 'json'",
            ));
        }
        let column = value_column(options, schema, filled_elsewhere, layout.event_time_column)?;
        Ok(MessageFormat::Raw { column })
    } else {
        if let Some((_, position)) = options.take("value_column") {
            return Err(OptionError::new(
                position,
                "option `value_column` is for format = 'raw'",
            ));
        }
        let paths = match options.take("json_paths") {
            None => Vec::new(),
            Some((text, position)) => json_paths(&text, schema).map_err(|problem| {
                OptionError::new(position, format!("option `json_paths`: {problem}"))
            })?,
        };
        Ok(MessageFormat::Json { paths })
    }
}

/// Debezium change events: for tables only, whose columns are the events' fields.
fn debezium(
    options: &mut Options,
    layout: &RowLayout,
    position: Position,
) -> Result<MessageFormat, OptionError> {
    if layout.event_time_column.is_some() {
        return Err(OptionError::new(position, DELETIONS_ARE_FOR_TABLES));
    }
    for option in ["json_paths", "value_column"] {
        if let Some((_, position)) = options.take(option) {
            return Err(OptionError::new(
                position,
                format!("option `{option}` is not for format = 'debezium-json'"),
            ));
        }
    }
    Ok(MessageFormat::DebeziumJson)
}

/// Why a source (not a table) cannot read a format with deletions.
pub const DELETIONS_ARE_FOR_TABLES: &str = "format = 'debezium-json' carries deletions, which \
     only a table reads: declare it with CREATE TABLE … PRIMARY KEY (…)";

/// The column a raw payload fills: `value_column`, or the one column nothing else fills.
fn value_column(
    options: &mut Options,
    schema: &Schema,
    filled_elsewhere: &[usize],
    event_time: Option<usize>,
) -> Result<usize, OptionError> {
    if let Some((name, position)) = options.take("value_column") {
        return schema
            .fields()
            .iter()
            .position(|field| field.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                OptionError::new(
                    position,
                    format!("option `value_column`: no column `{name}`"),
                )
            });
    }
    let free: Vec<usize> = (0..schema.fields().len())
        .filter(|&column| {
            Some(column) != event_time
                && !filled_elsewhere.contains(&column)
                && !is_changelog_op(schema.field(column))
        })
        .collect();
    match free.as_slice() {
        [column] => Ok(*column),
        _ => Err(OptionError::new(
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
