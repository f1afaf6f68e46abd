//! The alarm benchmark: one engine keeps an alarm instance per sensor over a simulated facility
//! reading in real time, and sinks each transition to a file; this process tails the file.
//! Measured: the engine's CPU share, and the latency from the triggering reading (its event
//! time, the wall clock when the simulator produced it) to the transition leaving the engine
//! (appearing in the sink file).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::measure::{Tail, cpu_seconds, event_millis, now_millis};

#[derive(clap::Args)]
pub struct AlarmArgs {
    /// The vibelux binary.
    #[arg(long)]
    engine: PathBuf,
    /// Working folder.
    #[arg(long)]
    dir: PathBuf,
    /// Sensors, each an alarm instance: rooms of 10 zones × 100 sensors.
    #[arg(long, default_value_t = 10_000)]
    sensors: usize,
    /// Readings per second, all sensors together.
    #[arg(long, default_value_t = 50_000)]
    rate: usize,
    /// How long to measure, after a warm-up.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Timely workers of the engine.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

pub fn run(args: AlarmArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let rooms = args.sensors.div_ceil(1_000).max(1);
    let sensors = rooms * 1_000;
    let interval_ms = (sensors as f64 * 1_000.0 / args.rate as f64)
        .round()
        .max(1.0) as u64;
    let sql = format!(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
           temp_c DOUBLE, WATERMARK FOR ts AS ts)
         WITH (connector = 'simulator', rooms = '{rooms}', zones_per_room = '10',
               sensors_per_zone = '100', interval = '{interval_ms}ms', speed = 'realtime',
               seed = '9');
         -- The reading's hundredths pick 1 % of readings to raise and half of the rest to
         -- clear: every instance raises and clears now and then, whatever the time of day.
         CREATE ALARM warm ON readings PER sensor_id
           WHEN round(temp_c * 100) % 100 = 99 CLEAR WHEN round(temp_c * 100) % 100 < 50
           SEVERITY 'high' MESSAGE '{{sensor_id}} at {{temp_c}} °C';
         CREATE SINK actions FROM warm WITH (connector = 'file', path = 'actions.jsonl');"
    );
    std::fs::write(args.dir.join("alarms.sql"), sql)?;
    let _ = std::fs::remove_file(args.dir.join("actions.jsonl"));
    let mut engine: Child = Command::new(&args.engine)
        .current_dir(&args.dir)
        .args([
            "run",
            "alarms.sql",
            "--http",
            "off",
            "--no-state",
            "--workers",
        ])
        .arg(args.workers.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(args.dir.join("engine.log"))?)
        .spawn()
        .context("starting the engine")?;
    let mut tail = Tail::new(args.dir.join("actions.jsonl"));
    let warm_up = Instant::now() + Duration::from_secs(5);
    let mut measuring_since: Option<(Instant, f64)> = None;
    let mut latencies: Vec<i64> = Vec::new();
    loop {
        let now = Instant::now();
        if measuring_since.is_none() && now >= warm_up {
            measuring_since = Some((now, cpu_seconds(engine.id())?));
        }
        if let Some((since, _)) = measuring_since
            && now - since >= args.duration
        {
            break;
        }
        let lines = tail.lines();
        if measuring_since.is_some() {
            let arrived = now_millis();
            latencies.extend(
                lines
                    .iter()
                    .filter_map(|line| event_millis(line))
                    .map(|ts| arrived - ts),
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (since, cpu_before) = measuring_since.expect("measured");
    let seconds = since.elapsed().as_secs_f64();
    let cpu = cpu_seconds(engine.id())? - cpu_before;
    let _ = Command::new("kill")
        .args(["-INT", &engine.id().to_string()])
        .status();
    let _ = engine.wait();
    let log = std::fs::read_to_string(args.dir.join("engine.log")).unwrap_or_default();
    let read = log
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("readings: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    latencies.sort_unstable();
    let percentile = |p: f64| -> i64 {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{sensors} alarm instances, readings every {interval_ms} ms ({} rows/s offered; {read} read in the whole run), {} worker(s)",
        sensors as u64 * 1_000 / interval_ms,
        args.workers
    );
    println!(
        "transitions: {} in {seconds:.1} s ({:.0}/s)",
        latencies.len(),
        latencies.len() as f64 / seconds
    );
    println!(
        "engine CPU: {:.2} cores ({:.0}% of this machine's {cores}); reading-to-action latency ms: p50 {} p90 {} p99 {} max {}",
        cpu / seconds,
        100.0 * cpu / seconds / cores as f64,
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        percentile(1.0)
    );
    Ok(())
}
