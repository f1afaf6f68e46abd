//! Connectors as plug-ins: what a kind of source or sink tells the planner and the engine, and
//! the registry through which they find it by its `connector = '…'` name.
//!
//! The planner knows no connector. For `CREATE SOURCE … WITH (connector = 'x', …)` it looks `x`
//! up in the [`Registry`] the engine built, hands it the declared columns and the options, and
//! keeps the [`SourceSpec`] it returns in the plan. The engine starts that spec's readers; it
//! knows no connector either. Sinks work the same way through [`SinkSpec`]. A new connector is
//! a folder in `connectors/` and one line in its registry.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::options::{OptionError, Options};
use crate::sink::{SinkError, SinkWriter};
use crate::source::{ReplayProgress, SourceMetrics, SourceReader};

/// Options every source takes, whatever its connector.
pub const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
];

/// A source or table as declared: its name and columns, which column is the event time (`None`
/// for a table, whose rows have none), and how far ahead of the clock an event time may be.
#[derive(Debug, Clone)]
pub struct DeclaredSource {
    pub name: String,
    pub schema: SchemaRef,
    pub event_time: Option<usize>,
    /// Rows timed more than this (nanoseconds) after the wall clock are dead letters: one
    /// reading from a device whose clock jumped ahead would otherwise advance the watermark for
    /// good and make every later reading late. `None`: no bound.
    pub max_future_nanos: Option<i64>,
}

/// A kind of source, found by its `connector = '…'` name.
pub trait SourceConnector: Send + Sync {
    /// The name written in `connector = '…'`.
    fn name(&self) -> &'static str;

    /// The options this connector understands, listed when one is not: `connector`, its own,
    /// then [`SOURCE_OPTIONS`], which the planner takes.
    fn options(&self) -> &'static [&'static str];

    /// Checks the options this connector understands (taking them) and the declared columns,
    /// and returns what the engine will start.
    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError>;

    /// The unit of a column this connector defines (the simulator's `temp_c` is in °C), used
    /// when the declaration gives none.
    fn column_unit(&self, _column: &str) -> Option<&'static str> {
        None
    }

    /// Whether `CREATE TABLE` may read reference data with it.
    fn reads_tables(&self) -> bool {
        false
    }

    /// The columns and event time of a source whose rows the engine itself defines (the audit
    /// trail): a declaration may then leave out its column list and watermark.
    fn defined_columns(&self) -> Option<DefinedColumns> {
        None
    }
}

/// What a connector that defines its rows offers in place of a declared column list.
#[derive(Debug, Clone)]
pub struct DefinedColumns {
    pub schema: SchemaRef,
    pub event_time: usize,
    /// How far the watermark trails the latest event time, in nanoseconds.
    pub watermark_delay_nanos: i64,
}

/// What a planned source needs to start on each worker.
#[derive(Debug, Clone)]
pub struct SourceStart {
    pub name: String,
    /// Every worker of the run, in every process.
    pub workers: usize,
    /// How many processes those workers are spread over (1: one process). A source that
    /// relies on coordination of its own between its readers (a Kafka consumer group handing
    /// partitions over) cannot rely on it across processes.
    pub processes: usize,
    /// The workers this process runs: readers for the others' workers are dropped unpolled
    /// (a source may make placeholders for them rather than connect on their behalf).
    pub local: std::ops::Range<usize>,
    pub metrics: Arc<SourceMetrics>,
    /// Bytes read of the input, for a replay's progress bar.
    pub progress: Arc<ReplayProgress>,
    /// Where each worker's reader was at the checkpoint the run resumes from (what its
    /// [`SourceReader::position`](crate::source::SourceReader::position) said); empty when the
    /// run starts afresh. One per worker of *that* run: when it had another number of workers
    /// than `workers` (only for a source that [`SourceSpec::rescales`]), the readers share
    /// them out.
    pub resume: Vec<Vec<u8>>,
    /// Whether the run checkpoints (a source that commits positions elsewhere, as a Kafka
    /// consumer group does, then commits only what checkpoints hold).
    pub checkpointed: bool,
    /// A directory of its own in the run's state, for a source that keeps what it received
    /// durably (an MQTT journal); `None` when the run is not checkpointed.
    pub durable_directory: Option<std::path::PathBuf>,
}

