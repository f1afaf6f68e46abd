//! The `parquet` source: a file, a folder, or a Hive-partitioned table (ours, DuckDB's, Spark's,
//! pyarrow's) replayed in event-time order, so windows over history come out as they did live.
//!
//! Files are found under the path (hidden and `_`-prefixed names skipped, as every reader does)
//! and shared out among the workers. Partition columns come from the folder names
//! (`room=r01/`). Each column a source declares is read from the file by name, cast from
//! whatever the writer chose (timestamps in any unit or zone, 32-bit numbers, dictionary
//! strings) to the declared type; a type that cannot be cast is an error naming the column and
//! the file.
//!
//! Order: a warehouse partitioned by room holds a day of every room in separate files, which
//! overlap in time. Reading one file after another would make all but the first late. So each
//! worker first reads the event-time column of its files (cheap: one column) to learn where each
//! starts, and merges: a file is loaded, sorted by event time, when the merge reaches its first
//! reading, and rows leave in event-time order across the loaded files. Memory holds the files
//! that overlap the current time, not the whole history.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use vibelux_interfaces::row::{Datum, Row};
use vibelux_interfaces::source::{Poll, Record, ReplayProgress, SourceReader};
use vibelux_operators::columnar::append_column;

use crate::payload::{RowLayout, parse_text};

/// A Parquet file to read, with the partition values its path gives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParquetFile {
    pub path: PathBuf,
    /// `(column, value)` from `column=value` folders; `None` for Hive's null partition.
    pub partitions: Vec<(String, Option<String>)>,
}

/// The Parquet files at `path` (a file, or every `.parquet` file below a folder), in path order.
pub fn find_files(path: &Path) -> std::io::Result<Vec<ParquetFile>> {
    let mut files = Vec::new();
    if path.is_file() {
        files.push(ParquetFile {
            path: path.to_path_buf(),
            partitions: Vec::new(),
        });
    } else {
        collect(path, &mut Vec::new(), &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn collect(
    folder: &Path,
    partitions: &mut Vec<(String, Option<String>)>,
    files: &mut Vec<ParquetFile>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(folder)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden files (a writer's temporaries) and `_manifests`, `_SUCCESS`: not data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            let partition = name.split_once('=').map(|(column, value)| {
                let value = (value != "__HIVE_DEFAULT_PARTITION__").then(|| unescape(value));
                (column.to_ascii_lowercase(), value)
            });
            let pushed = partition.is_some();
            partitions.extend(partition);
            collect(&path, partitions, files)?;
            if pushed {
                partitions.pop();
            }
        } else if name.ends_with(".parquet") {
            files.push(ParquetFile {
                path,
                partitions: partitions.clone(),
            });
        }
    }
    Ok(())
}

/// Undoes Hive's `%XX` escapes in a partition value.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a file could not be replayed.
#[derive(Debug)]
enum FileProblem {
    /// Its bytes cannot be read (a corrupt or truncated file): a dead letter naming the file, and
    /// the replay goes on with the others.
    Unreadable(String),
    /// It holds a column the declaration cannot take (a list for a DOUBLE, no event time): the
    /// pipeline is wrong for these files, and the replay fails.
    Undeclarable(String),
}

/// A file the merge has not reached yet: where it starts in event time.
struct Pending {
    first_event: i64,
    file: ParquetFile,
}

/// A loaded file's rows not yet emitted, sorted by event time.
struct Loaded {
    path: PathBuf,
    rows: VecDeque<(i64, Row)>,
    /// Rows of it emitted so far (a prefix of its rows in event-time order).
    emitted: u64,
}

/// Where a replay is, for a checkpoint: the files done with, and how many rows of each file
/// being read were emitted. A file's rows are sorted the same way on every load, so a count
/// says which rows. Kept by path: a checkpoint of any worker count applies to any other.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReplayPosition {
    finished: BTreeSet<PathBuf>,
    partial: BTreeMap<PathBuf, u64>,
}

impl ReplayPosition {
    /// The positions of every worker of a checkpoint, as one.
    pub fn merged(parts: &[Vec<u8>]) -> Result<ReplayPosition, String> {
        let mut merged = ReplayPosition::default();
        for part in parts {
            let position: ReplayPosition =
                vibelux_interfaces::checkpoint::decode("parquet replay position", part)?;
            merged.finished.extend(position.finished);
            merged.partial.extend(position.partial);
        }
        Ok(merged)
    }
}

