//! Parquet as a plug-in: a warehouse folder written one writer at a time (a sink), and Parquet
//! files or a warehouse replayed in event-time order (a source, for backfills).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use std::path::PathBuf;

use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::SourceReader;

use super::sink::{ParquetSinkConfig, ParquetWriter};
use super::source::{ParquetFile, ParquetReader, ReplayPosition};
use crate::payload::RowLayout;

pub struct Parquet;

impl SinkConnector for Parquet {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        Ok(Arc::new(Warehouse(super::options::sink(
            options,
            &sink.schema,
        )?)))
    }
}

#[derive(Debug)]
struct Warehouse(ParquetSinkConfig);

impl SinkSpec for Warehouse {
    fn connector(&self) -> &'static str {
        "parquet"
    }

    fn reach(&self) -> Reach {
        Reach {
            paths: vec![self.0.path.clone()],
            ..Reach::default()
        }
    }

    fn warehouse_table(&self) -> Option<std::path::PathBuf> {
        Some(self.0.path.clone())
    }

    fn describe(&self) -> String {
        format!("{} (parquet)", self.0.path.display())
    }

    /// The warehouse holds rows written once.
    fn takes_changelogs(&self) -> bool {
        false
    }

    fn open(&self, schema: SchemaRef, _changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(ParquetWriter::open(self.0.clone(), schema)?))
    }

    fn resumes(&self) -> bool {
        true
    }

    fn open_resuming(
        &self,
        schema: SchemaRef,
        changelog: bool,
        part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        let parts: Vec<Vec<u8>> = part.map(<[u8]>::to_vec).into_iter().collect();
        let mut writers = self.open_writers(schema, changelog, 1, Some(&parts))?;
        Ok(writers.remove(0))
    }

    /// Every worker encodes its own files; they commit together.
    fn writers(&self, workers: usize) -> usize {
        workers.max(1)
    }

    fn open_writers(
        &self,
        schema: SchemaRef,
        _changelog: bool,
        count: usize,
        resuming: Option<&[Vec<u8>]>,
    ) -> Result<Vec<Box<dyn SinkWriter>>, SinkError> {
        let writers = ParquetWriter::open_writers(self.0.clone(), schema, count, resuming)?;
        Ok(writers
            .into_iter()
            .map(|writer| Box::new(writer) as Box<dyn SinkWriter>)
            .collect())
    }
}

impl SourceConnector for Parquet {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SOURCE_OPTIONS
    }

    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError> {
        let (path, files) = super::options::source(options)?;
        Ok(Arc::new(ParquetReplay {
            path,
            files,
            layout: RowLayout::declared(source),
        }))
    }
}

#[derive(Debug)]
struct ParquetReplay {
    path: PathBuf,
    files: Vec<ParquetFile>,
    layout: RowLayout,
}

impl SourceSpec for ParquetReplay {
    /// Each worker replays its share of the files.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "parquet"
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn reports_progress(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} parquet files)",
            self.path.display(),
            self.files.len()
        )
    }

    /// A replay records the files it is done with and how far into each one it read.
    fn resumes(&self) -> bool {
        true
    }

    /// Positions are kept by file, whichever worker read it.
    fn rescales(&self) -> bool {
        true
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let resume = ReplayPosition::merged(&start.resume)?;
        (0..start.workers)
            .map(|worker| {
                ParquetReader::open(
                    &self.files,
                    self.layout.clone(),
                    worker,
                    start.workers,
                    start.progress.clone(),
                    &resume,
                )
                .map(|reader| Box::new(reader) as Box<dyn SourceReader + Send>)
            })
            .collect()
    }
}
