//! The `file` and `stdout` sinks: rows as JSON lines or CSV.
//!
//! A sink receives either final rows (append-only views: each window once, when it closes) or a
//! changelog (views whose rows update), in which case every line carries an `_op` column,
//! `insert` or `delete`, so a consumer can replay it. Timestamps are written as ISO 8601 with
//! milliseconds, as sources read them.
//!
//! Lines are encoded into a buffer the writer owns and written out at each flush. A write that
//! fails part-way (a full disk) leaves the rest in the buffer, so the next flush carries on from
//! the exact byte where it stopped: no line is lost, torn or written twice.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::checkpoint::{decode, encode};
use vibelux_interfaces::row::{Datum, Row};
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use crate::file::source::FileFormat;
use crate::json_row::encode_json_row;

/// Writes rows of one schema to a target.
pub struct RowWriter {
    schema: SchemaRef,
    format: FileFormat,
    changelog: bool,
    out: Box<dyn Write + Send>,
    target_name: String,
    wrote_header: bool,
    /// Encoded lines not yet written out.
    unwritten: Vec<u8>,
    /// Rows whose lines are (in part) in `unwritten`.
    unwritten_rows: u64,
    /// Rows written out since [`RowWriter::take_delivered`] last asked.
    delivered: u64,
    /// The file written, for syncing at a checkpoint (`None` for standard output).
    file: Option<File>,
    /// Bytes in the file, including what was written out since it was opened.
    length: u64,
}

