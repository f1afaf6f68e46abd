//! The `vibelux` command: run, check and explain pipeline files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;
use vibelux::auth::{Role, add_token};
use vibelux::control::Control;
use vibelux::format::{row_text, table};
use vibelux::live::view::Retention;
use vibelux::pipeline::{load_pipeline, query_to_completion};
use vibelux::runtime::{Durability, Run, RunOptions, start};
use vibelux::server::postgres::PgServer;
use vibelux::server::serving::{HttpAddress, ServeArgs};
use vibelux::server::tls::TlsAcceptors;
use vibelux::server::{Server, ServerState};
use vibelux::state::{StateLocation, StateOptions, pipeline_fingerprint};
use vibelux_queries::planner::{Outcome, Planner};

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
    /// Measure detectors against a labelled series: a CSV with `timestamp`, `value` and `label`
    /// columns (label 1/true for anomalous readings). Prints precision, recall, F1 and
    /// time-to-detect per detector.
    Evaluate {
        /// The labelled CSV.
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
            state,
            no_state,
            checkpoint_interval,
            rebuild_changed,
        } => {
            let state = (!no_state).then(|| match state {
                Some(text) => StateLocation::parse(&text, default_state_directory(&file)),
                None => StateLocation::Directory(default_state_directory(&file)),
            });
            run(
                &file,
                workers,
                run_for,
                serve,
                retention,
                state.map(|location| StateChoice {
                    location,
                    interval: checkpoint_interval,
                    rebuild_changed,
                }),
            )
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
    let (planner, outcomes) = load_pipeline(file)?;
    for outcome in &outcomes {
        print_outcome(&planner, outcome)?;
    }
    println!("{}: ok", file.display());
    Ok(())
}

fn explain(file: &Path) -> anyhow::Result<()> {
    let (planner, _) = load_pipeline(file)?;
    print!("{}", planner.explain_pipeline());
    Ok(())
}

/// Prints what a statement did; ad-hoc queries in a file run to completion (bounded inputs).
fn print_outcome(planner: &Planner, outcome: &Outcome) -> anyhow::Result<()> {
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

/// `greenhouse.sql` keeps its state in `greenhouse.state/` in the working directory, beside
/// what its relative paths write (`out/…`, `warehouse/…`): the state goes with the outputs it
/// describes.
fn default_state_directory(pipeline: &Path) -> PathBuf {
    let stem = pipeline.file_stem().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("{stem}.state"))
}