/// One worker's share of a Parquet replay.
pub struct ParquetReader {
    layout: RowLayout,
    /// Files not loaded yet, by where they start.
    pending: VecDeque<Pending>,
    loaded: Vec<Loaded>,
    /// The loaded files by their next row's event time.
    heads: BinaryHeap<Reverse<(i64, usize)>>,
    /// Problems found while loading (a row a file could not give), reported as dead letters.
    dead_letters: Vec<Record>,
    progress: Option<Arc<ReplayProgress>>,
    failure: Option<String>,
    /// Files done with: read to their end, or dead-lettered as unreadable.
    finished: BTreeSet<PathBuf>,
    /// Resuming: rows of a file the checkpointed run had emitted already.
    already_emitted: BTreeMap<PathBuf, u64>,
}

impl ParquetReader {
    /// Opens worker `worker`'s share (every `peers`-th file) of `files`, reading each one's
    /// event-time column to order them.
    pub fn open(
        files: &[ParquetFile],
        layout: RowLayout,
        worker: usize,
        peers: usize,
        progress: Arc<ReplayProgress>,
        resume: &ReplayPosition,
    ) -> Result<Self, String> {
        let event_time = layout
            .event_time_column
            .ok_or("a parquet source needs an event-time column")?;
        let time_name = layout.schema.field(event_time).name().clone();
        let mut pending = Vec::new();
        let mut dead_letters = Vec::new();
        let mut finished = BTreeSet::new();
        for file in files.iter().skip(worker).step_by(peers.max(1)) {
            if resume.finished.contains(&file.path) {
                finished.insert(file.path.clone());
                continue;
            }
            let times = match read_column(&file.path, &time_name) {
                Ok(times) => times,
                Err(FileProblem::Unreadable(problem)) => {
                    dead_letters.push(unreadable(file, problem));
                    finished.insert(file.path.clone());
                    continue;
                }
                Err(FileProblem::Undeclarable(problem)) => return Err(problem),
            };
            let first_event = times.iter().flatten().min().copied().unwrap_or(i64::MAX);
            pending.push(Pending {
                first_event,
                file: file.clone(),
            });
        }
        pending.sort_by(|a, b| (a.first_event, &a.file).cmp(&(b.first_event, &b.file)));
        if worker == 0 {
            let all: u64 = files
                .iter()
                .map(|file| std::fs::metadata(&file.path).map_or(0, |m| m.len()))
                .sum();
            progress.total_bytes.store(all, Ordering::Relaxed);
        }
        Ok(ParquetReader {
            layout,
            pending: pending.into(),
            loaded: Vec::new(),
            heads: BinaryHeap::new(),
            dead_letters,
            progress: Some(progress),
            failure: None,
            finished,
            already_emitted: resume.partial.clone(),
        })
    }

    /// Where the replay is (see [`ReplayPosition`]).
    fn replay_position(&self) -> ReplayPosition {
        ReplayPosition {
            finished: self.finished.clone(),
            partial: self
                .loaded
                .iter()
                .filter(|loaded| !loaded.rows.is_empty())
                .map(|loaded| (loaded.path.clone(), loaded.emitted))
                .collect(),
        }
    }

