//! The `parquet` sink: a warehouse folder of Hive-partitioned Parquet files, committed atomically.
//!
//! A sink has one writer per worker of the process that writes (each encodes the rows its
//! worker computed). A writer buffers rows per partition (`date=2026-06-01/room=r01/`) and
//! stages them when the buffer reaches `rollover_rows`, when `rollover` time has passed, and
//! when the pipeline ends: each partition's rows, sorted, go to a hidden file (readers never see
//! a half-written file). Staged files become visible in epochs recorded in
//! `_manifests/epoch-NNNNNN.json` (`commit.rs`): at once without checkpoints; in a checkpointed
//! run, all writers' files together once a checkpoint holding them is stored, so that a restart
//! from that checkpoint neither loses nor repeats their rows. Partition columns live in the path, as Hive and every reader
//! (DuckDB, pyarrow, Spark, DataFusion) expect; a derived `date` partition keeps its timestamp.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use vibelux_operators::row::{Datum, Row, format_timestamp};

use super::commit::{Committer, StagedFile};
use super::folder::hidden_path;
use super::held::HeldRows;
use serde::{Deserialize, Serialize};
use vibelux_interfaces::checkpoint::{decode, encode};
use vibelux_interfaces::metadata;
use vibelux_interfaces::sink::{SinkError, SinkWriter};

/// One level of the partition path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// `room=r01`: the column's value (the column moves into the path).
    Column { name: String, index: usize },
    /// `date=2026-06-01`: the UTC day of a timestamp column (which stays in the file).
    Date { index: usize },
}

impl PartitionKey {
    fn name(&self) -> &str {
        match self {
            PartitionKey::Column { name, .. } => name,
            PartitionKey::Date { .. } => "date",
        }
    }

    /// What decides a row's partition, before any formatting: the column's value, or the day
    /// of a date partition's timestamp.
    fn raw(&self, row: &Row) -> Datum {
        match (self, row.get(self.index())) {
            (PartitionKey::Date { .. }, Some(Datum::Timestamp(nanos))) => {
                Datum::Date(nanos.div_euclid(NANOS_PER_DAY) as i32)
            }
            (_, Some(datum)) => datum.clone(),
            (_, None) => Datum::Null,
        }
    }

    fn index(&self) -> usize {
        match self {
            PartitionKey::Column { index, .. } | PartitionKey::Date { index } => *index,
        }
    }

    /// The path segment's value for a raw value of [`PartitionKey::raw`].
    fn value(&self, raw: &Datum) -> String {
        match (self, raw) {
            (_, Datum::Null) => "__HIVE_DEFAULT_PARTITION__".to_string(),
            (PartitionKey::Date { .. }, Datum::Date(day)) => {
                format_timestamp(i64::from(*day) * NANOS_PER_DAY)[..10].to_string()
            }
            (_, other) => escape_path_value(&other.to_string()),
        }
    }
}

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Hive escapes characters that would break a path segment.
fn escape_path_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '/' | '\\' | '=' | '%' | ':' | '#' | '?' | '\n' => {
                escaped.push_str(&format!("%{:02X}", c as u32))
            }
            other => escaped.push(other),
        }
    }
    escaped
}

#[derive(Debug, Clone)]
pub struct ParquetSinkConfig {
    pub path: PathBuf,
    pub partition_by: Vec<PartitionKey>,
    pub compression: Compression,
    pub rollover_rows: usize,
    /// Commit once the buffered rows hold about this many bytes (in memory, before compression).
    pub rollover_bytes: usize,
    pub rollover_interval: Duration,
    pub row_group_rows: usize,
}

impl ParquetSinkConfig {
    pub fn new(path: PathBuf) -> Self {
        ParquetSinkConfig {
            path,
            partition_by: Vec::new(),
            compression: Compression::ZSTD(ZstdLevel::default()),
            rollover_rows: 1_000_000,
            rollover_bytes: 256 << 20,
            rollover_interval: Duration::from_secs(60),
            row_group_rows: 128 * 1024,
        }
    }
}