/// A planned source: checked options and columns, ready to start.
pub trait SourceSpec: Send + Sync + Debug {
    /// The connector's name.
    fn connector(&self) -> &'static str;

    /// Whether the input ends by itself (a replay) rather than running until stopped.
    fn is_bounded(&self) -> bool;

    /// Whether the clock paces it (a live simulation, a poller): such a source cannot run away
    /// from the sinks, and flow control must not hold it back.
    fn paced_by_clock(&self) -> bool {
        false
    }

    /// How long a quiet partition holds the watermark back, unless `idle_timeout` says; `None`
    /// for the engine's default (10 s). An input written in time order as things happen (the
    /// audit trail) has nothing late to wait for.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether it reports replay progress in bytes.
    fn reports_progress(&self) -> bool {
        false
    }

    /// Whether its readers report positions and resume from them, so runs reading it can be
    /// checkpointed.
    fn resumes(&self) -> bool {
        false
    }

    /// Whether it resumes from a checkpoint taken with another number of workers: then
    /// [`SourceStart::resume`] holds the old workers' positions (not one per reader), and each
    /// reader takes on its share of them.
    fn rescales(&self) -> bool {
        false
    }

    /// Whether it runs in a cluster of processes: its `start` then makes readers that divide
    /// the input among every process's workers (each process starts it, and keeps the readers
    /// of the workers in [`SourceStart::local`]), not a copy of the input per process. A
    /// connector says so once it does; a pipeline with a source that does not is refused as a
    /// cluster, with its name.
    fn runs_in_a_cluster(&self) -> bool {
        false
    }

    /// Where it reads from, for people (`EXPLAIN`, the start-up banner).
    fn describe(&self) -> String;

    /// The columns of its `<source>_health` relation, for sources that report on their device.
    fn health_schema(&self) -> Option<SchemaRef> {
        None
    }

    /// Starts the source: one reader for each of `start.workers` workers, in worker order. A
    /// network source starts its client here, shared by the readers.
    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String>;
}

/// A sink as declared: its name, and the columns of the relation it writes.
#[derive(Debug, Clone)]
pub struct DeclaredSink {
    pub name: String,
    pub schema: SchemaRef,
}

/// A kind of sink, found by its `connector = '…'` name.
pub trait SinkConnector: Send + Sync {
    /// The name written in `connector = '…'`.
    fn name(&self) -> &'static str;

    /// The options this connector understands (with `connector`); listed when one is not.
    fn options(&self) -> &'static [&'static str];

    /// Checks the options (taking them) against the relation's columns, and returns what the
    /// engine will open.
    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError>;
}

/// What a sink writes to or connects to besides the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reach {
    /// Files and folders it writes (audit logs included), as given.
    pub paths: Vec<std::path::PathBuf>,
    /// Files it reads (a tag map).
    pub reads: Vec<std::path::PathBuf>,
    /// Hosts it connects to, `host:port`.
    pub hosts: Vec<String>,
    /// For sinks that act on equipment: the writable points with no `min` and `max`, and
    /// whether their limits were given inline rather than from a file.
    pub unbounded: Vec<String>,
    pub limits_inline: bool,
}

/// A planned sink, ready to open.
pub trait SinkSpec: Send + Sync + Debug {
    /// The connector's name.
    fn connector(&self) -> &'static str;

    /// Where rows go, for people.
    fn describe(&self) -> String;

    /// Whether it acts on equipment (writes to PLCs): only an administrator may add one to a
    /// running pipeline.
    fn actuates(&self) -> bool {
        false
    }

    /// What it reaches outside the engine: checked for sinks added to a running pipeline
    /// over the API, which must stay inside the data directory and the allowed hosts.
    fn reach(&self) -> Reach {
        Reach::default()
    }

