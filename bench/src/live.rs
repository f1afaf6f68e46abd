//! The live-view benchmark client: writes timestamped readings into the file a running engine
//! tails, while WebSocket subscribers measure how long each row takes to reach them.
//!
//! Each line carries `sent_us`, the wall clock (µs) when it was written; the benchmark view keeps
//! the latest `sent_us` per sensor, so every `+1` row a subscriber receives says when the row
//! behind it entered. Latency = receive time − `sent_us`, per row, per subscriber.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct LiveArgs {
    /// The engine's address (host:port).
    #[arg(long)]
    address: String,
    /// The file the engine's source tails.
    #[arg(long, required_unless_present = "mqtt")]
    file: Option<PathBuf>,
    /// Publish rows to this MQTT broker (host:port), on `bench/{sensor}` at QoS 1, instead of
    /// writing a file.
    #[arg(long)]
    mqtt: Option<String>,
    /// Rows written per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Distinct sensors the rows cycle through.
    #[arg(long, default_value_t = 1_000)]
    sensors: u64,
    /// Concurrent subscribers of the view.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// How long to write and measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The view to subscribe to.
    #[arg(long, default_value = "latest")]
    view: String,
    /// How many subscribers (spread over all) parse messages and measure latency; the others
    /// only read (the load generator shares the machine with the engine).
    #[arg(long, default_value_t = 1000)]
    measured: usize,
    /// A token for an engine run with `--auth` (sent as `access_token`, as a browser does).
    #[arg(long)]
    token: Option<String>,
    /// Subscribe over `wss://`, trusting this CA certificate (PEM), to an engine run with
    /// `--tls-cert`/`--tls-key`.
    #[arg(long)]
    ca: Option<PathBuf>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

/// Where rows go: appended to the tailed file, or published one message each.
enum RowTarget {
    File(std::fs::File),
    Mqtt(crate::mqtt::Publisher),
}

