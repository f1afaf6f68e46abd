//! The `file` source: JSON lines or CSV, replayed (bounded) or followed (tail).
//!
//! A replay is shared out between the workers by stripes of bytes (`stripes.rs`): each worker
//! reads and decodes only the lines that start in its own stripes. It ends at the end of the
//! file and is driven by event time alone, so an hour of readings replays in seconds with
//! correct windows. A followed file is read once, by the first worker: appended lines come a
//! few at a time, in order; the rows it decodes are routed to the other workers by key like any
//! source's. In tail mode the reader waits for appended lines and, while idle, lets the
//! watermark follow the clock.
//!
//! Lines are read as bytes: a line that is not UTF-8 (a gateway garbled a byte) is one dead letter,
//! never the end of the file. A read error is never taken for the end of the input either: a
//! replay fails with it, a followed file is retried with backoff.
//!
//! A followed file is followed by its path, not its inode, as `tail -F` does. When the path names
//! another file (logrotate moved the old one away, an editor or `sed -i` saved by renaming a new
//! file over it), the reader finishes the old file and reads the new one from its start; when
//! the file shrinks below what was read (copytruncate), it reads it again from its start. Either
//! way it says so with [`Record::Replaced`], which a table takes as "the whole content follows".

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::follow::{FileIdentity, PathState};
use super::lines::LineCounter;
use super::stripes::{Generation, Next, Stripes, stripe_size};
use crate::bytes_text;
use crate::payload::{Change, RowLayout};
use crate::source::{Poll, Record, ReplayProgress, SourceReader};

/// The first wait after a followed file cannot be read; it doubles up to [`LONGEST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// Where a replay's reader is, for the line at its offset.
enum Share {
    /// This worker reads it.
    Read,
    /// Not this worker's, or read already: the reader moved on; look again.
    Moved,
    /// No line of this worker's is left.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
    /// A Debezium change event per line, for tables.
    DebeziumJson,
}

impl FileFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Some(FileFormat::Json),
            "csv" => Some(FileFormat::Csv),
            "debezium-json" => Some(FileFormat::DebeziumJson),
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

/// Where a reader is: the file (device and inode), the byte offset of its next line (the first
/// not yet complete, when following), the number of lines before it when the reader has read
/// them all, and in a replay its stripes' size and the earlier runs' offsets it still heeds.
/// Enough to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    pub device: u64,
    pub inode: u64,
    pub offset: u64,
    pub line_number: Option<u64>,
    /// The stripe size of a replay (0 when following).
    pub stripe: u64,
    pub earlier: Vec<Generation>,
}

