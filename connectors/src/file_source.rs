//! The `file` source: JSON lines or CSV, replayed (bounded) or followed (tail).
//!
//! Each worker reads the file and keeps every `peers`-th record, so decoding — the expensive part —
//! is spread across workers without coordinating offsets. A bounded replay ends at the end of the
//! file and is driven by event time alone, so an hour of readings replays in seconds with correct
//! windows. In tail mode the reader waits for appended lines and, while idle, lets the watermark
//! follow the clock.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::payload::RowLayout;
use crate::source::{Poll, Record, SourceReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
}

impl FileFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Some(FileFormat::Json),
            "csv" => Some(FileFormat::Csv),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    pub format: FileFormat,
    /// Keep reading lines appended after the end of the file.
    pub follow: bool,
}

/// How far a replay has got, for a progress bar: bytes read by worker 0, and the file size.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    pub bytes_read: AtomicU64,
    pub total_bytes: AtomicU64,
}

pub struct FileReader {
    config: FileSourceConfig,
    layout: RowLayout,
    lines: BufReader<File>,
    line: String,
    line_number: u64,
    worker: usize,
    peers: usize,
    csv_header: Option<Vec<Option<usize>>>,
    progress: Option<Arc<ReplayProgress>>,
    /// When a tailed file last grew: while it is being written, look again soon.
    last_growth: std::time::Instant,
}

impl FileReader {
    pub fn open(
        config: FileSourceConfig,
        layout: RowLayout,
        worker: usize,
        peers: usize,
        progress: Arc<ReplayProgress>,
    ) -> std::io::Result<Self> {
        let file = File::open(&config.path)?;
        if worker == 0 {
            progress
                .total_bytes
                .store(file.metadata()?.len(), Ordering::Relaxed);
        }
        Ok(FileReader {
            config,
            layout,
            lines: BufReader::with_capacity(1 << 20, file),
            line: String::new(),
            line_number: 0,
            worker,
            peers,
            csv_header: None,
            progress: (worker == 0).then_some(progress),
            last_growth: std::time::Instant::now(),
        })
    }

    fn origin(&self) -> String {
        format!("{}:{}", self.config.path.display(), self.line_number)
    }

    fn decode(&mut self, out: &mut Vec<Record>) {
        let text = self.line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return;
        }
        let decoded = match self.config.format {
            FileFormat::Json => self.layout.decode_json(text),
            FileFormat::Csv => match &self.csv_header {
                Some(header) => parse_csv_record(text)
                    .and_then(|record| self.layout.decode_csv(header, &record)),
                None => unreachable!("the CSV header is read before records"),
            },
        };
        out.push(match decoded {
            Ok((row, event_time)) => Record::Row {
                row,
                event_time,
                partition: 0,
            },
            Err(reason) => Record::Invalid {
                reason,
                raw: text.to_string(),
                origin: self.origin(),
            },
        });
    }

    fn read_header(&mut self, out: &mut Vec<Record>) {
        let text = self.line.trim_end_matches(['\n', '\r']).to_string();
        match parse_csv_record(&text) {
            Ok(names) => {
                let header: Vec<Option<usize>> = names
                    .iter()
                    .map(|name| self.layout.column_index(name.trim()))
                    .collect();
                self.csv_header = Some(header);
            }
            Err(reason) => {
                if self.worker == 0 {
                    out.push(Record::Invalid {
                        reason: format!("unreadable CSV header: {reason}"),
                        raw: text,
                        origin: self.origin(),
                    });
                }
                self.csv_header = Some(Vec::new());
            }
        }
    }
}

fn parse_csv_record(text: &str) -> Result<csv::StringRecord, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record),
        Ok(false) => Err("empty record".into()),
        Err(error) => Err(error.to_string()),
    }
}