    /// Loads every pending file that starts no later than the earliest loaded row, or the next
    /// file when nothing is loaded.
    fn load_due(&mut self) -> Result<(), String> {
        // Files that cannot be read are dead letters; the next one is loaded instead.
        loop {
            let next_loaded = self.heads.peek().map(|Reverse((time, _))| *time);
            let due = match (self.pending.front(), next_loaded) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(pending), Some(time)) => pending.first_event <= time,
            };
            if !due {
                return Ok(());
            }
            let pending = self.pending.pop_front().expect("checked");
            let dead_letters_before = self.dead_letters.len();
            let mut loaded = match self.load(&pending.file) {
                Ok(loaded) => loaded,
                Err(FileProblem::Unreadable(problem)) => {
                    self.dead_letters.push(unreadable(&pending.file, problem));
                    self.finished.insert(pending.file.path.clone());
                    continue;
                }
                Err(FileProblem::Undeclarable(problem)) => return Err(problem),
            };
            if let Some(emitted) = self.already_emitted.remove(&pending.file.path) {
                // Read before the restart: its first rows and its dead letters went out then.
                self.dead_letters.truncate(dead_letters_before);
                let skipped = (emitted as usize).min(loaded.rows.len());
                loaded.rows.drain(..skipped);
                loaded.emitted = emitted;
            }
            if loaded.rows.is_empty() {
                self.finished.insert(pending.file.path.clone());
                continue;
            }
            let index = self.loaded.len();
            if let Some((time, _)) = loaded.rows.front() {
                self.heads.push(Reverse((*time, index)));
            }
            self.loaded.push(loaded);
        }
    }

    /// Reads a whole file into rows of the declared columns, sorted by event time.
    fn load(&mut self, file: &ParquetFile) -> Result<Loaded, FileProblem> {
        let origin = file.path.display().to_string();
        let unreadable = |error: &dyn std::fmt::Display| FileProblem::Unreadable(error.to_string());
        let opened = File::open(&file.path).map_err(|error| unreadable(&error))?;
        let size = opened.metadata().map_or(0, |m| m.len());
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(opened).map_err(|error| unreadable(&error))?;
        let file_schema = builder.schema().clone();
        let reader = builder.build().map_err(|error| unreadable(&error))?;
        let fields = self.layout.schema.fields().clone();
        // Where each declared column comes from: the file, the path, or nowhere (null).
        let mut sources = Vec::with_capacity(fields.len());
        for field in fields.iter() {
            let name = field.name();
            if let Some((index, _)) = file_schema
                .fields()
                .iter()
                .enumerate()
                .find(|(_, f)| f.name().eq_ignore_ascii_case(name))
            {
                sources.push(ColumnSource::File(index));
            } else if let Some((_, value)) = file
                .partitions
                .iter()
                .find(|(column, _)| column.eq_ignore_ascii_case(name))
            {
                let datum = match value {
                    None => Datum::Null,
                    Some(text) => parse_text(field, text).map_err(|problem| {
                        FileProblem::Undeclarable(format!(
                            "partition `{name}` of {origin}: {problem}"
                        ))
                    })?,
                };
                sources.push(ColumnSource::Constant(datum));
            } else {
                sources.push(ColumnSource::Constant(Datum::Null));
            }
        }
        let mut rows: Vec<(i64, Row)> = Vec::new();
        let mut line = 0usize;
        for batch in reader {
            let batch = batch.map_err(|error| unreadable(&error))?;
            let mut batch_rows: Vec<Row> = (0..batch.num_rows())
                .map(|_| Vec::with_capacity(fields.len()))
                .collect();
            for (field, source) in fields.iter().zip(&sources) {
                match source {
                    ColumnSource::File(index) => {
                        let column =
                            converted(&batch, *index, field.data_type()).map_err(|problem| {
                                FileProblem::Undeclarable(format!(
                                    "column `{}` of {origin}: {problem}",
                                    field.name()
                                ))
                            })?;
                        append_column(column.as_ref(), &mut batch_rows)
                            .map_err(|error| unreadable(&error))?;
                    }
                    ColumnSource::Constant(datum) => batch_rows
                        .iter_mut()
                        .for_each(|row| row.push(datum.clone())),
                }
            }
            for row in batch_rows {
                line += 1;
                match self.layout.finish(row) {
                    Ok((row, event_time)) => rows.push((event_time, row)),
                    Err(reason) => self.dead_letters.push(Record::Invalid {
                        reason,
                        raw: String::new(),
                        origin: format!("{origin} row {line}"),
                    }),
                }
            }
        }
        // Stable: rows of one instant keep the file's order.
        rows.sort_by_key(|(time, _)| *time);
        if let Some(progress) = &self.progress {
            progress.bytes_read.fetch_add(size, Ordering::Relaxed);
        }
        Ok(Loaded {
            path: file.path.clone(),
            rows: rows.into(),
            emitted: 0,
        })
    }
}

/// The dead letter of a file that cannot be read: its rows are not in the replay.
fn unreadable(file: &ParquetFile, problem: String) -> Record {
    Record::Invalid {
        reason: format!("the file cannot be read, so its rows are not in the replay: {problem}"),
        raw: String::new(),
        origin: file.path.display().to_string(),
    }
}

