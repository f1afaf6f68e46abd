//! Files as a plug-in: a source (and a table's reference data) replayed by every worker, each
//! reading its share of the lines, or followed by the first; a sink of JSON lines or CSV; standard output.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{
    DeclaredSink, DeclaredSource, Reach, SinkConnector, SinkSpec, SourceConnector, SourceSpec,
    SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};
use vibelux_interfaces::source::{Poll, ReadByAnotherProcess, Record, SourceReader};

use super::sink::RowWriter;
use super::source::{FileFormat, FileReader, FileSourceConfig};
use crate::payload::RowLayout;

pub struct Files;

impl SourceConnector for Files {
    fn name(&self) -> &'static str {
        "file"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SOURCE_OPTIONS
    }

    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError> {
        let config = super::options::source(options)?;
        if config.format == FileFormat::DebeziumJson && source.event_time.is_some() {
            return Err(options.error(crate::message_options::DELETIONS_ARE_FOR_TABLES));
        }
        let layout = RowLayout::declared(source);
        Ok(Arc::new(FileInput { config, layout }))
    }

    fn reads_tables(&self) -> bool {
        true
    }
}

impl SinkConnector for Files {
    fn name(&self) -> &'static str {
        "file"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        _sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        let (path, format) = super::options::sink(options)?;
        Ok(Arc::new(FileOutput { path, format }))
    }
}

/// A file to read: what the `file` connector plans, and what others that read files reuse.
#[derive(Debug)]
pub(crate) struct FileInput {
    config: FileSourceConfig,
    layout: RowLayout,
}

impl FileInput {
    pub(crate) fn new(config: FileSourceConfig, layout: RowLayout) -> Self {
        FileInput { config, layout }
    }
}

impl SourceSpec for FileInput {
    /// A replay by byte ranges; a followed file by the first worker, on process 0.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "file"
    }

    fn is_bounded(&self) -> bool {
        !self.config.follow
    }

    fn resumes(&self) -> bool {
        true
    }

    fn reports_progress(&self) -> bool {
        !self.config.follow
    }

    fn describe(&self) -> String {
        self.config.path.display().to_string()
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        match self.config.follow {
            true => self.follow(start),
            false => self.replay(start),
        }
    }

    fn rescales(&self) -> bool {
        true
    }
}

impl FileInput {
    fn open(&self, worker: usize, start: &SourceStart) -> Result<FileReader, String> {
        FileReader::open(
            self.config.clone(),
            self.layout.clone(),
            worker,
            start.workers,
            start.progress.clone(),
        )
        .map_err(|error| format!("opening {}: {error}", self.config.path.display()))
    }

    /// Every worker reads its own stripes of the file.
    fn replay(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        (0..start.workers)
            .map(|worker| {
                let mut reader = self.open(worker, start)?;
                match start.resume.len() {
                    0 => {}
                    old_workers if old_workers == start.workers => {
                        reader.resume(&start.resume[worker])?
                    }
                    _ => reader.resume_rescaled(&start.resume)?,
                }
                Ok(Box::new(reader) as Box<dyn SourceReader + Send>)
            })
            .collect()
    }

    /// The first worker reads a followed file, from where the first worker of the checkpoint
    /// was (whatever the number of workers then). The others open nothing, so in a cluster the
    /// file needs to be on process 0's machine only.
    fn follow(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        let first: Box<dyn SourceReader + Send> = match start.local.contains(&0) {
            true => {
                let mut reader = self.open(0, start)?;
                if let Some(position) = start.resume.first() {
                    reader.resume(position)?;
                }
                Box::new(reader)
            }
            false => Box::new(ReadByAnotherProcess),
        };
        Ok(std::iter::once(first)
            .chain((1..start.workers).map(|_| Box::new(FollowedByTheFirstWorker) as _))
            .collect())
    }
}

/// The reader of a followed file's every worker but the first, which reads it all.
struct FollowedByTheFirstWorker;

impl SourceReader for FollowedByTheFirstWorker {
    fn poll(&mut self, _out: &mut Vec<Record>, _max_records: usize) -> Poll {
        Poll::Finished
    }

    /// Nothing to resume: only the first worker's position counts.
    fn position(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
}

#[derive(Debug)]
struct FileOutput {
    path: PathBuf,
    format: FileFormat,
}

impl SinkSpec for FileOutput {
    fn connector(&self) -> &'static str {
        "file"
    }

    fn reach(&self) -> Reach {
        Reach {
            paths: vec![self.path.clone()],
            ..Reach::default()
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(RowWriter::file(
            &self.path,
            self.format,
            schema,
            changelog,
        )?))
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
        Ok(Box::new(RowWriter::file_resuming(
            &self.path,
            self.format,
            schema,
            changelog,
            part,
        )?))
    }
}

/// Rows as JSON lines on standard output.
pub struct Stdout;

impl SinkConnector for Stdout {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::STDOUT_OPTIONS
    }

    fn plan(
        &self,
        _sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        super::options::stdout(options)?;
        Ok(Arc::new(StandardOutput))
    }
}

#[derive(Debug)]
struct StandardOutput;

impl SinkSpec for StandardOutput {
    fn connector(&self) -> &'static str {
        "stdout"
    }

    fn describe(&self) -> String {
        "stdout".to_string()
    }

    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(RowWriter::stdout(schema, changelog)))
    }

    /// At least once: standard output cannot take back what a restart prints again.
    fn resumes(&self) -> bool {
        true
    }
}