impl RowTarget {
    fn open(args: &LiveArgs) -> anyhow::Result<RowTarget> {
        Ok(match (&args.mqtt, &args.file) {
            (Some(broker), _) => {
                RowTarget::Mqtt(crate::mqtt::Publisher::connect(broker, "bench-live", 1)?)
            }
            (None, Some(path)) => RowTarget::File(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            (None, None) => anyhow::bail!("--file or --mqtt"),
        })
    }

    /// Writes JSON lines (one row per line).
    fn write(&mut self, lines: &str) -> anyhow::Result<()> {
        match self {
            RowTarget::File(file) => file.write_all(lines.as_bytes())?,
            RowTarget::Mqtt(publisher) => {
                for line in lines.lines() {
                    let sensor = line
                        .split('"')
                        .nth(3)
                        .context("rows start with the sensor id")?;
                    publisher.publish(format!("bench/{sensor}"), line.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `rate` rows per second in 1 ms slices until `stop`.
fn write_rows(args: &LiveArgs, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut file = RowTarget::open(args)?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        if due > written {
            line.clear();
            let sent = now_micros();
            for i in written..due {
                use std::fmt::Write as _;
                let _ = writeln!(
                    line,
                    "{{\"sensor_id\":\"s{:05}\",\"ts\":{},\"sent_us\":{sent}}}",
                    i % args.sensors,
                    sent / 1000
                );
            }
            file.write(&line)?;
            written = due;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(written)
}

#[derive(Default)]
struct Subscriber {
    snapshot_after: Option<Duration>,
    latencies_us: Vec<u32>,
    /// Why the subscription ended early.
    failed: Option<String>,
}

/// What every subscriber of a run shares.
struct Run {
    address: String,
    path: String,
    tls: Option<tokio_rustls::TlsConnector>,
    started: Instant,
    /// Subscribers that have their snapshot.
    snapshots: AtomicUsize,
    /// Latencies are recorded while this is set.
    measuring: AtomicBool,
}

async fn subscribe(run: Arc<Run>, measure: bool, result: Arc<std::sync::Mutex<Subscriber>>) {
    if let Err(error) = follow(&run, measure, &result).await {
        result.lock().expect("not poisoned").failed = Some(format!("{error:#}"));
    }
}

/// Reads the subscription until the connection ends (or the task is aborted at the end of the
/// run: no timer or stop signal is polled per message, which for ten thousand subscribers would
/// cost the client more than reading does).
async fn follow(
    run: &Run,
    measure: bool,
    result: &std::sync::Mutex<Subscriber>,
) -> anyhow::Result<()> {
    let mut socket =
        crate::subscriber::Subscriber::connect(&run.address, &run.path, run.tls.as_ref()).await?;
    while let Some(text) = socket.next_text().await? {
        if !measure {
            // Only some subscribers parse (the client shares the machine with the engine); the
            // rest just read. Messages start with their type.
            if text.starts_with(b"{\"type\":\"snapshot\"") {
                result.lock().expect("not poisoned").snapshot_after = Some(run.started.elapsed());
                run.snapshots.fetch_add(1, Ordering::Relaxed);
            } else if memchr::memmem::find(text, b"\"type\":\"error\"").is_some() {
                anyhow::bail!("subscription ended: {}", String::from_utf8_lossy(text));
            }
            continue;
        }
        let received = now_micros();
        let message: serde_json::Value = serde_json::from_slice(text)?;
        let mut result = result.lock().expect("not poisoned");
        match message["type"].as_str() {
            Some("snapshot") => {
                result.snapshot_after = Some(run.started.elapsed());
                run.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            Some("updates") if run.measuring.load(Ordering::Relaxed) => {
                for entry in message["updates"].as_array().into_iter().flatten() {
                    if entry["diff"].as_i64() == Some(1)
                        && let Some(sent) = entry["row"]["sent_us"].as_i64()
                    {
                        result
                            .latencies_us
                            .push((received - sent).clamp(0, u32::MAX as i64) as u32);
                    }
                }
            }
            Some("error") => anyhow::bail!("subscription ended: {}", message["reason"]),
            _ => {}
        }
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = Arc::new(Run {
        address: args.address.clone(),
        path: match &args.token {
            Some(token) => format!("/v1/views/{}/subscribe?access_token={token}", args.view),
            None => format!("/v1/views/{}/subscribe", args.view),
        },
        tls: args
            .ca
            .as_deref()
            .map(crate::subscriber::tls_client)
            .transpose()?,
        started: Instant::now(),
        snapshots: AtomicUsize::new(0),
        measuring: AtomicBool::new(false),
    });
    let measure_every = args.subscribers.div_ceil(args.measured.max(1)).max(1);
    let results: Vec<Arc<std::sync::Mutex<Subscriber>>> =
        (0..args.subscribers).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = results
        .iter()
        .enumerate()
        .map(|(i, result)| {
            runtime.spawn(subscribe(
                run.clone(),
                i % measure_every == 0,
                result.clone(),
            ))
        })
        .collect();
    // Everyone has a snapshot before rows flow.
    let deadline = Instant::now() + Duration::from_secs(120);
    let failed = || {
        results
            .iter()
            .filter(|result| result.lock().expect("not poisoned").failed.is_some())
            .count()
    };
    while run.snapshots.load(Ordering::Relaxed) + failed() < args.subscribers
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if failed() == args.subscribers && args.subscribers > 0 {
        let first = results[0].lock().expect("not poisoned").failed.clone();
        anyhow::bail!(
            "every subscriber failed; the first: {}",
            first.unwrap_or_default()
        );
    }
    let all_snapshots = run.started.elapsed();
    // Warm up for a second, then measure.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let args = LiveArgs {
            address: args.address.clone(),
            file: args.file.clone(),
            mqtt: args.mqtt.clone(),
            view: args.view.clone(),
            ..args
        };
        std::thread::spawn(move || write_rows(&args, &stop))
    };
    std::thread::sleep(Duration::from_secs(1));
    run.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(args.duration);
    run.measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer thread")?;
    std::thread::sleep(Duration::from_millis(500));
    for task in &tasks {
        task.abort();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    let results: Vec<Subscriber> = results
        .iter()
        .map(|result| std::mem::take(&mut *result.lock().expect("not poisoned")))
        .collect();
    if let Some(failed) = results.iter().find_map(|r| r.failed.clone()) {
        let count = results.iter().filter(|r| r.failed.is_some()).count();
        anyhow::bail!("{count} subscriptions failed, for example: {failed}");
    }
    let snapshot_count = results
        .iter()
        .filter(|r| r.snapshot_after.is_some())
        .count();
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    println!(
        "rate {} rows/s, {} subscribers: {snapshot_count}/{} connected with a snapshot after {:.0} ms; wrote {written} rows; {} row updates received by the {} measuring subscribers",
        args.rate,
        args.subscribers,
        args.subscribers,
        all_snapshots.as_secs_f64() * 1000.0,
        latencies.len(),
        args.subscribers.div_ceil(measure_every)
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    Ok(())
}