enum ColumnSource {
    File(usize),
    Constant(Datum),
}

/// Column `index` of `batch` as the declared type; a type that cannot be cast is an error.
fn converted(batch: &RecordBatch, index: usize, declared: &DataType) -> Result<ArrayRef, String> {
    let column = batch.column(index);
    let from = column.data_type();
    let target = match declared {
        // Any unit and zone: the instant, in nanoseconds.
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        other => other.clone(),
    };
    let unreadable = matches!(
        (from, &target),
        (
            DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) | DataType::Map(..),
            _
        ) | (
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView,
            _
        )
    );
    if unreadable {
        return Err(format!(
            "its Parquet type {from} cannot be read as {}",
            sql_type(declared)
        ));
    }
    let from_zone = match from {
        DataType::Timestamp(unit, Some(_)) => Some(DataType::Timestamp(*unit, None)),
        _ => None,
    };
    // A zoned timestamp's values are UTC instants already: drop the zone, keep the instant.
    let column = match from_zone {
        Some(naive) => column
            .to_data()
            .into_builder()
            .data_type(naive)
            .build()
            .map(datafusion::arrow::array::make_array)
            .map_err(|error| error.to_string())?,
        None => column.clone(),
    };
    cast(&column, &target).map_err(|_| {
        format!(
            "its Parquet type {from} cannot be read as {}",
            sql_type(declared)
        )
    })
}

fn sql_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Utf8 => "TEXT",
        DataType::Int64 => "BIGINT",
        DataType::Float64 => "DOUBLE",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(..) => "TIMESTAMP",
        DataType::Date32 => "DATE",
        _ => "its declared type",
    }
}

/// The values of one timestamp column of a file, in nanoseconds.
fn read_column(path: &Path, column: &str) -> Result<Vec<Option<i64>>, FileProblem> {
    let origin = path.display();
    let unreadable = |error: &dyn std::fmt::Display| FileProblem::Unreadable(error.to_string());
    let file = File::open(path).map_err(|error| unreadable(&error))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| unreadable(&error))?;
    let Some(index) = builder
        .schema()
        .fields()
        .iter()
        .position(|field| field.name().eq_ignore_ascii_case(column))
    else {
        return Err(FileProblem::Undeclarable(format!(
            "{origin} has no column `{column}`, the source's event time"
        )));
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|error| unreadable(&error))?;
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| unreadable(&error))?;
        let times = converted(&batch, 0, &DataType::Timestamp(TimeUnit::Nanosecond, None))
            .map_err(|problem| {
                FileProblem::Undeclarable(format!("column `{column}` of {origin}: {problem}"))
            })?;
        let times = times
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(|| {
                FileProblem::Undeclarable(format!(
                    "column `{column}` of {origin} is not a timestamp"
                ))
            })?;
        values.extend(times.iter());
    }
    Ok(values)
}

impl SourceReader for ParquetReader {
    fn poll(&mut self, out: &mut Vec<Record>, max_records: usize) -> Poll {
        if let Some(failure) = &self.failure {
            return Poll::Failed(failure.clone());
        }
        let limit = out.len() + max_records;
        while out.len() < limit {
            if let Err(problem) = self.load_due() {
                self.failure = Some(problem.clone());
                return Poll::Failed(problem);
            }
            out.append(&mut self.dead_letters);
            let Some(Reverse((_, index))) = self.heads.pop() else {
                return Poll::Finished;
            };
            let loaded = &mut self.loaded[index];
            let (event_time, row) = loaded.rows.pop_front().expect("a head has a row");
            loaded.emitted += 1;
            out.push(Record::Row {
                row,
                event_time,
                partition: 0,
            });
            match loaded.rows.front() {
                Some((next, _)) => self.heads.push(Reverse((*next, index))),
                // Exhausted: free its memory now, not at the end of the replay.
                None => {
                    loaded.rows = VecDeque::new();
                    self.finished.insert(loaded.path.clone());
                }
            }
        }
        Poll::Ready
    }

    fn position(&self) -> Option<Vec<u8>> {
        Some(vibelux_interfaces::checkpoint::encode(
            &self.replay_position(),
        ))
    }
}