pub struct ParquetWriter {
    config: ParquetSinkConfig,
    file_schema: SchemaRef,
    file_columns: Vec<usize>,
    buffers: BTreeMap<Vec<String>, HeldRows>,
    /// The path values of each partition buffered, by the raw values that decide it (cleared
    /// with the buffers, so a sink partitioned by a column of many values does not grow it).
    routes: HashMap<Vec<Datum>, Vec<String>, foldhash::fast::RandomState>,
    route_key: Vec<Datum>,
    buffered: usize,
    buffered_bytes: usize,
    last_commit: Instant,
    /// Rows committed since [`ParquetWriter::take_delivered`] last asked.
    delivered: u64,
    /// The warehouse's commits, shared with the sink's other writers.
    committer: Arc<Committer>,
    /// In the names of this writer's staged files: the run (a process and a random number, so
    /// that even two runs the lock did not keep apart never write into one file), the writer,
    /// and how many times it has staged.
    file_tag: String,
    staged_times: u64,
    /// Whether the run checkpoints: files are staged at rollovers and committed only once a
    /// checkpoint holding them is stored.
    checkpointed: bool,
    /// Files staged and not committed yet, each with the checkpoint it was first answered to.
    ready: Vec<(StagedFile, Option<u64>)>,
}

/// What a checkpoint keeps of one warehouse writer: the files it staged and not yet committed
/// (committed once the checkpoint is stored, or by the next open if the engine stopped in
/// between), the first epoch that can commit them, and the rows waiting for the next rollover.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpointed {
    cut: u64,
    staged: Vec<StagedFile>,
    first_epoch: u64,
    held: Vec<(Vec<String>, Vec<Row>)>,
}

impl ParquetWriter {
    /// One writer for a run without checkpoints.
    pub fn open(config: ParquetSinkConfig, schema: SchemaRef) -> Result<Self, SinkError> {
        let mut writers = ParquetWriter::open_writers(config, schema, 1, None)?;
        Ok(writers.remove(0))
    }

