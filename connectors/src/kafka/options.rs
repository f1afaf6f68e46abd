//! `WITH (…)` options of Kafka sources and sinks.

use crate::kafka::sink::KafkaSinkConfig;
use crate::kafka::source::{KafkaSourceConfig, MetadataField, StartFrom};
use crate::payload::RowLayout;
use crate::template::RowTemplate;
use datafusion::arrow::datatypes::{DataType, Schema};

use crate::message_options::message_format;
use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::Options;

pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "brokers",
    "topic",
    "group_id",
    "start_offset",
    "format",
    "json_paths",
    "value_column",
    "include",
    "properties.*",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

pub const SINK_OPTIONS: &[&str] = &[
    "connector",
    "brokers",
    "topic",
    "key",
    "audit",
    "properties.*",
];

/// `properties.<librdkafka setting> = '…'`, passed to the client as they are.
fn properties(options: &mut Options) -> Vec<(String, String)> {
    options.take_prefixed("properties.")
}

fn brokers(options: &mut Options, what: &str) -> Result<String, OptionError> {
    let (brokers, position) = options.required("brokers", what)?;
    if brokers.trim().is_empty() || brokers.contains("://") {
        return Err(OptionError::new(
            position,
            format!("option `brokers`: expected host:port[,host:port…], found {brokers:?}"),
        ));
    }
    Ok(brokers)
}

/// A Kafka source `name` with rows laid out as `layout`.
pub fn source(
    options: &mut Options,
    name: &str,
    layout: &RowLayout,
) -> Result<KafkaSourceConfig, OptionError> {
    let what = "a 'kafka' source";
    let brokers = brokers(options, what)?;
    let (topics, _) = options.required("topic", what)?;
    let topics: Vec<String> = topics
        .split(',')
        .map(|topic| topic.trim().to_string())
        .filter(|topic| !topic.is_empty())
        .collect();
    let group_id = options
        .take("group_id")
        .map_or_else(|| format!("vibelux-{name}"), |(id, _)| id);
    // A table is its topics' whole content: it reads them from their beginning.
    let table = layout.event_time_column.is_none();
    let start_from = match options.take("start_offset") {
        Some((_, position)) if table => {
            return Err(OptionError::new(
                position,
                "option `start_offset` is for sources: a table reads its topics from their \
                 beginning (or from its checkpoint)",
            ));
        }
        None => StartFrom::Earliest,
        Some((text, position)) => match text.to_ascii_lowercase().as_str() {
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            _ => {
                return Err(OptionError::new(
                    position,
                    format!(
                        "option `start_offset`: expected 'earliest' or 'latest', found {text:?}"
                    ),
                ));
            }
        },
    };
    let metadata = match options.take("include") {
        None => Vec::new(),
        Some((text, position)) => include(&text, &layout.schema).map_err(|problem| {
            OptionError::new(position, format!("option `include`: {problem}"))
        })?,
    };
    let filled: Vec<usize> = metadata.iter().map(|(_, column)| *column).collect();
    let format = message_format(options, layout, &filled)?;
    let properties = properties(options);
    Ok(KafkaSourceConfig {
        brokers,
        topics,
        group_id,
        start_from,
        format,
        metadata,
        properties,
        table,
    })
}

/// Parses `partition AS part, offset AS off, key` (without `AS`, the column has the field's
/// name).
fn include(text: &str, schema: &Schema) -> Result<Vec<(MetadataField, usize)>, String> {
    let mut fields = Vec::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let (field_name, column_name) = match words.as_slice() {
            [field] => (*field, *field),
            [field, as_word, column] if as_word.eq_ignore_ascii_case("as") => (*field, *column),
            _ => return Err(format!("expected `field [AS column]`, found {entry:?}")),
        };
        let field = MetadataField::parse(field_name).ok_or_else(|| {
            format!(
                "unknown metadata {field_name:?}; available: key, topic, partition, offset, timestamp, headers"
            )
        })?;
        let column = schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(column_name))
            .ok_or_else(|| format!("no column `{column_name}` to hold the {field_name}"))?;
        let fits = matches!(
            (field.sql_type(), schema.field(column).data_type()),
            ("TEXT", DataType::Utf8)
                | ("BIGINT", DataType::Int64)
                | ("TIMESTAMP", DataType::Timestamp(..))
        );
        if !fits {
            return Err(format!(
                "column `{column_name}` holds the {field_name}, so it must be {}",
                field.sql_type()
            ));
        }
        fields.push((field, column));
    }
    Ok(fields)
}

/// A Kafka sink for a view of `schema`.
pub fn sink(options: &mut Options, schema: &Schema) -> Result<KafkaSinkConfig, OptionError> {
    let what = "a 'kafka' sink";
    let brokers = brokers(options, what)?;
    let (topic, _) = options.required("topic", what)?;
    let key = match options.take("key") {
        None => None,
        Some((text, position)) => {
            Some(RowTemplate::parse(&text, schema).map_err(|problem| {
                OptionError::new(position, format!("option `key`: {problem}"))
            })?)
        }
    };
    let properties = properties(options);
    let audit = options
        .take("audit")
        .map(|(path, _)| std::path::PathBuf::from(path));
    Ok(KafkaSinkConfig {
        brokers,
        topic,
        key,
        properties,
        audit,
    })
}
