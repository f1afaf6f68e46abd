//! `WITH (…)` options of files: the path, the format, replay or tail.

use std::path::PathBuf;

use vibelux_interfaces::options::{OptionError, Options, Position};

use super::source::{FileFormat, FileSourceConfig};

/// Options of a file source (with those every source takes).
pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "mode",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

/// Options of a file sink.
pub const SINK_OPTIONS: &[&str] = &["connector", "path", "format"];

/// Options of the stdout sink.
pub const STDOUT_OPTIONS: &[&str] = &["connector", "format"];

/// The file a source or table reads, and how.
pub fn source(options: &mut Options) -> Result<FileSourceConfig, OptionError> {
    let (path, path_position) = options.required("path", "a file source")?;
    let format = format(options, &path, path_position)?;
    let follow = match options.take("mode") {
        None => false,
        Some((mode, position)) => match mode.to_ascii_lowercase().as_str() {
            "replay" | "bounded" => false,
            "tail" | "follow" => true,
            _ => {
                return Err(OptionError::new(
                    position,
                    format!("option `mode`: expected 'replay' or 'tail', found {mode:?}"),
                ));
            }
        },
    };
    let config = FileSourceConfig {
        path: PathBuf::from(path),
        format,
        follow,
    };
    if !config.follow && !config.path.exists() {
        return Err(options.error(format!("file {} does not exist", config.path.display())));
    }
    Ok(config)
}

/// The file a sink writes, and its format.
pub fn sink(options: &mut Options) -> Result<(PathBuf, FileFormat), OptionError> {
    let (path, path_position) = options.required("path", "a file sink")?;
    let format = format(options, &path, path_position)?;
    if format == FileFormat::DebeziumJson {
        return Err(options.error(
            "format = 'debezium-json' is read by tables, not written: a sink writes 'json' or \
             'csv' (a view's changes carry an `_op` field)",
        ));
    }
    Ok((PathBuf::from(path), format))
}

/// The stdout sink writes JSON lines only.
pub fn stdout(options: &mut Options) -> Result<(), OptionError> {
    if let Some((format, position)) = options.take("format")
        && FileFormat::parse(&format) != Some(FileFormat::Json)
    {
        return Err(OptionError::new(
            position,
            "the stdout sink writes JSON lines only",
        ));
    }
    Ok(())
}

fn format(
    options: &mut Options,
    path: &str,
    path_position: Position,
) -> Result<FileFormat, OptionError> {
    match options.take("format") {
        Some((format, position)) => FileFormat::parse(&format).ok_or_else(|| {
            OptionError::new(
                position,
                format!(
                    "option `format`: expected 'json', 'csv' or 'debezium-json', found {format:?}"
                ),
            )
        }),
        None => {
            let extension = path.rsplit('.').next().unwrap_or_default();
            FileFormat::parse(extension).ok_or_else(|| {
                OptionError::new(
                    path_position,
                    "cannot tell the format from the file name; add format = 'json' or 'csv'",
                )
            })
        }
    }
}