/// Opens (creating) a file to write and locks it for the writer's life: a second engine (or a
/// second sink) writing the same file is refused instead of interleaving with or wiping the
/// first.
fn open_locked(path: &Path) -> Result<File, SinkError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| io_error(path, source))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io_error(
            path,
            std::io::Error::other(
                "another process or sink is writing this file; stop it, or write elsewhere",
            ),
        )),
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(path, error)),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl RowWriter {
    /// Rows as JSON lines on standard output.
    pub fn stdout(schema: SchemaRef, changelog: bool) -> Self {
        let out: Box<dyn Write + Send> = Box::new(std::io::stdout());
        RowWriter::new(
            schema,
            FileFormat::Json,
            changelog,
            out,
            "stdout".to_string(),
        )
    }

    /// Rows into a file (created, or truncated), in `format`.
    pub fn file(
        path: &Path,
        format: FileFormat,
        schema: SchemaRef,
        changelog: bool,
    ) -> Result<Self, SinkError> {
        let file = open_locked(path)?;
        file.set_len(0).map_err(|source| io_error(path, source))?;
        Ok(RowWriter::into_file(
            path, file, 0, format, schema, changelog,
        ))
    }

    /// Rows appended to a file that a checkpointed run writes: cut back to the length `part`
    /// recorded (what was written after that checkpoint is written again), or kept whole when
    /// the run has no checkpoint yet. Never emptied.
    pub fn file_resuming(
        path: &Path,
        format: FileFormat,
        schema: SchemaRef,
        changelog: bool,
        part: Option<&[u8]>,
    ) -> Result<Self, SinkError> {
        let mut file = open_locked(path)?;
        let length = file
            .metadata()
            .map_err(|source| io_error(path, source))?
            .len();
        let length = match part {
            Some(part) => {
                let checkpointed: u64 = decode("file length", part)
                    .map_err(|reason| io_error(path, std::io::Error::other(reason)))?;
                if checkpointed > length {
                    return Err(io_error(
                        path,
                        std::io::Error::other(format!(
                            "the file is shorter ({length} bytes) than the checkpoint recorded \
                             ({checkpointed} bytes): it was changed outside the engine"
                        )),
                    ));
                }
                if checkpointed < length {
                    tracing::info!(
                        path = %path.display(),
                        "cutting the file back to {checkpointed} bytes, where the checkpoint left it ({} bytes written after it are written again)",
                        length - checkpointed
                    );
                }
                file.set_len(checkpointed)
                    .and_then(|()| file.sync_data())
                    .map_err(|source| io_error(path, source))?;
                checkpointed
            }
            None => length,
        };
        file.seek(SeekFrom::Start(length))
            .map_err(|source| io_error(path, source))?;
        let mut writer = RowWriter::into_file(path, file, length, format, schema, changelog);
        // A CSV file that has lines has its header.
        writer.wrote_header = length > 0;
        Ok(writer)
    }

    fn into_file(
        path: &Path,
        file: File,
        length: u64,
        format: FileFormat,
        schema: SchemaRef,
        changelog: bool,
    ) -> Self {
        let synced = file.try_clone().ok();
        let out: Box<dyn Write + Send> = Box::new(file);
        let mut writer = RowWriter::new(schema, format, changelog, out, path.display().to_string());
        writer.file = synced;
        writer.length = length;
        writer
    }

    fn new(
        schema: SchemaRef,
        format: FileFormat,
        changelog: bool,
        out: Box<dyn Write + Send>,
        target_name: String,
    ) -> Self {
        RowWriter {
            schema,
            format,
            changelog,
            out,
            target_name,
            wrote_header: false,
            unwritten: Vec::with_capacity(1 << 16),
            unwritten_rows: 0,
            delivered: 0,
            file: None,
            length: 0,
        }
    }

    /// Rows written out since the last call.
    pub fn take_delivered(&mut self) -> u64 {
        std::mem::take(&mut self.delivered)
    }

    /// Rows accepted and not yet written out.
    pub fn held_rows(&self) -> u64 {
        self.unwritten_rows
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.target_name)
    }

    fn io_error(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.target_name.clone(),
            source,
        }
    }

    /// Takes one row (written out at the next flush); `insert` is false for a retraction in a
    /// changelog.
    pub fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        let mut line = String::with_capacity(128);
        match self.format {
            FileFormat::Json => self.encode_json(row, insert, &mut line),
            FileFormat::DebeziumJson => unreachable!("the sink's options refuse debezium-json"),
            FileFormat::Csv => {
                if !self.wrote_header {
                    self.wrote_header = true;
                    let mut header: Vec<&str> = self
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    if self.changelog {
                        header.insert(0, "_op");
                    }
                    line.push_str(&header.join(","));
                    line.push('\n');
                }
                self.encode_csv(row, insert, &mut line)
            }
        }
        line.push('\n');
        self.unwritten.extend_from_slice(line.as_bytes());
        self.unwritten_rows += 1;
        Ok(())
    }

    /// Writes out what was taken; on failure keeps what was not written, for the next flush.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        let mut written = 0;
        let result = loop {
            if written == self.unwritten.len() {
                break self.out.flush();
            }
            match self.out.write(&self.unwritten[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(count) => {
                    written += count;
                    self.length += count as u64;
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => break Err(error),
            }
        };
        self.unwritten.drain(..written);
        if self.unwritten.is_empty() {
            self.delivered += std::mem::take(&mut self.unwritten_rows);
        }
        result.map_err(|e| self.io_error(e))
    }

    fn encode_json(&self, row: &Row, insert: bool, line: &mut String) {
        let op = self.changelog.then_some(insert);
        encode_json_row(&self.schema, row, op, line);
    }

    fn encode_csv(&self, row: &Row, insert: bool, line: &mut String) {
        let mut cells: Vec<String> = Vec::with_capacity(row.len() + 1);
        if self.changelog {
            cells.push(if insert { "insert" } else { "delete" }.to_string());
        }
        for datum in row {
            cells.push(match datum {
                Datum::Null => String::new(),
                Datum::Utf8(v) if v.contains([',', '"', '\n']) => {
                    format!("\"{}\"", v.replace('"', "\"\""))
                }
                other => other.to_string(),
            });
        }
        line.push_str(&cells.join(","));
    }
}