pub struct FileReader {
    pub(super) config: FileSourceConfig,
    layout: RowLayout,
    pub(super) input: BufReader<File>,
    pub(super) identity: FileIdentity,
    /// Bytes of the current file consumed, including a partial line held in `line`.
    pub(super) offset: u64,
    pub(super) line: Vec<u8>,
    /// Lines before the current one, when this reader has read every one of them (a followed
    /// file, or a replay by one worker); otherwise `line_counter` counts them for dead letters.
    pub(super) line_number: Option<u64>,
    line_counter: LineCounter,
    worker: usize,
    /// A replay's share of the file; `None` when following (the first worker reads it all).
    pub(super) stripes: Option<Stripes>,
    pub(super) csv_header: Option<Vec<Option<usize>>>,
    pub(super) progress: Option<Arc<ReplayProgress>>,
    /// When a tailed file last grew: while it is being written, look again soon.
    last_growth: Instant,
    /// How long to wait before the next attempt while a followed file cannot be read.
    retry_after: Duration,
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
        let metadata = file.metadata()?;
        if worker == 0 {
            progress
                .total_bytes
                .store(metadata.len(), Ordering::Relaxed);
        }
        let stripes = (!config.follow).then(|| Stripes {
            size: stripe_size(metadata.len(), peers),
            worker,
            peers,
            earlier: Vec::new(),
        });
        // A replay seeks from stripe to stripe: a smaller buffer reads less of others' stripes.
        let buffer = if config.follow { 1 << 20 } else { 256 << 10 };
        Ok(FileReader {
            line_number: (config.follow || peers == 1).then_some(0),
            progress: (worker == 0 || !config.follow).then_some(progress),
            config,
            layout,
            input: BufReader::with_capacity(buffer, file),
            identity: FileIdentity::of(&metadata),
            offset: 0,
            line: Vec::new(),
            line_counter: LineCounter::new(),
            worker,
            stripes,
            csv_header: None,
            last_growth: Instant::now(),
            retry_after: FIRST_RETRY,
        })
    }

    /// Where the reader is, for a checkpoint.
    pub fn position(&self) -> FilePosition {
        FilePosition {
            device: self.identity.device,
            inode: self.identity.inode,
            offset: self.offset - self.line.len() as u64,
            line_number: self.line_number,
            stripe: self.stripes.as_ref().map_or(0, |stripes| stripes.size),
            earlier: self
                .stripes
                .as_ref()
                .map_or_else(Vec::new, |stripes| stripes.earlier.clone()),
        }
    }

    /// Where the current line is: `path:line`, whether or not this reader read the lines
    /// before it (`lines.rs` counts them when it did not).
    fn origin(&mut self) -> String {
        let path = self.config.path.display();
        let start = self.offset - self.line.len() as u64;
        let number = match self.line_number {
            Some(number) => Ok(number),
            None => self.line_counter.line_at(&self.config.path, start),
        };
        match number {
            Ok(number) => format!("{path}:{number}"),
            Err(error) => {
                tracing::debug!(%error, "counting the lines of {path}");
                format!("{path} at byte {start}")
            }
        }
    }

    /// The line without its line ending.
    fn line_bytes(&self) -> &[u8] {
        let mut bytes = &self.line[..];
        while let [rest @ .., b'\n' | b'\r'] = bytes {
            bytes = rest;
        }
        bytes
    }

    /// The line as text, or why not (naming the bytes that are not UTF-8) and the line with
    /// those bytes escaped.
    fn line_text(&self) -> Result<&str, (String, String)> {
        let bytes = self.line_bytes();
        bytes_text::utf8(bytes).map_err(|problem| {
            let line_start = self.offset - self.line.len() as u64;
            let reason = format!(
                "not UTF-8: {problem} of the line (byte {} of the file)",
                line_start + problem.at as u64
            );
            (reason, bytes_text::escaped(bytes))
        })
    }

    /// Takes the complete line in `line`: the CSV header, or a record.
    pub(super) fn consume_line(&mut self, out: &mut Vec<Record>) {
        if let Some(number) = &mut self.line_number {
            *number += 1;
        }
        if self.config.format == FileFormat::Csv && self.csv_header.is_none() {
            self.read_header(out);
        } else {
            self.decode(out);
        }
        self.line.clear();
        if let Some(stripes) = &mut self.stripes
            && !stripes.earlier.is_empty()
        {
            stripes.passed(self.offset);
        }
    }

    /// At a line start in a replay: whether the line is this worker's to read, or else moves
    /// towards the next one that is.
    fn at_own_line(&mut self) -> std::io::Result<Share> {
        let Some(stripes) = &self.stripes else {
            return Ok(Share::Read);
        };
        match stripes.next(self.offset) {
            Next::Read => return Ok(Share::Read),
            Next::SkipTo(offset) => {
                self.move_to(offset)?;
            }
            Next::SeekLine(at) => {
                // The first line starting at or after `at`: the one after the first line
                // ending at or after `at - 1`.
                let from = self.offset;
                self.move_to(at - 1)?;
                let skipped = self.input.skip_until(b'\n')?;
                if skipped == 0 {
                    // The end of the file: the position stays where the last line ended.
                    self.offset = from;
                    return Ok(Share::End);
                }
                self.offset += skipped as u64;
            }
        }
        if let Some(stripes) = &mut self.stripes
            && !stripes.earlier.is_empty()
        {
            stripes.passed(self.offset);
        }
        Ok(Share::Moved)
    }

    /// Moves the reader to `offset`, within its buffer when it can.
    fn move_to(&mut self, offset: u64) -> std::io::Result<()> {
        let distance = offset as i64 - self.offset as i64;
        self.input.seek_relative(distance)?;
        self.offset = offset;
        Ok(())
    }

    fn decode(&mut self, out: &mut Vec<Record>) {
        let text = match self.line_text() {
            Ok(text) => text,
            Err((reason, raw)) => {
                out.push(Record::Invalid {
                    reason,
                    raw,
                    origin: self.origin(),
                });
                return;
            }
        };
        if text.trim().is_empty() {
            return;
        }
        let decoded = match self.config.format {
            FileFormat::Json => self.layout.decode_json(text),
            FileFormat::DebeziumJson => match self.layout.decode_debezium(text) {
                Ok(Change::Upsert(row)) => self.layout.finish(row),
                Ok(Change::Delete(row)) => {
                    out.push(Record::Delete {
                        row,
                        raw: text.to_string(),
                        origin: self.origin(),
                    });
                    return;
                }
                Err(reason) => Err(reason),
            },
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
            Err(reason) => {
                let raw = text.to_string();
                Record::Invalid {
                    reason,
                    raw,
                    origin: self.origin(),
                }
            }
        });
    }

    fn read_header(&mut self, out: &mut Vec<Record>) {
        let parsed = self
            .line_text()
            .and_then(|text| parse_csv_record(text).map_err(|reason| (reason, text.to_string())));
        match parsed {
            Ok(names) => {
                let header: Vec<Option<usize>> = names
                    .iter()
                    .map(|name| self.layout.column_index(name.trim()))
                    .collect();
                self.csv_header = Some(header);
            }
            Err((reason, raw)) => {
                if self.worker == 0 {
                    out.push(Record::Invalid {
                        reason: format!("unreadable CSV header: {reason}"),
                        raw,
                        origin: self.origin(),
                    });
                }
                self.csv_header = Some(Vec::new());
            }
        }
    }

    /// A read that failed: a replay ends with the error; a followed file is tried again.
    fn read_failed(&mut self, error: std::io::Error) -> Poll {
        let problem = format!(
            "reading {} at byte {}: {error}",
            self.config.path.display(),
            self.offset
        );
        if self.config.follow {
            self.retry(problem)
        } else {
            Poll::Failed(problem)
        }
    }

    pub(super) fn retry(&mut self, problem: String) -> Poll {
        let after = self.retry_after;
        self.retry_after = (after * 2).min(LONGEST_RETRY);
        Poll::Retry { after, problem }
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
        let limit = out.len() + max_records;
        let poll = loop {
            if out.len() >= limit {
                break Poll::Ready;
            }
            // A replay goes to this worker's next line; every worker reads a CSV header first.
            let header_pending = self.config.format == FileFormat::Csv && self.csv_header.is_none();
            if self.line.is_empty() && !header_pending {
                match self.at_own_line() {
                    Ok(Share::Read) => {}
                    Ok(Share::Moved) => continue,
                    Ok(Share::End) => break Poll::Finished,
                    Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                    Err(error) => break self.read_failed(error),
                }
            }
            match self.input.read_until(b'\n', &mut self.line) {
                Ok(0) if self.config.follow => match self.check_path() {
                    PathState::Unchanged => {
                        // A file being written is checked every millisecond (a read that finds
                        // nothing is cheap); one that has been quiet for a second, every 50 ms.
                        let quiet = self.last_growth.elapsed() >= Duration::from_secs(1);
                        break Poll::Idle(Duration::from_millis(if quiet { 50 } else { 1 }));
                    }
                    PathState::Replaced(file, identity) => {
                        self.start_over(Some((file, identity)), out);
                        continue;
                    }
                    PathState::Truncated => {
                        self.start_over(None, out);
                        continue;
                    }
                    PathState::Unreadable(problem) => break self.retry(problem),
                },
                Ok(0) => {
                    if self.line.is_empty() {
                        break Poll::Finished;
                    }
                    // A last line without a newline still counts in a replay.
                    self.line.push(b'\n');
                }
                Ok(read) => {
                    bytes += read as u64;
                    self.offset += read as u64;
                    if self.config.follow {
                        self.last_growth = Instant::now();
                    }
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => break self.read_failed(error),
            }
            if self.line.last() != Some(&b'\n') {
                // A partial line still being appended to: wait for the rest of it.
                continue;
            }
            self.consume_line(out);
        };
        if !matches!(poll, Poll::Retry { .. }) {
            self.retry_after = FIRST_RETRY;
        }
        if let Some(progress) = &self.progress {
            progress.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        }
        poll
    }

    fn position(&self) -> Option<Vec<u8>> {
        Some(self.checkpoint())
    }

    fn processing_time(&self) -> Option<i64> {
        self.config
            .follow
            .then(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::io::Write;

    pub(in crate::file) fn layout() -> RowLayout {
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

    fn rows_and_dead_letters(records: &[Record]) -> (usize, Vec<(String, String, String)>) {
        let mut rows = 0;
        let mut dead = Vec::new();
        for record in records {
            match record {
                Record::Row { .. } => rows += 1,
                Record::Invalid {
                    reason,
                    raw,
                    origin,
                } => dead.push((reason.clone(), raw.clone(), origin.clone())),
                Record::Replaced { .. } | Record::Status { .. } | Record::Delete { .. } => {}
            }
        }
        (rows, dead)
    }

    fn json_line(index: usize) -> String {
        format!(
            "{{\"id\":\"s{index}\",\"ts\":\"2026-06-01T00:00:{:02}Z\"}}\n",
            index % 60
        )
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_dead_letter_and_the_replay_goes_on() {
        for format in [FileFormat::Json, FileFormat::Csv] {
            let mut bytes = Vec::new();
            if format == FileFormat::Csv {
                bytes.extend_from_slice(b"id,ts\n");
            }
            for index in 1..=1001 {
                let mut line = match format {
                    FileFormat::Json => json_line(index).into_bytes(),
                    FileFormat::Csv => format!("s{index},2026-06-01 00:00:00\n").into_bytes(),
                    FileFormat::DebeziumJson => unreachable!(),
                };
                if index == 11 {
                    line[3] = 0xff;
                }
                bytes.extend_from_slice(&line);
            }
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &bytes).unwrap();
            let records = read_all(file.path().to_path_buf(), format, 0, 1);
            let (rows, dead) = rows_and_dead_letters(&records);
            assert_eq!((rows, dead.len()), (1000, 1), "{format:?}");
            let (reason, raw, origin) = &dead[0];
            let line = if format == FileFormat::Csv { 12 } else { 11 };
            assert!(
                reason.contains("invalid byte 0xff at byte 3 of the line"),
                "{reason}"
            );
            assert!(raw.contains("\\xff"), "{raw}");
            assert!(origin.ends_with(&format!(":{line}")), "{origin}");
        }
    }

    #[test]
    fn mutated_bytes_never_end_the_file_early_whatever_the_workers() {
        use rand::{Rng, SeedableRng};
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let lines = 3000;
        let mut bytes = Vec::new();
        for index in 0..lines {
            let mut line = json_line(index).into_bytes();
            if random.random_bool(0.5) {
                // Any byte but a line ending, anywhere before the line's end.
                let at = random.random_range(0..line.len() - 1);
                line[at] = loop {
                    let byte: u8 = random.random();
                    if byte != b'\n' {
                        break byte;
                    }
                };
            }
            bytes.extend_from_slice(&line);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        for peers in [1, 2, 3] {
            let (mut total, mut dead_letters) = (0, 0);
            for worker in 0..peers {
                let records = read_all(file.path().to_path_buf(), FileFormat::Json, worker, peers);
                let (rows, dead) = rows_and_dead_letters(&records);
                dead_letters += dead.len();
                total += rows + dead.len();
            }
            assert!(dead_letters > lines / 4, "{dead_letters} dead letters");
            // A mutated byte may make a line blank (skipped), never two lines of one.
            let blank = bytes
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty() && line.iter().all(u8::is_ascii_whitespace))
                .count();
            assert_eq!(total + blank, lines, "{peers} workers");
        }
    }

    #[test]
    fn a_read_error_fails_a_replay_and_is_retried_when_following() {
        // Opening a directory works; reading it fails (EISDIR), as a disk error would.
        let directory = tempfile::tempdir().unwrap();
        for follow in [false, true] {
            let config = FileSourceConfig {
                path: directory.path().to_path_buf(),
                format: FileFormat::Json,
                follow,
            };
            let mut reader = FileReader::open(config, layout(), 0, 1, Arc::default()).unwrap();
            let mut out = Vec::new();
            match (follow, reader.poll(&mut out, 10)) {
                (false, Poll::Failed(problem)) => assert!(problem.contains("reading"), "{problem}"),
                (true, Poll::Retry { after, problem }) => {
                    assert_eq!(after, FIRST_RETRY);
                    assert!(problem.contains("reading"), "{problem}");
                    match reader.poll(&mut out, 10) {
                        Poll::Retry { after, .. } => assert_eq!(after, FIRST_RETRY * 2),
                        other => panic!("expected a longer wait, got {other:?}"),
                    }
                }
                (follow, other) => panic!("follow {follow}: unexpected {other:?}"),
            }
        }
    }

    /// Polls a followed file until it is idle; returns the rows' ids and whether it said the file
    /// was replaced.
    fn drain(reader: &mut FileReader) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        while !matches!(reader.poll(&mut out, 100), Poll::Idle(_)) {}
        let mut ids = Vec::new();
        let mut replaced = false;
        for record in out {
            match record {
                Record::Row { row, .. } => ids.push(row[0].to_string()),
                Record::Replaced { .. } => replaced = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        (ids, replaced)
    }

    fn follow(path: PathBuf) -> FileReader {
        let config = FileSourceConfig {
            path,
            format: FileFormat::Json,
            follow: true,
        };
        FileReader::open(config, layout(), 0, 1, Arc::default()).unwrap()
    }

    fn lines(range: std::ops::Range<usize>) -> String {
        range.map(json_line).collect()
    }

    #[test]
    fn a_followed_file_that_is_rotated_is_finished_then_the_new_one_read_from_its_start() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("in.jsonl");
        std::fs::write(&path, lines(0..3)).unwrap();
        let mut reader = follow(path.clone());
        assert_eq!(drain(&mut reader).0.len(), 3);
        // The writer appends its last lines, and a partial one; then logrotate moves the file.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(
            old,
            "{}{{\"id\":\"last\",\"ts\":\"2026-06-01T00:00:00Z\"}}",
            lines(3..5)
        )
        .unwrap();
        std::fs::rename(&path, directory.path().join("in.jsonl.1")).unwrap();
        std::fs::write(&path, lines(5..7)).unwrap();
        let (ids, replaced) = drain(&mut reader);
        assert!(replaced);
        assert_eq!(ids, ["s3", "s4", "last", "s5", "s6"]);
        assert_eq!(reader.position().line_number, Some(2));
    }

    #[test]
    fn a_followed_file_truncated_and_rewritten_is_read_again_from_its_start() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("in.jsonl");
        std::fs::write(&path, lines(0..4)).unwrap();
        let mut reader = follow(path.clone());
        assert_eq!(drain(&mut reader).0.len(), 4);
        let inode = reader.position().inode;
        // copytruncate: the same file, emptied in place, then written again.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(0).unwrap();
        drain(&mut reader);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(lines(4..6).as_bytes())
            .unwrap();
        let (ids, _) = drain(&mut reader);
        assert_eq!(ids, ["s4", "s5"]);
        assert_eq!(reader.position().inode, inode);
    }

    #[test]
    fn a_followed_file_that_is_removed_is_waited_for_and_read_when_it_returns() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("in.jsonl");
        std::fs::write(&path, lines(0..2)).unwrap();
        let mut reader = follow(path.clone());
        assert_eq!(drain(&mut reader).0.len(), 2);
        std::fs::remove_file(&path).unwrap();
        let mut out = Vec::new();
        match reader.poll(&mut out, 10) {
            Poll::Retry { problem, .. } => assert!(problem.contains("was removed"), "{problem}"),
            other => panic!("expected a retry, got {other:?}"),
        }
        std::fs::write(&path, lines(2..3)).unwrap();
        let (ids, replaced) = drain(&mut reader);
        assert!(replaced);
        assert_eq!(ids, ["s2"]);
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
