//! The `vibelux` command: run, check and explain pipeline files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vibelux::auth::{Role, add_token};
use vibelux::format::{row_text, table};
use vibelux::live::view::Retention;
use vibelux::pipeline::{load_pipeline, query_to_completion};
use vibelux::runtime::cluster::Cluster;
use vibelux::server::audit::default_audit_path;
use vibelux::server::serving::ServeArgs;
use vibelux::state::StateLocation;
use vibelux_queries::planner::{Outcome, Planner};

mod commands;
use commands::run::{StateChoice, default_state_directory, run};

/// Rows are many small allocations, freed on other workers after an exchange: mimalloc handles
/// that pattern far better than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for them on its arenas, and
/// the kernel then zeroes a whole 2 MiB page at each first touch: on this machine that was over
/// half the time of a warehouse query (buffers per column chunk), and the main source of noise in
/// every measurement. Regular pages are zeroed as they are used.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
    unsafe extern "C" {
        fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
    }
    let zero: std::ffi::c_ulong = 0;
    // SAFETY: prctl with PR_SET_THP_DISABLE takes four unsigned long arguments and only sets a
    // flag on this process; a failure (an old kernel) leaves things as they were.
    let _ = unsafe { prctl(PR_SET_THP_DISABLE, 1 as std::ffi::c_ulong, zero, zero, zero) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

#[derive(Parser)]
#[command(
    name = "vibelux",
    version,
    about = "Incremental streaming SQL for controlled-environment agriculture"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: sources feed views, views feed sinks, until the inputs end or Ctrl-C.
    Run {
        /// The pipeline file (SQL).
        file: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Stop after this long (e.g. `30s`, `5m`), as Ctrl-C would.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        run_for: Option<Duration>,
        #[command(flatten)]
        serve: ServeArgs,
        /// History each live view keeps for subscribers that resume or lag: this much event time,
        /// and at least this much wall time (up to 30 s).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        retention: Duration,
        /// And at most about this much memory per live view for that history (e.g. `64MB`,
        /// `1GB`): a subscriber further behind than the history gets a fresh snapshot.
        #[arg(long, default_value = "64MB", value_parser = vibelux_interfaces::options::parse_size)]
        retention_memory: usize,
        /// Keep checkpoints here, and resume from the newest at start (default: `NAME.state`
        /// in the working directory, for the pipeline file `NAME.sql`). An `s3://bucket/prefix`
        /// URL keeps them in S3-compatible object storage (credentials and endpoint from the
        /// `AWS_*` variables; the MQTT journal stays in `NAME.state`).
        #[arg(
            long,
            value_name = "DIR|s3://BUCKET/PREFIX",
            conflicts_with = "no_state"
        )]
        state: Option<String>,
        /// Take no checkpoints and resume from none: a restart starts afresh.
        #[arg(long)]
        no_state: bool,
        /// How often to take a checkpoint.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// Resume an edited pipeline even where the edits drop state: views, alarms and
        /// detectors whose definition changed (or that are gone) lose what they held and
        /// start empty. Without it such a restart is refused and names them.
        #[arg(long, conflicts_with = "no_state")]
        rebuild_changed: bool,
        /// Run as one process of a timely cluster: the processes, `host:port` per line (the
        /// same file for all; each listens on its own line's port). Every process runs the same
        /// pipeline with the same --workers; process 0 writes the sinks and serves the views.
        #[arg(long, env = "VIBELUX_HOSTS")]
        hosts: Option<PathBuf>,
        /// This process's line of --hosts, from 0 (default: the number that ends the host
        /// name, as a StatefulSet names its pods: `vibelux-2` is process 2).
        #[arg(long, env = "VIBELUX_PROCESS", requires = "hosts")]
        process: Option<usize>,
    },
    /// Check a pipeline file: parse, plan and type-check every statement. Exit 0 when valid.
    Check { file: PathBuf },
    /// Print the dataflow each materialized view and sink becomes.
    Explain { file: PathBuf },
    /// Query the Parquet warehouse that `parquet` sinks write (every top-level folder a table).
    Query {
        /// The SQL query (DataFusion's dialect; EXPLAIN works).
        sql: String,
        /// The warehouse folder.
        #[arg(long, default_value = "warehouse")]
        warehouse: PathBuf,
        #[arg(long, value_enum, default_value_t = vibelux::warehouse::OutputFormat::Table)]
        format: vibelux::warehouse::OutputFormat,
    },
    /// Run a simulated device on its own, for pipelines and tools to talk to.
    #[command(subcommand)]
    Sim(Simulated),
    /// Manage who may call the API.
    #[command(subcommand)]
    Auth(Authorizing),
    /// Ask a running engine whether it is healthy: GET the URL (its `/healthz`), exit 0 on
    /// 200 and 1 otherwise, printing the answer. For container health checks, where the image
    /// carries no HTTP client.
    Probe {
        /// e.g. `http://127.0.0.1:8080/healthz`.
        url: String,
    },
    /// Score a series for anomalies: reads `timestamp,value` CSV on stdin (a header line first;
    /// `timestamp,a,b,…` for hst, which scores several values together) and writes one score in
    /// [0, 1] per reading on stdout, flushed at once (empty while the detector warms up), so it
    /// works in a pipe.
    Score {
        /// auto (the highest of seasonal, drift, flatline and gap), zscore, ewma, robust,
        /// seasonal, drift, flatline, gap, or hst (several values).
        #[arg(long)]
        detector: String,
        /// A detector setting, `key=value` (window=60, alpha=0.1, slots=96, days=2, history=500,
        /// recent=1).
        #[arg(long = "option", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
    },
    /// Measure detectors against labelled data: a CSV with `timestamp`, `value` and `label`
    /// columns (label 1/true for anomalous readings), printing precision, recall, F1 and
    /// time-to-detect per detector; or benchmark tables of several sensors per machine in
    /// SKAB's layout (a folder of them, or one: `;`-separated, `datetime`, the sensors,
    /// `anomaly`, `changepoint`), printing F1 with false and missed alarm rates, and NAB's
    /// standard score for change points.
    Evaluate {
        /// The labelled CSV, or a folder of benchmark tables.
        input: Option<PathBuf>,
        /// Evaluate on the simulator's injected faults instead (comma list of hvac_drift,
        /// stuck, spike, dropout): simulated days of a small room, labelled by the ground truth.
        #[arg(long)]
        simulator: Option<String>,
        /// Simulated runs per fault (each two days, its own seed).
        #[arg(long, default_value_t = 5)]
        runs: u64,
        /// Detectors to compare (default: all).
        #[arg(long = "detector")]
        detectors: Vec<String>,
        /// A detector setting, `key=value`, for every detector that takes it.
        #[arg(long = "option", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
        /// Scores at or above this flag a reading: by default beyond 99.99% of what the series
        /// usually scores.
        #[arg(long, default_value_t = 0.9999)]
        threshold: f64,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, found {text:?}"))
}