    /// `count` writers of one warehouse, committing together. `resuming` holds the parts every
    /// writer left in the checkpoint the run resumes from (`None`: the run does not
    /// checkpoint). The files they staged are committed first if the engine stopped before it
    /// committed them (the checkpoint holding them was stored, so their rows will not be
    /// produced again); anything staged later is deleted, as those rows will be. The rows they
    /// held for the next rollover are shared out among the new writers.
    pub fn open_writers(
        config: ParquetSinkConfig,
        schema: SchemaRef,
        count: usize,
        resuming: Option<&[Vec<u8>]>,
    ) -> Result<Vec<Self>, SinkError> {
        let io = |source| SinkError::Io {
            path: config.path.display().to_string(),
            source,
        };
        let parts: Vec<Checkpointed> = resuming
            .unwrap_or_default()
            .iter()
            .map(|part| decode::<Checkpointed>("warehouse epochs", part))
            .collect::<Result<_, _>>()
            .map_err(|reason| io(std::io::Error::other(reason)))?;
        let staged = parts
            .iter()
            .min_by_key(|part| part.first_epoch)
            .map(|first| {
                let files = parts.iter().flat_map(|part| part.staged.iter().cloned());
                (first.first_epoch, files.collect())
            });
        let run_tag = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let committer = Committer::open(&config.path, schema.clone(), run_tag.clone(), staged)?;
        let moved: Vec<usize> = config
            .partition_by
            .iter()
            .filter_map(|key| match key {
                PartitionKey::Column { index, .. } => Some(*index),
                PartitionKey::Date { .. } => None,
            })
            .collect();
        let file_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !moved.contains(i))
            .collect();
        let file_schema = Arc::new(Schema::new_with_metadata(
            file_columns
                .iter()
                .map(|&i| file_field(schema.field(i)))
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));
        // The rollover limits bound the sink's memory as a whole: each writer takes its share.
        let count = count.max(1);
        let mut share = config.clone();
        share.rollover_rows = (config.rollover_rows / count).max(1);
        share.rollover_bytes = (config.rollover_bytes / count).max(1);
        let mut writers: Vec<ParquetWriter> = (0..count)
            .map(|writer| ParquetWriter {
                config: share.clone(),
                file_schema: file_schema.clone(),
                file_columns: file_columns.clone(),
                buffers: BTreeMap::new(),
                routes: HashMap::default(),
                route_key: Vec::new(),
                buffered: 0,
                buffered_bytes: 0,
                last_commit: Instant::now(),
                delivered: 0,
                committer: committer.clone(),
                file_tag: format!("{run_tag}-w{writer}"),
                staged_times: 0,
                checkpointed: resuming.is_some(),
                ready: Vec::new(),
            })
            .collect();
        let writer_count = writers.len();
        for (index, part) in parts.into_iter().enumerate() {
            let writer = &mut writers[index % writer_count];
            let every_column: Vec<usize> = (0..writer.file_columns.len()).collect();
            for (partition, rows) in part.held {
                let held = match writer.buffers.entry(partition) {
                    std::collections::btree_map::Entry::Occupied(held) => held.into_mut(),
                    std::collections::btree_map::Entry::Vacant(place) => place.insert(
                        HeldRows::new(writer.file_schema.clone())
                            .map_err(|e| io(std::io::Error::other(e.to_string())))?,
                    ),
                };
                for row in &rows {
                    held.push(row, &every_column)
                        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
                    writer.buffered_bytes += row_bytes(row.iter());
                }
                writer.buffered += rows.len();
            }
        }
        Ok(writers)
    }

    /// Rows committed since the last call.
    pub fn take_delivered(&mut self) -> u64 {
        std::mem::take(&mut self.delivered)
    }

    /// Rows buffered and not committed yet.
    pub fn held_rows(&self) -> u64 {
        self.buffered as u64
    }

    pub fn path(&self) -> &Path {
        self.committer.root()
    }

    /// A row the warehouse's columns cannot hold (the planner gives the sink rows of its
    /// schema, so this is a bug, reported as the sink's failure).
    fn refused(&self, error: ArrowError) -> SinkError {
        SinkError::Io {
            path: self.config.path.display().to_string(),
            source: std::io::Error::other(error.to_string()),
        }
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn write(&mut self, row: &Row) -> Result<(), SinkError> {
        // Rows of one partition share their raw key: its path values are formatted once.
        self.route_key.clear();
        let partition_by = &self.config.partition_by;
        self.route_key
            .extend(partition_by.iter().map(|key| key.raw(row)));
        if !self.routes.contains_key(self.route_key.as_slice()) {
            let values = partition_by
                .iter()
                .zip(&self.route_key)
                .map(|(key, raw)| key.value(raw))
                .collect();
            self.routes.insert(self.route_key.clone(), values);
        }
        let partition = &self.routes[self.route_key.as_slice()];
        if !self.buffers.contains_key(partition) {
            let held = HeldRows::new(self.file_schema.clone()).map_err(|e| self.refused(e))?;
            self.buffers.insert(partition.clone(), held);
        }
        let held = self.buffers.get_mut(partition).expect("inserted above");
        if let Err(error) = held.push(row, &self.file_columns) {
            return Err(self.refused(error));
        }
        self.buffered_bytes += row_bytes(self.file_columns.iter().map(|&i| &row[i]));
        self.buffered += 1;
        Ok(())
    }

    /// Commits if a rollover is due (stages the files, in a checkpointed run).
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.buffered >= self.config.rollover_rows
            || self.buffered_bytes >= self.config.rollover_bytes
            || self.last_commit.elapsed() >= self.config.rollover_interval
        {
            if self.checkpointed {
                self.stage_epoch()?;
            } else {
                self.commit()?;
            }
        }
        Ok(())
    }

    /// Commits the buffered rows as one epoch: each partition's rows go to a hidden file
    /// (synced), then the epoch's manifest is written and renamed into place — the commit
    /// point — and only then are the files renamed to their visible names. A crash before the
    /// manifest leaves only hidden files, which the next open deletes; a crash after it leaves a
    /// committed epoch whose remaining renames the next open completes.
    ///
    /// The buffered rows are kept until the commit succeeds: a commit that fails (a full disk)
    /// is tried again whole by the next flush.
    pub fn commit(&mut self) -> Result<(), SinkError> {
        if self.buffered == 0 {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let staged = self.stage_files()?;
        if let Err(error) = self.committer.commit_now(&staged) {
            for file in &staged {
                let _ = std::fs::remove_file(&file.staged);
            }
            return Err(error);
        }
        self.delivered += self.buffered as u64;
        self.rows_staged();
        Ok(())
    }

    /// Stages the buffered rows, to be committed with a checkpoint.
    fn stage_epoch(&mut self) -> Result<(), SinkError> {
        if self.buffered == 0 {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let staged = self.stage_files()?;
        self.ready
            .extend(staged.into_iter().map(|file| (file, None)));
        self.rows_staged();
        Ok(())
    }

    /// Writes the buffered rows to hidden files; on failure they stay buffered and nothing is
    /// left behind.
    fn stage_files(&mut self) -> Result<Vec<StagedFile>, SinkError> {
        let mut staged = Vec::new();
        let mut buffers = std::mem::take(&mut self.buffers);
        let written = self.stage(&mut buffers, &mut staged);
        self.buffers = buffers;
        if let Err(error) = written {
            for file in &staged {
                let _ = std::fs::remove_file(&file.staged);
            }
            return Err(error);
        }
        self.staged_times += 1;
        Ok(staged)
    }

    fn rows_staged(&mut self) {
        self.buffers.clear();
        self.routes.clear();
        self.buffered = 0;
        self.buffered_bytes = 0;
        self.last_commit = Instant::now();
    }

    /// Writes each partition's rows to a hidden file; `staged` lists what was written.
    fn stage(
        &self,
        buffers: &mut BTreeMap<Vec<String>, HeldRows>,
        staged: &mut Vec<StagedFile>,
    ) -> Result<(), SinkError> {
        for (part, (values, rows)) in buffers.iter_mut().enumerate() {
            let mut directory = self.config.path.clone();
            for (key, value) in self.config.partition_by.iter().zip(values.iter()) {
                directory.push(format!("{}={value}", key.name()));
            }
            std::fs::create_dir_all(&directory).map_err(|e| self.io_error(&directory, e))?;
            let name = format!("{:06}-{part:04}", self.staged_times);
            let path = hidden_path(&directory.join(name), &self.file_tag);
            let count = rows.len();
            self.write_file(&path, rows)?;
            staged.push(StagedFile {
                staged: path,
                rows: count,
            });
        }
        Ok(())
    }

    /// Drops the files committed (by this writer or another) from those waiting.
    fn forget_committed(&mut self) {
        if let Some(through) = self.committer.committed_through() {
            self.ready
                .retain(|(_, answered)| answered.is_none_or(|cut| cut > through));
        }
    }

    /// Writes a partition's rows, sorted, to a file.
    fn write_file(&self, path: &Path, rows: &mut HeldRows) -> Result<(), SinkError> {
        let failure = |message: String| SinkError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(message),
        };
        let properties = WriterProperties::builder()
            .set_compression(self.config.compression)
            .set_max_row_group_row_count(Some(self.config.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let file = File::create(path).map_err(|e| self.io_error(path, e))?;
        let synced = file.try_clone().map_err(|e| self.io_error(path, e))?;
        let mut writer = ArrowWriter::try_new(file, self.file_schema.clone(), Some(properties))
            .map_err(|e| failure(e.to_string()))?;
        rows.for_each_sorted(self.config.row_group_rows, |batch| {
            writer.write(&batch).map_err(|e| e.to_string())
        })
        .map_err(failure)?;
        writer.close().map_err(|e| failure(e.to_string()))?;
        synced.sync_all().map_err(|e| self.io_error(path, e))?;
        Ok(())
    }
}

/// Written on the worker, though an epoch's commit takes a while: handed to a thread of its own
/// (`SinkWriter::waits`), the reference write benchmark (6.2M rows, `bench/warehouse.sh`'s
/// pipeline over 3 days) ran in the same wall time with 17 % more CPU and 45 % more memory,
/// every row then being freed on another thread than the one that made it.
impl SinkWriter for ParquetWriter {
    fn describe(&self) -> String {
        self.config.path.display().to_string()
    }

    /// The planner only sends append-only rows to Parquet.
    fn write(&mut self, row: &Row, _insert: bool) -> Result<(), SinkError> {
        ParquetWriter::write(self, row)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        ParquetWriter::flush(self)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if self.checkpointed {
            self.stage_epoch()
        } else {
            self.commit()
        }
    }

    /// Answers checkpoint `cut` with the files staged and not committed, and the rows held for
    /// the next rollover.
    fn checkpoint(&mut self, cut: u64) -> Result<Vec<u8>, SinkError> {
        // Read before the committed files are forgotten: a file another writer commits in
        // between is then listed, and its epoch is not before this one.
        let first_epoch = self.committer.next_epoch();
        self.forget_committed();
        let mut answered = Vec::new();
        for (file, answered_to) in &mut self.ready {
            if answered_to.is_none() {
                *answered_to = Some(cut);
                answered.push(file.clone());
            }
        }
        self.committer.answer(cut, answered);
        let mut held = Vec::with_capacity(self.buffers.len());
        let mut buffers = std::mem::take(&mut self.buffers);
        let read: Result<(), ArrowError> = buffers.iter_mut().try_for_each(|(partition, rows)| {
            held.push((partition.clone(), rows.rows()?));
            Ok(())
        });
        self.buffers = buffers;
        read.map_err(|e| self.refused(e))?;
        Ok(encode(&Checkpointed {
            cut,
            staged: self.ready.iter().map(|(file, _)| file.clone()).collect(),
            first_epoch,
            held,
        }))
    }

    /// Commits, as one epoch, what every writer of the warehouse answered to the stored
    /// checkpoint or an earlier one (unless another writer already did).
    fn checkpoint_stored(&mut self, part: &[u8]) -> Result<(), SinkError> {
        let checkpointed: Checkpointed =
            decode("warehouse epochs", part).map_err(|reason| SinkError::Io {
                path: self.config.path.display().to_string(),
                source: std::io::Error::other(reason),
            })?;
        self.delivered += self.committer.stored(checkpointed.cut)?;
        self.forget_committed();
        Ok(())
    }

    fn delivers_on_write(&self) -> bool {
        false
    }

    fn take_delivered(&mut self) -> u64 {
        ParquetWriter::take_delivered(self)
    }

    fn held_rows(&self) -> u64 {
        ParquetWriter::held_rows(self)
    }
}

/// A writer dropped with rows still buffered (its dataflow was dropped: the view or sink was
/// removed while running) commits them, so nothing it accepted is lost.
impl Drop for ParquetWriter {
    fn drop(&mut self) {
        // A checkpointed run's rows belong to its checkpoints: a restart produces them again.
        if self.buffered > 0
            && !self.checkpointed
            && let Err(error) = self.commit()
        {
            tracing::error!(%error, path = %self.config.path.display(), "committing the last epoch failed");
        }
    }
}

/// About what a row takes held (a text's bytes and offset, eight bytes for anything else).
fn row_bytes<'a>(row: impl Iterator<Item = &'a Datum>) -> usize {
    row.map(|datum| match datum {
        Datum::Utf8(text) => text.len() + 4,
        _ => 8,
    })
    .sum()
}

/// A column as files store it. Timestamps (and durations) are written in microseconds — the finest unit every
/// reader handles (Spark refuses nanoseconds) and finer than any sensor clock — and one without
/// a declared zone is recorded as UTC wall-clock time in its metadata.
fn file_field(field: &Field) -> Field {
    match field.data_type() {
        DataType::Timestamp(_, zone) => {
            let mut metadata = field.metadata().clone();
            if zone.is_none() {
                metadata.insert(metadata::TIME_ZONE.to_string(), "UTC".to_string());
            }
            field
                .clone()
                .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))
                .with_metadata(metadata)
        }
        // Microseconds too: an INT64 that Arrow readers (pandas, Polars) take as a duration.
        DataType::Duration(_) => field
            .clone()
            .with_data_type(DataType::Duration(TimeUnit::Microsecond)),
        _ => field.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("room", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("temp_c", DataType::Float64, true),
        ]))
    }

    /// A writer of `schema()` rows into `<dir>/climate`, partitioned by `date(ts), room`.
    fn by_date_and_room(dir: &Path) -> ParquetWriter {
        let mut config = ParquetSinkConfig::new(dir.join("climate"));
        config.partition_by = vec![
            PartitionKey::Date { index: 1 },
            PartitionKey::Column {
                name: "room".into(),
                index: 0,
            },
        ];
        ParquetWriter::open(config, schema()).unwrap()
    }

    #[test]
    fn rows_land_in_hive_partitions_sorted_with_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = by_date_and_room(dir.path());
        let day = 1_780_272_000_000_000_000i64;
        for (room, offset, temp) in [
            ("r02", 5_000, 21.0),
            ("r01", 9_000, 20.0),
            ("r01", 1_000, 19.0),
        ] {
            let row = vec![
                Datum::Utf8(room.into()),
                Datum::Timestamp(day + offset),
                Datum::Float64(temp),
            ];
            writer.write(&row).unwrap();
        }
        writer.commit().unwrap();
        let file = dir
            .path()
            .join("climate/date=2026-06-01/room=r01/part-000000-0000.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap()).unwrap();
        assert_eq!(
            reader.schema().fields().len(),
            2,
            "the room moved into the path"
        );
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        let rows = vibelux_operators::columnar::batch_to_rows(&batch).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Datum::Timestamp(day + 1_000), Datum::Float64(19.0)],
                vec![Datum::Timestamp(day + 9_000), Datum::Float64(20.0)],
            ]
        );
        let manifest =
            std::fs::read_to_string(dir.path().join("climate/_manifests/epoch-000000.json"))
                .unwrap();
        assert!(manifest.contains("room=r02"), "{manifest}");
        // A reopened writer continues with the next epoch.
        drop(writer);
        let mut config = ParquetSinkConfig::new(dir.path().join("climate"));
        config.partition_by = vec![];
        assert_eq!(
            ParquetWriter::open(config, schema())
                .unwrap()
                .committer
                .next_epoch(),
            1
        );
    }

    #[test]
    fn days_before_1970_and_null_values_have_partitions_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = by_date_and_room(dir.path());
        for (room, ts) in [
            (Datum::Null, -1),
            (Datum::Utf8("r/1".into()), 0),
            (Datum::Null, 86_400 * 1_000_000_000 - 1),
            (Datum::Utf8("r/1".into()), -86_400 * 1_000_000_000),
        ] {
            writer
                .write(&vec![room, Datum::Timestamp(ts), Datum::Float64(20.0)])
                .unwrap();
        }
        writer.commit().unwrap();
        let manifest =
            std::fs::read_to_string(dir.path().join("climate/_manifests/epoch-000000.json"))
                .unwrap();
        for partition in [
            "date=1969-12-31/room=__HIVE_DEFAULT_PARTITION__",
            "date=1970-01-01/room=r%2F1",
            "date=1970-01-01/room=__HIVE_DEFAULT_PARTITION__",
            "date=1969-12-31/room=r%2F1",
        ] {
            assert!(manifest.contains(partition), "{partition}: {manifest}");
        }
        assert_eq!(manifest.matches("\"rows\"").count(), 4, "{manifest}");
    }

    #[test]
    fn reopening_completes_committed_epochs_and_drops_uncommitted_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("climate");
        let mut writer =
            ParquetWriter::open(ParquetSinkConfig::new(root.clone()), schema()).unwrap();
        let row = vec![
            Datum::Utf8("r01".into()),
            Datum::Timestamp(1_780_272_000_000_000_000),
            Datum::Float64(20.0),
        ];
        writer.write(&row).unwrap();
        writer.commit().unwrap();
        drop(writer);
        // A crash after epoch 0's manifest but before its rename, and one in the middle of
        // writing epoch 1 (no manifest yet).
        let committed = root.join("part-000000-0000.parquet");
        let staged = root.join(
            serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(root.join("_manifests/epoch-000000.json")).unwrap(),
            )
            .unwrap()["files"][0]["staged"]
                .as_str()
                .unwrap(),
        );
        std::fs::rename(&committed, &staged).unwrap();
        let uncommitted = hidden_path(&root.join("part-000001-0000.parquet"), "4242-0");
        std::fs::write(&uncommitted, b"PAR1 half").unwrap();
        assert_eq!(
            ParquetWriter::open(ParquetSinkConfig::new(root.clone()), schema())
                .unwrap()
                .committer
                .next_epoch(),
            1
        );
        assert!(
            committed.exists(),
            "the committed epoch's file is renamed into place"
        );
        assert!(!staged.exists());
        assert!(!uncommitted.exists(), "the uncommitted file is deleted");
    }

    fn reading(room: &str) -> Row {
        vec![
            Datum::Utf8(room.into()),
            Datum::Timestamp(1_780_272_000_000_000_000),
            Datum::Float64(20.0),
        ]
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("climate");
        let first = ParquetWriter::open(ParquetSinkConfig::new(root.clone()), schema()).unwrap();
        let refused = ParquetWriter::open(ParquetSinkConfig::new(root.clone()), schema())
            .err()
            .expect("a second writer is refused");
        let message = refused.to_string();
        assert!(
            message.contains("another process is writing this warehouse")
                && message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        ParquetWriter::open(ParquetSinkConfig::new(root), schema()).unwrap();
    }

    /// A warehouse at `root` partitioned by room (column 0).
    fn by_room(root: &Path) -> ParquetSinkConfig {
        let mut config = ParquetSinkConfig::new(root.to_path_buf());
        config.partition_by = vec![PartitionKey::Column {
            name: "room".into(),
            index: 0,
        }];
        config
    }

    /// Each committed epoch's files and rows, from the manifests, in epoch order.
    fn epochs(root: &Path) -> Vec<(usize, u64)> {
        let mut epochs = Vec::new();
        for epoch in 0.. {
            let Ok(text) = std::fs::read(root.join(format!("_manifests/epoch-{epoch:06}.json")))
            else {
                break;
            };
            let manifest: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let files = manifest["files"].as_array().unwrap();
            for file in files {
                let visible = root.join(file["file"].as_str().unwrap());
                assert!(visible.exists(), "{} is committed", visible.display());
            }
            let rows = files.iter().map(|f| f["rows"].as_u64().unwrap()).sum();
            epochs.push((files.len(), rows));
        }
        epochs
    }

    #[test]
    fn the_writers_of_a_warehouse_commit_each_checkpoint_as_one_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("climate");
        let mut config = by_room(&root);
        // Two rows each: the writers share the sink's limit.
        config.rollover_rows = 4;
        let mut writers = ParquetWriter::open_writers(config.clone(), schema(), 2, Some(&[]))
            .unwrap()
            .into_iter();
        let (mut first, mut second) = (writers.next().unwrap(), writers.next().unwrap());
        // Each stages its own files at its rollovers; nothing is visible before a checkpoint
        // holding them is stored.
        for room in ["r01", "r02", "r01", "r01"] {
            first.write(&reading(room)).unwrap();
            first.flush().unwrap();
        }
        second.write(&reading("r03")).unwrap();
        second.finish().unwrap();
        let parts = [first.checkpoint(1).unwrap(), second.checkpoint(1).unwrap()];
        assert_eq!(epochs(&root), vec![]);
        // The first writer to hear the checkpoint is stored commits everyone's files, once.
        second.checkpoint_stored(&parts[1]).unwrap();
        first.checkpoint_stored(&parts[0]).unwrap();
        assert_eq!(epochs(&root), vec![(4, 5)]);
        assert_eq!((second.take_delivered(), first.take_delivered()), (5, 0));

        // A checkpoint is stored, then the engine dies before committing what it staged; rows
        // staged after it die with the engine, rows held at it are shared out by the next run.
        first.write(&reading("r01")).unwrap();
        first.write(&reading("r02")).unwrap();
        first.flush().unwrap();
        first.write(&reading("r04")).unwrap();
        second.write(&reading("r05")).unwrap();
        let parts = [first.checkpoint(2).unwrap(), second.checkpoint(2).unwrap()];
        second.write(&reading("r05")).unwrap();
        second.finish().unwrap();
        drop((first, second));
        let resumed = ParquetWriter::open_writers(config, schema(), 3, Some(&parts)).unwrap();
        assert_eq!(epochs(&root), vec![(4, 5), (2, 2)]);
        let held: Vec<u64> = resumed.iter().map(ParquetWriter::held_rows).collect();
        assert_eq!(held, vec![1, 1, 0]);
        let hidden = std::fs::read_dir(root.join("room=r05")).map_or(0, |dir| {
            dir.filter(|entry| {
                let name = entry.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".tmp")
            })
            .count()
        });
        assert_eq!(hidden, 0, "the file staged after the checkpoint is deleted");
    }

    #[test]
    fn an_epoch_whose_commit_fails_keeps_its_rows_and_commits_them_on_retry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("climate");
        let config = by_room(&root);
        let mut writer = ParquetWriter::open(config, schema()).unwrap();
        for room in ["r01", "r02", "r02"] {
            writer.write(&reading(room)).unwrap();
        }
        // A file where room r02's folder must go makes the commit fail part-way, after r01's
        // file was written, as a full disk would.
        std::fs::write(root.join("room=r02"), b"in the way").unwrap();
        assert!(writer.commit().is_err());
        assert_eq!((writer.held_rows(), writer.take_delivered()), (3, 0));
        assert!(!root.join("_manifests/epoch-000000.json").exists());
        std::fs::remove_file(root.join("room=r02")).unwrap();
        writer.commit().unwrap();
        assert_eq!((writer.held_rows(), writer.take_delivered()), (0, 3));
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("_manifests/epoch-000000.json")).unwrap(),
        )
        .unwrap();
        let rows: u64 = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(rows, 3);
        assert!(root.join("room=r02/part-000000-0001.parquet").exists());
    }

    #[test]
    fn timestamps_are_stored_in_microseconds_marked_utc() {
        let stored = file_field(&schema().field(1).clone());
        assert_eq!(
            stored.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(stored.metadata()[metadata::TIME_ZONE], "UTC");
    }

    #[test]
    fn durations_are_stored_as_arrow_durations_in_microseconds() {
        let dir = tempfile::tempdir().unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("sensor_id", DataType::Utf8, true),
            Field::new("held", DataType::Duration(TimeUnit::Nanosecond), true),
        ]));
        let mut writer =
            ParquetWriter::open(ParquetSinkConfig::new(dir.path().join("holds")), schema).unwrap();
        for held in [Datum::Duration(45_250_000_000), Datum::Null] {
            writer.write(&vec![Datum::Utf8("s1".into()), held]).unwrap();
        }
        writer.commit().unwrap();
        let file = dir.path().join("holds/part-000000-0000.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).unwrap()).unwrap();
        assert_eq!(
            reader.schema().field(1).data_type(),
            &DataType::Duration(TimeUnit::Microsecond)
        );
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        let rows = vibelux_operators::columnar::batch_to_rows(&batch).unwrap();
        assert_eq!(
            rows.iter().map(|row| row[1].clone()).collect::<Vec<_>>(),
            // Sorted as the writer sorts each file.
            [Datum::Null, Datum::Duration(45_250_000_000)]
        );
    }

    #[test]
    fn path_values_are_escaped() {
        assert_eq!(escape_path_value("a/b=c"), "a%2Fb%3Dc");
    }
}