impl SinkWriter for RowWriter {
    fn describe(&self) -> String {
        self.target_name.clone()
    }

    fn write(&mut self, row: &Row, insert: bool) -> Result<(), SinkError> {
        RowWriter::write(self, row, insert)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        RowWriter::flush(self)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        RowWriter::flush(self)
    }

    fn delivers_on_write(&self) -> bool {
        false
    }

    fn take_delivered(&mut self) -> u64 {
        RowWriter::take_delivered(self)
    }

    fn held_rows(&self) -> u64 {
        RowWriter::held_rows(self)
    }

    /// Every line taken is written and synced; the part is the file's length, where a restart
    /// cuts it back to. Standard output is only flushed: what a restart repeats is printed
    /// again (at least once).
    fn checkpoint(&mut self, _cut: u64) -> Result<Vec<u8>, SinkError> {
        RowWriter::flush(self)?;
        if let Some(file) = &self.file {
            file.sync_data().map_err(|e| self.io_error(e))?;
        }
        Ok(encode(&self.length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("zone", DataType::Utf8, true),
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("temp_avg", DataType::Float64, true),
        ]))
    }

    #[test]
    fn json_lines_carry_names_iso_times_and_an_op_for_changelogs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/zone.jsonl");
        let mut writer = RowWriter::file(&path, FileFormat::Json, schema(), true).unwrap();
        let row = vec![
            Datum::Utf8("z\"1".into()),
            Datum::Timestamp(60_000_000_000),
            Datum::Float64(21.5),
        ];
        writer.write(&row, false).unwrap();
        writer.flush().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "{\"_op\":\"delete\",\"zone\":\"z\\\"1\",\"window_start\":\"1970-01-01T00:01:00.000\",\"temp_avg\":21.5}\n"
        );
    }

    /// A disk with `room` bytes left, which a test can enlarge.
    struct SmallDisk {
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        room: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for SmallDisk {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(std::sync::atomic::Ordering::Relaxed);
            if room == 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let taken = bytes.len().min(room);
            self.room
                .fetch_sub(taken, std::sync::atomic::Ordering::Relaxed);
            self.written
                .lock()
                .unwrap()
                .extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flush_that_fails_part_way_keeps_the_rest_and_the_next_one_carries_on() {
        let written = std::sync::Arc::default();
        let room = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(50));
        let disk = SmallDisk {
            written: std::sync::Arc::clone(&written),
            room: room.clone(),
        };
        let mut writer = RowWriter::new(
            schema(),
            FileFormat::Json,
            false,
            Box::new(disk),
            "small".into(),
        );
        for zone in ["z1", "z2", "z3"] {
            let row = vec![Datum::Utf8(zone.into()), Datum::Null, Datum::Float64(1.5)];
            writer.write(&row, true).unwrap();
        }
        let error = writer.flush().unwrap_err().to_string();
        assert!(error.contains("No space left on device"), "{error}");
        assert_eq!((writer.held_rows(), writer.take_delivered()), (3, 0));
        room.store(1 << 20, std::sync::atomic::Ordering::Relaxed);
        writer.flush().unwrap();
        assert_eq!((writer.held_rows(), writer.take_delivered()), (0, 3));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let line = |zone: &str| {
            format!("{{\"zone\":\"{zone}\",\"window_start\":null,\"temp_avg\":1.5}}\n")
        };
        assert_eq!(text, [line("z1"), line("z2"), line("z3")].concat());
    }

    #[test]
    fn csv_has_a_header_and_quotes_awkward_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone.csv");
        let mut writer = RowWriter::file(&path, FileFormat::Csv, schema(), false).unwrap();
        writer
            .write(
                &vec![Datum::Utf8("a,b".into()), Datum::Null, Datum::Float64(1.0)],
                true,
            )
            .unwrap();
        writer.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "zone,window_start,temp_avg\n\"a,b\",,1\n"
        );
    }
}