    /// The folder of a table that readers can query (a Parquet sink's), which the Postgres
    /// port serves beside the live views.
    fn warehouse_table(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether it can write a changelog (inserts and deletes); a warehouse holds rows written
    /// once and cannot.
    fn takes_changelogs(&self) -> bool {
        true
    }

    /// Opens (creates) the target for rows of `schema`; `changelog` marks each row as an insert
    /// or a delete.
    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError>;

    /// Whether its writers take part in checkpoints: they deliver exactly what precedes each
    /// checkpoint and continue from one after a restart ([`SinkSpec::open_resuming`]).
    fn resumes(&self) -> bool {
        false
    }

    /// Opens the sink to continue from a checkpoint: `part` is what its writer's
    /// [`SinkWriter::checkpoint`] said then, `None` when the run checkpoints but has stored
    /// none yet (the target keeps what it already holds: nothing is wiped at start).
    fn open_resuming(
        &self,
        schema: SchemaRef,
        changelog: bool,
        _part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        self.open(schema, changelog)
    }

    /// How many writers share its rows when the process that writes sinks runs `workers`
    /// workers. One gathers every row on worker 0 (a file keeps one order, a network client one
    /// connection); more let each of those workers write the rows it computed (a warehouse
    /// encodes its files in parallel and commits them together).
    fn writers(&self, _workers: usize) -> usize {
        1
    }

    /// Opens `count` writers (what [`SinkSpec::writers`] said) that share one target. `resuming`
    /// is `None` in a run without checkpoints; otherwise it holds the parts every writer left in
    /// the checkpoint resumed from (none before the first), whose number may differ from
    /// `count` when the worker count changed.
    fn open_writers(
        &self,
        schema: SchemaRef,
        changelog: bool,
        count: usize,
        resuming: Option<&[Vec<u8>]>,
    ) -> Result<Vec<Box<dyn SinkWriter>>, SinkError> {
        debug_assert_eq!(count, 1, "a sink with one writer");
        let writer = match resuming {
            None => self.open(schema, changelog)?,
            Some([]) => self.open_resuming(schema, changelog, None)?,
            Some([part]) => self.open_resuming(schema, changelog, Some(part))?,
            Some(parts) => {
                return Err(SinkError::Broker {
                    target: self.describe(),
                    reason: format!(
                        "the checkpoint holds the parts of {} writers, and this sink has one",
                        parts.len()
                    ),
                });
            }
        };
        Ok(vec![writer])
    }
}

/// The connectors a pipeline may name, in the order they were registered (the order messages
/// list them in).
#[derive(Clone, Default)]
pub struct Registry {
    sources: Vec<Arc<dyn SourceConnector>>,
    sinks: Vec<Arc<dyn SinkConnector>>,
}

impl Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.source_names())
            .field("sinks", &self.sink_names())
            .finish()
    }
}

impl Registry {
    /// Adds a kind of source.
    pub fn source(mut self, connector: impl SourceConnector + 'static) -> Self {
        self.sources.push(Arc::new(connector));
        self
    }

    /// Adds a kind of sink.
    pub fn sink(mut self, connector: impl SinkConnector + 'static) -> Self {
        self.sinks.push(Arc::new(connector));
        self
    }

    /// The source connector called `name` (any case).
    pub fn find_source(&self, name: &str) -> Option<&Arc<dyn SourceConnector>> {
        self.sources
            .iter()
            .find(|connector| connector.name().eq_ignore_ascii_case(name))
    }

    /// The sink connector called `name` (any case).
    pub fn find_sink(&self, name: &str) -> Option<&Arc<dyn SinkConnector>> {
        self.sinks
            .iter()
            .find(|connector| connector.name().eq_ignore_ascii_case(name))
    }

    /// The source connectors' names, quoted, for messages: `'file', 'kafka', …`.
    pub fn source_names(&self) -> String {
        quoted(self.sources.iter().map(|connector| connector.name()))
    }

    /// The names of the source connectors that read tables, quoted, for messages.
    pub fn table_source_names(&self) -> String {
        quoted(
            self.sources
                .iter()
                .filter(|connector| connector.reads_tables())
                .map(|connector| connector.name()),
        )
    }

    /// The sink connectors' names, quoted, for messages.
    pub fn sink_names(&self) -> String {
        quoted(self.sinks.iter().map(|connector| connector.name()))
    }
}

fn quoted(names: impl Iterator<Item = &'static str>) -> String {
    names
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