#[derive(Subcommand)]
enum Authorizing {
    /// Create an API token: prints its secret once and keeps only its hash in the tokens file
    /// that `vibelux run --auth FILE` reads.
    Token {
        /// Who holds it: recorded as the actor of what it does (alarm commands).
        #[arg(long)]
        name: String,
        /// viewer (views, metrics), operator (+ alarm commands), engineer (+ views and sinks
        /// over the API), admin (+ sinks that write to PLCs).
        #[arg(long, value_enum)]
        role: Role,
        /// The tokens file (created if missing).
        #[arg(long, default_value = "vibelux-tokens.toml")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum Simulated {
    /// A grow room's PLC as a Modbus TCP server: the registers of a tag map, moving like HVAC,
    /// CO2 dosing and a dehumidifier would, and answering writes. Runs until Ctrl-C.
    Plc {
        /// The port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 5020)]
        port: u16,
        /// The tag map (TOML) that lays out the registers.
        #[arg(long, default_value = "examples/plc/room1.toml")]
        tags: PathBuf,
        /// The Modbus unit id it answers to.
        #[arg(long, default_value_t = 1)]
        unit_id: u8,
    },
}

fn main() {
    disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            file,
            workers,
            run_for,
            serve,
            retention,
            retention_memory,
            state,
            no_state,
            checkpoint_interval,
            rebuild_changed,
            hosts,
            process,
        } => {
            let state = (!no_state).then(|| match state {
                Some(text) => StateLocation::parse(&text, default_state_directory(&file)),
                None => StateLocation::Directory(default_state_directory(&file)),
            });
            let state = state.map(|location| StateChoice {
                location,
                interval: checkpoint_interval,
                rebuild_changed,
            });
            hosts
                .map(|hosts| Cluster::from_hosts_file(&hosts, process))
                .transpose()
                .and_then(|cluster| {
                    let history = Retention {
                        millis: retention.as_millis() as u64,
                        grace: retention.min(Retention::default().grace),
                        max_bytes: retention_memory,
                    };
                    run(&file, workers, run_for, serve, history, state, cluster)
                })
        }
        Command::Check { file } => check(&file),
        Command::Auth(Authorizing::Token { name, role, file }) => {
            add_token(&file, &name, role)
                .map(|token| {
                    eprintln!(
                        "created token `{}` ({}) in {}; it is shown once, here, and stored only as a hash:",
                        token.name,
                        token.role,
                        file.display()
                    );
                    println!("{}", token.secret);
                })
                .map_err(anyhow::Error::from)
        }
        Command::Probe { url } => commands::probe::probe(&url),
        Command::Score { detector, options } => score(&detector, &options),
        Command::Evaluate {
            input,
            simulator,
            runs,
            detectors,
            options,
            threshold,
        } => evaluate(
            input.as_deref(),
            simulator.as_deref(),
            runs,
            &detectors,
            &options,
            threshold,
        ),
        Command::Sim(Simulated::Plc {
            port,
            tags,
            unit_id,
        }) => simulate_plc(port, &tags, unit_id),
        Command::Explain { file } => explain(&file),
        Command::Query {
            sql,
            warehouse,
            format,
        } => vibelux::warehouse::query(&warehouse, &sql)
            .and_then(|batches| vibelux::warehouse::render(&batches, format))
            .map(|text| {
                use std::io::Write as _;
                let end = if text.ends_with('\n') { "" } else { "\n" };
                // A reader that stops early (`| head`) is not an error.
                let _ = write!(std::io::stdout().lock(), "{text}{end}");
            }),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// `vibelux score`: one line out per line in, each flushed, errors on stderr by line number.
fn score(detector: &str, options: &[(String, String)]) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    // The detector and its options are checked before any input is read.
    vibelux_models::detector::Scorer::new(detector, options)?;
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut lines = stdin.lines().enumerate();
    // `timestamp,value`, or `timestamp,a,b,…` for a detector that scores several together.
    let values = match lines.next() {
        Some((_, header)) => {
            let header = header?;
            let columns = header.split(',').count();
            if columns < 2 {
                anyhow::bail!("line 1: expected a header `timestamp,value`, found {header:?}");
            }
            columns - 1
        }
        None => return Ok(()),
    };
    let mut scorer = vibelux_models::detector::Scorer::for_values(detector, options, values)?;
    writeln!(stdout, "score")?;
    for (index, line) in lines {
        let line = line?;
        let parsed = (|| -> Result<(i64, Vec<f64>), String> {
            let mut fields = line.split(',');
            let ts = fields.next().unwrap_or("");
            let ts = vibelux_connectors::payload::parse_timestamp(ts.trim())
                .map_err(|problem| format!("timestamp: {problem}"))?;
            let numbers = fields
                .map(|value| {
                    value
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| format!("value: expected a number, found {:?}", value.trim()))
                })
                .collect::<Result<Vec<f64>, String>>()?;
            if numbers.len() != values {
                return Err(format!(
                    "expected {values} values after the timestamp, found {}",
                    numbers.len()
                ));
            }
            Ok((ts, numbers))
        })();
        let score = match parsed {
            Ok((ts, numbers)) => scorer.score_values(ts, &numbers),
            Err(problem) => {
                eprintln!("line {}: {problem}", index + 1);
                None
            }
        };
        // A reader that went away (`| head`) ends the run without an error.
        let written = match score {
            Some(score) => writeln!(stdout, "{score:.6}"),
            None => writeln!(stdout),
        };
        if written.and_then(|()| stdout.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// `vibelux evaluate`: labelled series from a CSV or the simulator, a table per detector.
fn evaluate(
    input: Option<&Path>,
    simulator: Option<&str>,
    runs: u64,
    detectors: &[String],
    options: &[(String, String)],
    threshold: f64,
) -> anyhow::Result<()> {
    use vibelux::evaluate as evaluation;
    if let (Some(input), None) = (input, simulator)
        && evaluation::labelled_tables::is_labelled_table(input)
    {
        let (experiments, unlabelled) = evaluation::labelled_tables::read_experiments(input)?;
        for file in unlabelled {
            eprintln!("{}: no `anomaly` column, left out", file.display());
        }
        let readings: usize = experiments.iter().map(|e| e.times.len()).sum();
        let labelled: usize = experiments
            .iter()
            .flat_map(|e| &e.anomalous)
            .filter(|a| **a)
            .count();
        let changes: usize = experiments.iter().map(|e| e.changes.len()).sum();
        println!(
            "{} experiments, {readings} readings, {labelled} labelled anomalous, {changes} change points; threshold {threshold}",
            experiments.len()
        );
        print!(
            "{}",
            evaluation::labelled_tables::report(&experiments, detectors, options, threshold)?
        );
        return Ok(());
    }
    let cases = match (input, simulator) {
        (Some(input), None) => vec![evaluation::from_csv(input)?],
        (None, Some(faults)) => {
            let kinds = faults
                .split(',')
                .map(|name| {
                    vibelux_connectors::simulator::FaultKind::parse(name).with_context(|| {
                        format!("unknown fault {name:?}: use hvac_drift, stuck, spike, dropout")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            evaluation::from_simulator(&kinds, runs)?
        }
        _ => anyhow::bail!("give a labelled CSV file or --simulator FAULTS, not both"),
    };
    let readings: usize = cases
        .iter()
        .flat_map(|case| &case.series)
        .map(Vec::len)
        .sum();
    let labelled: usize = cases
        .iter()
        .flat_map(|case| &case.series)
        .flatten()
        .filter(|point| point.2)
        .count();
    println!("{readings} readings, {labelled} labelled anomalous; threshold {threshold}");
    print!(
        "{}",
        evaluation::report(&cases, detectors, options, threshold)?
    );
    Ok(())
}

fn simulate_plc(port: u16, tags: &Path, unit_id: u8) -> anyhow::Result<()> {
    use vibelux_connectors::modbus::{plc_simulator, tags::TagMap};
    let map = TagMap::load(tags, Duration::from_secs(1)).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        eprintln!(
            "simulated PLC (unit {unit_id}, {} tags from {}) on {}; Ctrl-C stops it",
            map.tags.len(),
            tags.display(),
            listener.local_addr()?
        );
        let room = plc_simulator::GrowRoom::new(std::sync::Arc::new(map));
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopping = stop.clone();
        ctrlc::set_handler(move || stopping.notify_one()).context("handling Ctrl-C")?;
        tokio::select! {
            _ = plc_simulator::serve(room, listener, unit_id) => {}
            _ = stop.notified() => {}
        }
        Ok(())
    })
}

fn check(file: &Path) -> anyhow::Result<()> {
    let (planner, outcomes) = load_pipeline(file, &default_audit_path(file))?;
    for outcome in &outcomes {
        print_outcome(&planner, outcome)?;
    }
    println!("{}: ok", file.display());
    Ok(())
}

fn explain(file: &Path) -> anyhow::Result<()> {
    let (planner, _) = load_pipeline(file, &default_audit_path(file))?;
    print!("{}", planner.explain_pipeline());
    Ok(())
}

/// Prints what a statement did; ad-hoc queries in a file run to completion (bounded inputs).
pub(crate) fn print_outcome(planner: &Planner, outcome: &Outcome) -> anyhow::Result<()> {
    match outcome {
        Outcome::Done(message) => tracing::debug!("{message}"),
        Outcome::Table { columns, rows } => println!("{}", table(columns, rows)),
        Outcome::Text(text) => print!("{text}"),
        Outcome::Query { node } => {
            let rows = query_to_completion(&planner.plan, *node, 1)?;
            let columns: Vec<String> = planner.plan.nodes[*node]
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let rows: Vec<Vec<String>> = rows.iter().map(row_text).collect();
            println!("{}", table(&columns, &rows));
        }
    }
    Ok(())
}
