//! `WITH (…)` options of the Parquet sink: where, how partitioned, compressed, rolled over.

use std::path::PathBuf;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use vibelux_interfaces::options::{OptionError, Options, Position, parse_size};

use super::sink::{ParquetSinkConfig, PartitionKey};
use super::source::{ParquetFile, find_files};

/// Options of a Parquet source (with those every source takes).
pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

/// The files a source reads: a file, or every `.parquet` file below a folder.
pub fn source(options: &mut Options) -> Result<(PathBuf, Vec<ParquetFile>), OptionError> {
    let (path, position) = options.required("path", "a parquet source")?;
    let path = PathBuf::from(path);
    let files = find_files(&path).map_err(|error| {
        OptionError::new(
            position,
            format!("option `path`: {}: {error}", path.display()),
        )
    })?;
    if files.is_empty() {
        return Err(OptionError::new(
            position,
            format!("option `path`: no .parquet files in {}", path.display()),
        ));
    }
    Ok((path, files))
}

/// Options of a Parquet sink.
pub const SINK_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "partition_by",
    "compression",
    "rollover",
    "rollover_rows",
    "rollover_size",
    "row_group_rows",
];

/// `partition_by = 'date(ts), room'`: columns of the view, or the day of a timestamp column.
fn partition_keys(
    text: &str,
    position: Position,
    schema: &Schema,
) -> Result<Vec<PartitionKey>, OptionError> {
    let column = |name: &str| -> Result<usize, OptionError> {
        let name = name.trim().to_ascii_lowercase();
        schema.index_of(&name).map_err(|_| {
            OptionError::new(
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
                        return Err(OptionError::new(
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

pub fn sink(options: &mut Options, schema: &Schema) -> Result<ParquetSinkConfig, OptionError> {
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