fn run(
    file: &Path,
    workers: usize,
    run_for: Option<Duration>,
    serve: ServeArgs,
    retention: Duration,
    state: Option<StateChoice>,
) -> anyhow::Result<()> {
    let http = serve.http;
    // Who may call is settled before anything starts: a refused address starts nothing.
    let pg = serve.pg_address();
    let access = match (http, pg) {
        (HttpAddress::At(address), _) | (HttpAddress::Off, Some((address, _))) => {
            Some(serve.access(address)?)
        }
        (HttpAddress::Off, None) => None,
    };
    let tls = serve.tls()?;
    let limits = serve.limits()?;
    let audit = match access {
        Some(_) => serve.audit(file)?.map(Arc::new),
        None => None,
    };
    let (planner, outcomes) = load_pipeline(file)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    for outcome in &outcomes {
        if !matches!(outcome, Outcome::Done(_)) {
            print_outcome(&planner, outcome)?;
        }
    }
    let plan = Arc::new(planner.plan.clone());
    if plan.sinks.is_empty() && plan.materialized.is_empty() {
        anyhow::bail!(
            "{} defines no sink or materialized view, so there is nothing to run",
            file.display()
        );
    }
    announce(&planner, workers);

    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = stop.clone();
    let keeps_open_windows = Arc::new(AtomicBool::new(false));
    let checkpointed = keeps_open_windows.clone();
    // Ctrl-C, and SIGTERM (docker stop, Kubernetes) and SIGHUP: stop cleanly, so sinks finish
    // and brokers get their final acknowledgements and offset commits.
    ctrlc::set_handler(move || {
        if interrupted.swap(true, Ordering::Relaxed) {
            eprintln!("stopping now");
            std::process::exit(130);
        }
        if checkpointed.load(Ordering::Relaxed) {
            eprintln!(
                "stopping: sources close, open windows go into the last checkpoint (Ctrl-C again to quit at once)"
            );
        } else {
            eprintln!(
                "stopping: sources close, open windows are discarded (Ctrl-C again to quit at once)"
            );
        }
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;

    let retention_settings = Retention {
        millis: retention.as_millis() as u64,
        grace: retention.min(Retention::default().grace),
        ..Retention::default()
    };
    let started = Instant::now();
    let run = start(
        plan,
        RunOptions {
            workers,
            stop: stop.clone(),
            capture: Vec::new(),
            retention: retention_settings,
            extensible: access.is_some(),
            state: state.map(|choice| StateOptions {
                location: choice.location,
                interval: choice.interval,
                pipeline: pipeline_fingerprint(&text),
                rebuild_changed: choice.rebuild_changed,
            }),
        },
    )?;
    announce_durability(&run.durability);
    if matches!(run.durability, Durability::On { .. }) {
        keeps_open_windows.store(true, Ordering::Relaxed);
    }
    let mut added_sinks = None;
    let mut servers = None;
    if let Some(access) = access {
        let control = Control::new(
            planner.clone(),
            run.commands.clone(),
            run.metrics.views.clone(),
            retention_settings,
        )
        .with_limits(limits);
        added_sinks = Some(control.added_sinks.clone());
        let state = Arc::new(ServerState {
            views: run.metrics.views.clone(),
            metrics: run.metrics.clone(),
            started,
            control: Some(Arc::new(control)),
            access: Arc::new(access),
            audit,
        });
        servers = Some(start_servers(state, http, pg, tls)?);
    }
    let metrics = run.metrics.clone();
    let monitor_stop = stop.clone();
    let finished = Arc::new(AtomicBool::new(false));
    let monitor_finished = finished.clone();
    let monitor = std::thread::spawn(move || {
        monitor_run(&metrics, run_for, started, &monitor_stop, &monitor_finished)
    });
    let result = Run::join(run);
    finished.store(true, Ordering::Relaxed);
    let metrics = monitor.join().expect("monitor thread");
    drop(servers);
    report(&metrics, started.elapsed());
    result?;
    if let Some(added) = added_sinks {
        report_added_sinks(&added);
    }
    Ok(())
}

/// Starts the HTTP server and the Postgres port that a run serves.
fn start_servers(
    state: Arc<ServerState>,
    http: HttpAddress,
    pg: Option<(std::net::SocketAddr, bool)>,
    tls: Option<TlsAcceptors>,
) -> anyhow::Result<(Option<Server>, Option<PgServer>)> {
    let guarded = state.access.tokens.is_some();
    if let Some(audit) = &state.audit {
        eprintln!(
            "  audit: changes and refusals over the API go to {} (--audit-log FILE|off)",
            audit.path().display()
        );
    }
    let server = match http {
        HttpAddress::Off => None,
        HttpAddress::At(address) => {
            let server =
                Server::start(address, state.clone(), tls.as_ref().map(|t| t.http.clone()))?;
            eprintln!(
                "vibelux: serving {}://{} (dashboard; API under /v1; /metrics){}",
                if tls.is_some() { "https" } else { "http" },
                server.address,
                if guarded { "; tokens required" } else { "" }
            );
            Some(server)
        }
    };
    let encrypted = tls.is_some();
    let pg = match pg {
        None => None,
        Some((address, chosen)) => match PgServer::start(address, state, tls.map(|t| t.pg)) {
            Ok(pg) => {
                eprintln!(
                    "vibelux: serving postgres://{} (psql -h {} -p {}){}{}",
                    pg.address,
                    pg.address.ip(),
                    pg.address.port(),
                    if guarded {
                        "; the password is a token"
                    } else {
                        ""
                    },
                    if encrypted { "; TLS" } else { "" }
                );
                Some(pg)
            }
            Err(error) if !chosen && error.kind() == std::io::ErrorKind::AddrInUse => {
                eprintln!(
                    "vibelux: not serving Postgres: {address} is taken (another run?); choose a port with --pg ADDR"
                );
                None
            }
            Err(error) => {
                anyhow::bail!(
                    "cannot serve Postgres on {address}: {error} (choose another with --pg ADDR, or --pg off)"
                )
            }
        },
    };
    Ok((server, pg))
}

/// Sinks created while running (`POST /v1/sql`) and not dropped.
fn report_added_sinks(added: &vibelux::control::AddedSinks) {
    let sinks = added.sinks.lock().unwrap_or_else(|p| p.into_inner());
    if sinks.is_empty() {
        return;
    }
    let parts: Vec<String> = sinks
        .iter()
        .map(|(name, sink)| {
            let errors = sink.write_errors.load(Ordering::Relaxed);
            let written = sink.rows_written.load(Ordering::Relaxed);
            if errors > 0 {
                format!("{name}: {written} written, {errors} could not be written")
            } else {
                format!("{name}: {written} written")
            }
        })
        .collect();
    eprintln!("  added while running: {}", parts.join("; "));
}

/// Where `vibelux run` keeps state, as the command line chose.
struct StateChoice {
    location: StateLocation,
    interval: Duration,
    rebuild_changed: bool,
}

/// Says where the run keeps its state, or why it keeps none.
fn announce_durability(durability: &Durability) {
    match durability {
        Durability::Off => {
            eprintln!("  state: none (--no-state): a restart starts afresh");
        }
        Durability::Unsupported(reasons) => {
            eprintln!("  state: none, a restart starts afresh; not checkpointed because:");
            for reason in reasons {
                eprintln!("    - {reason}");
            }
        }
        Durability::On {
            location,
            interval,
            resumed,
            notes,
        } => {
            eprintln!(
                "  state: {location} (a checkpoint every {}; --state DIR to keep it elsewhere)",
                humantime::format_duration(*interval)
            );
            match resumed {
                None => eprintln!("  starting afresh: no checkpoint there yet"),
                Some((0, _, _)) => eprintln!(
                    "  starting afresh: the last run ended before its first checkpoint (its outputs are cut back to where they stood before it)"
                ),
                Some((id, taken_at, last)) => eprintln!(
                    "  resuming from checkpoint {id} taken at {taken_at}{}",
                    if *last {
                        " when the last run ended"
                    } else {
                        ""
                    }
                ),
            }
            for note in notes {
                eprintln!("  {}", note.replace('\n', "\n  "));
            }
        }
    }
}

/// Says what is running and where results go.
fn announce(planner: &Planner, workers: usize) {
    let plan = &planner.plan;
    eprintln!(
        "vibelux: running with {workers} worker{}",
        if workers == 1 { "" } else { "s" }
    );
    for source in &plan.sources {
        let bounded = if source.spec.is_bounded() {
            "replay"
        } else {
            "live"
        };
        eprintln!(
            "  source {} ({} {bounded}) ← {}",
            source.name,
            source.spec.connector(),
            source.spec.describe()
        );
    }
    for (name, _) in &plan.materialized {
        eprintln!("  materialized view {name}");
    }
    for sink in &plan.sinks {
        let target = sink.target.describe();
        eprintln!("  sink {} ← {} → {target}", sink.name, sink.from);
    }
    eprintln!("  Ctrl-C stops");
}

/// Shows progress while the run goes on; stops it after `run_for`. Returns the metrics to report.
fn monitor_run(
    metrics: &Arc<vibelux::runtime::RunMetrics>,
    run_for: Option<Duration>,
    started: Instant,
    stop: &AtomicBool,
    finished: &AtomicBool,
) -> Arc<vibelux::runtime::RunMetrics> {
    let total: u64 = metrics
        .replay
        .iter()
        .map(|(_, p)| p.total_bytes.load(Ordering::Relaxed))
        .sum();
    let bar = (!metrics.replay.is_empty()).then(|| {
        let bar = ProgressBar::new(total.max(1));
        bar.set_style(
            ProgressStyle::with_template("{spinner} replay [{bar:30}] {bytes}/{total_bytes} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut last_status = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(limit) = run_for
            && started.elapsed() >= limit
            && !stop.swap(true, Ordering::Relaxed)
        {
            eprintln!("stopping after {}", humantime::format_duration(limit));
        }
        let rows: u64 = metrics
            .sources
            .iter()
            .map(|(_, m)| m.rows.load(Ordering::Relaxed))
            .sum();
        if let Some(bar) = &bar {
            let total: u64 = metrics
                .replay
                .iter()
                .map(|(_, p)| p.total_bytes.load(Ordering::Relaxed))
                .sum();
            let read: u64 = metrics
                .replay
                .iter()
                .map(|(_, p)| p.bytes_read.load(Ordering::Relaxed))
                .sum();
            bar.set_length(total.max(1));
            bar.set_position(read);
            bar.set_message(format!("{rows} rows"));
        } else if last_status.elapsed() >= Duration::from_secs(5) {
            last_status = Instant::now();
            tracing::info!("{}", status_line(metrics));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    metrics.clone()
}

fn status_line(metrics: &vibelux::runtime::RunMetrics) -> String {
    let mut parts = Vec::new();
    for (name, source) in &metrics.sources {
        parts.push(format!(
            "{name}: {} rows, {} dead letters, {} late",
            source.rows.load(Ordering::Relaxed),
            source.dead_letters.load(Ordering::Relaxed),
            source.late_rows.load(Ordering::Relaxed)
        ));
    }
    for view in metrics.views.all() {
        parts.push(format!("{}: {} rows", view.name, view.len()));
    }
    for (name, sink) in &metrics.sinks {
        parts.push(format!(
            "{name}: {} written",
            sink.rows_written.load(Ordering::Relaxed)
        ));
    }
    parts.join("; ")
}

fn report(metrics: &vibelux::runtime::RunMetrics, elapsed: Duration) {
    let rows: u64 = metrics
        .sources
        .iter()
        .map(|(_, m)| m.rows.load(Ordering::Relaxed))
        .sum();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "vibelux: done in {:.2}s ({:.0} rows/s)",
        seconds,
        rows as f64 / seconds
    );
    eprintln!("  {}", status_line(metrics));
    let write_errors: u64 = metrics
        .sinks
        .iter()
        .map(|(_, s)| s.write_errors.load(Ordering::Relaxed))
        .sum();
    if write_errors > 0 {
        eprintln!("  {write_errors} rows could not be written (see errors above)");
    }
    for (view, calcs) in &metrics.expression_errors {
        let failed: u64 = calcs
            .iter()
            .map(|calc| calc.failed_rows.load(Ordering::Relaxed))
            .sum();
        if failed > 0 {
            eprintln!("  {view}: {failed} rows failed to evaluate (kept in {view}_errors)");
        }
    }
}