impl SourceReader for FileReader {
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        let mut bytes = 0u64;
        let mut poll = Poll::Ready;
        let limit = out.len() + max_records;
        while out.len() < limit {
            // Another worker's line in a replay: skip it without copying or validating it.
            let header_pending = self.config.format == FileFormat::Csv && self.csv_header.is_none();
            let ours = (self.line_number as usize + 1) % self.peers == self.worker % self.peers;
            if !ours && !header_pending && !self.config.follow && self.line.is_empty() {
                match self.lines.skip_until(b'\n') {
                    Ok(0) => {
                        poll = Poll::Finished;
                        break;
                    }
                    Ok(skipped) => {
                        bytes += skipped as u64;
                        self.line_number += 1;
                        continue;
                    }
                    Err(error) => {
                        out.push(Record::Invalid {
                            reason: format!("read error: {error}"),
                            raw: String::new(),
                            origin: self.origin(),
                        });
                        poll = Poll::Finished;
                        break;
                    }
                }
            }
            match self.lines.read_line(&mut self.line) {
                Ok(0) => {
                    if self.config.follow {
                        // A file being written is checked every millisecond (a read that finds
                        // nothing is cheap); one that has been quiet for a second, every 50 ms.
                        let quiet = self.last_growth.elapsed() >= Duration::from_secs(1);
                        poll = Poll::Idle(Duration::from_millis(if quiet { 50 } else { 1 }));
                        break;
                    }
                    if self.line.is_empty() {
                        poll = Poll::Finished;
                        break;
                    }
                    // A last line without a newline still counts in a replay.
                    self.line.push('\n');
                }
                Ok(read) => {
                    bytes += read as u64;
                    if self.config.follow {
                        self.last_growth = std::time::Instant::now();
                    }
                }
                Err(error) => {
                    out.push(Record::Invalid {
                        reason: format!("read error: {error}"),
                        raw: String::new(),
                        origin: self.origin(),
                    });
                    self.line.clear();
                    poll = Poll::Finished;
                    break;
                }
            }
            if !self.line.ends_with('\n') {
                // A partial line still being appended to: wait for the rest of it.
                continue;
            }
            self.line_number += 1;
            if self.config.format == FileFormat::Csv && self.csv_header.is_none() {
                self.read_header(out);
            } else if (self.line_number as usize) % self.peers == self.worker % self.peers {
                self.decode(out);
            }
            self.line.clear();
        }
        if let Some(progress) = &self.progress {
            progress.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        }
        poll
    }

    fn processing_time(&self) -> Option<i64> {
        self.config
            .follow
            .then(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::io::Write;

    fn layout() -> RowLayout {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ]);
        RowLayout::new(Arc::new(schema), Some(1))
    }

    fn read_all(path: PathBuf, format: FileFormat, worker: usize, peers: usize) -> Vec<Record> {
        let config = FileSourceConfig {
            path,
            format,
            follow: false,
        };
        let mut reader = FileReader::open(config, layout(), worker, peers, Arc::default()).unwrap();
        let mut out = Vec::new();
        while reader.poll(&mut out, 2) != Poll::Finished {}
        out
    }

    #[test]
    fn workers_split_the_records_and_keep_bad_lines_with_their_line_number() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            "{{\"id\":\"a\",\"ts\":\"2026-06-01T00:00:00Z\"}}\nnot json\n\n{{\"id\":\"c\",\"ts\":\"2026-06-01T00:00:01Z\"}}"
        )
        .unwrap();
        let path = file.path().to_path_buf();
        let all = read_all(path.clone(), FileFormat::Json, 0, 1);
        assert_eq!(all.len(), 3);
        match &all[1] {
            Record::Invalid { raw, origin, .. } => {
                assert_eq!(raw, "not json");
                assert!(origin.ends_with(":2"), "{origin}");
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
        let first = read_all(path.clone(), FileFormat::Json, 0, 2).len();
        let second = read_all(path, FileFormat::Json, 1, 2).len();
        assert_eq!(first + second, 3);
    }

    #[test]
    fn csv_columns_are_matched_by_header_name() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "ts,unused,id\n2026-06-01 00:00:00,x,s1\n").unwrap();
        let records = read_all(file.path().to_path_buf(), FileFormat::Csv, 0, 1);
        match &records[..] {
            [Record::Row { row, .. }] => {
                assert_eq!(row[0], vibelux_operators::row::Datum::Utf8("s1".into()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
