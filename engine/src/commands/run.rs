//! `vibelux run`: starting a pipeline, serving it (HTTP, Postgres), watching it run and
//! reporting when it ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use vibelux::control::Control;
use vibelux::live::view::Retention;
use vibelux::pipeline::load_pipeline;
use vibelux::runtime::cluster::Cluster;
use vibelux::runtime::{Durability, Run, RunOptions, start};
use vibelux::server::audit::default_audit_path;
use vibelux::server::postgres::PgServer;
use vibelux::server::serving::{HttpAddress, ServeArgs};
use vibelux::server::tls::TlsAcceptors;
use vibelux::server::{ClusterPlace, Server, ServerState};
use vibelux::state::{StateLocation, StateOptions, pipeline_fingerprint};
use vibelux_queries::planner::{Outcome, Planner};

use crate::print_outcome;

/// `greenhouse.sql` keeps its state in `greenhouse.state/` in the working directory, beside
/// what its relative paths write (`out/…`, `warehouse/…`): the state goes with the outputs it
/// describes.
pub fn default_state_directory(pipeline: &Path) -> PathBuf {
    let stem = pipeline.file_stem().unwrap_or_default().to_string_lossy();
    PathBuf::from(format!("{stem}.state"))
}

pub fn run(
    file: &Path,
    workers: usize,
    run_for: Option<Duration>,
    serve: ServeArgs,
    retention_settings: Retention,
    state: Option<StateChoice>,
    mut cluster: Option<Cluster>,
) -> anyhow::Result<()> {
    let http = serve.http;
    // Who may call is settled before anything starts: a refused address starts nothing.
    // Process 0 of a cluster serves the Postgres port; the others only HTTP's /metrics.
    let pg = serve
        .pg_address()
        .filter(|_| cluster.as_ref().is_none_or(Cluster::is_first));
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
    let audit_trail = serve
        .audit_path(file)
        .unwrap_or_else(|| default_audit_path(file));
    let (planner, outcomes) = load_pipeline(file, &audit_trail)?;
    let reads_trail = planner
        .plan
        .sources
        .iter()
        .find(|source| source.spec.connector() == "audit");
    // In a cluster the trail is read on process 0, which serves the API that writes it.
    let reads_trail = reads_trail.filter(|_| cluster.as_ref().is_none_or(Cluster::is_first));
    if let (None, Some(reader)) = (&audit, reads_trail) {
        anyhow::bail!(
            "source `{}` reads the audit trail, but this run keeps none: {}",
            reader.name,
            if access.is_none() {
                "it serves no API (give --http or --pg)"
            } else {
                "--audit-log is off"
            }
        );
    }
    if let Some(cluster) = &cluster {
        let reasons = Cluster::unsupported(&planner.plan);
        if !reasons.is_empty() {
            anyhow::bail!(
                "{} cannot run as a cluster yet:\n  {}",
                file.display(),
                reasons.join("\n  ")
            );
        }
        vibelux::runtime::cluster::exit_when_the_cluster_breaks(cluster.process);
        eprintln!(
            "vibelux: process {} of a cluster of {} ({} workers each; process 0 writes the sinks and serves the views)",
            cluster.process,
            cluster.processes(),
            workers
        );
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(cluster) = &mut cluster {
        cluster.pipeline = pipeline_fingerprint(&text);
    }
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

    let started = Instant::now();
    let run = start(
        plan,
        RunOptions {
            workers,
            stop: stop.clone(),
            capture: Vec::new(),
            retention: retention_settings,
            // In a cluster process 0 serves the API and passes statements on to the others
            // (every process must serve HTTP or none: the greeting checks).
            extensible: access.is_some(),
            state: state.map(|choice| StateOptions {
                location: choice.location,
                interval: choice.interval,
                pipeline: pipeline_fingerprint(&text),
                rebuild_changed: choice.rebuild_changed,
            }),
            cluster: cluster.clone(),
        },
    )?;
    announce_durability(&run.durability);
    if matches!(run.durability, Durability::On { .. }) {
        keeps_open_windows.store(true, Ordering::Relaxed);
    }
    let mut added_sinks = None;
    let mut servers = None;
    if let Some(access) = access {
        let mut control = Control::new(
            planner.clone(),
            run.commands.clone(),
            run.metrics.views.clone(),
            retention_settings,
        )
        .with_limits(limits);
        if let (Some(relay), Some(cluster)) = (&run.statements, &cluster) {
            control = control.in_cluster(relay, cluster.is_first());
        }
        let control = Arc::new(control);
        if let (Some(relay), Some(cluster)) = (&run.statements, &cluster)
            && !cluster.is_first()
        {
            // Requests process 0 applied, applied here alike. One that fails here would leave
            // the processes with different dataflows: the cluster stops instead (the panic
            // hook turns this into one line and an exit).
            let follower = control.clone();
            let process = cluster.process;
            relay.apply_with(move |sql| {
                if let Err(error) = follower.apply_statements(sql, true) {
                    panic!(
                        "process {process} of the cluster cannot apply a request process 0 \
                         applied ({error}); stopping"
                    );
                }
            });
        }
        added_sinks = Some(control.added_sinks.clone());
        let state = Arc::new(ServerState {
            views: run.metrics.views.clone(),
            metrics: run.metrics.clone(),
            started,
            control: cluster
                .as_ref()
                .is_none_or(Cluster::is_first)
                .then_some(control),
            access: Arc::new(access),
            audit,
            cluster: cluster.as_ref().map(|cluster| ClusterPlace {
                process: cluster.process,
                first: cluster.hosts[0].clone(),
            }),
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
pub struct StateChoice {
    pub location: StateLocation,
    pub interval: Duration,
    pub rebuild_changed: bool,
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
