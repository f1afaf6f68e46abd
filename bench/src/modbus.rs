//! The Modbus polling benchmark: many simulated PLCs in this process, one engine polling them
//! all over loopback Modbus TCP, and the rows timed as they reach the engine's sinks.
//!
//! Each row's `ts` is when its poll ran; latency = when the line appeared in its sink file − ts
//! (files are checked every 2 ms, and `ts` is written to the millisecond).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::measure::{Tail, cpu_seconds, event_millis, now_millis};
use vibelux_connectors::modbus::plc_simulator::{GrowRoom, serve};
use vibelux_connectors::modbus::tags::TagMap;

#[derive(clap::Args)]
pub struct PollArgs {
    /// The engine binary.
    #[arg(long)]
    engine: PathBuf,
    /// A folder to work in (tag map, pipeline, sink files).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    devices: usize,
    #[arg(long, default_value_t = 200)]
    tags: usize,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to measure, after a warm-up of three intervals.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// A tag map of `count` tags: a realistic mix of types, contiguous by area.
fn tag_map(count: usize) -> String {
    let mut text = String::new();
    let mut holding = 0u32;
    let mut coil = 0u32;
    for i in 0..count {
        let (register, kind, width) = match i % 5 {
            0 | 1 => ("holding", "uint16", 1),
            2 => ("holding", "float32", 2),
            3 => ("holding", "int32", 2),
            _ => ("coil", "bool", 1),
        };
        let address = if register == "coil" {
            coil += 1;
            coil - 1
        } else {
            holding += width;
            holding - width
        };
        text.push_str(&format!(
            "[[tag]]\nname = \"t{i:03}\"\nregister = \"{register}\"\naddress = {address}\ntype = \"{kind}\"\nscale = 0.1\n\n"
        ));
    }
    text
}

pub fn poll(args: PollArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let tags_path = args.dir.join("tags.toml");
    std::fs::write(&tags_path, tag_map(args.tags))?;
    let map = Arc::new(TagMap::load(&tags_path, args.interval).map_err(anyhow::Error::msg)?);
    // The devices: one simulated PLC per port, on this process's runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut ports = Vec::new();
    for _ in 0..args.devices {
        let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
        ports.push(listener.local_addr()?.port());
        runtime.spawn(serve(GrowRoom::new(map.clone()), listener, 1));
    }
    let mut sql = String::new();
    for (device, port) in ports.iter().enumerate() {
        sql.push_str(&format!(
            "CREATE SOURCE d{device:03} (device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, quality TEXT,
               WATERMARK FOR ts AS ts)
             WITH (connector = 'modbus', host = '127.0.0.1', port = '{port}', tags = '{}',
                   poll_interval = '{}ms', timeout = '2s');
             CREATE SINK d{device:03}_rows FROM d{device:03}
               WITH (connector = 'file', path = 'd{device:03}.jsonl');\n",
            tags_path.display(),
            args.interval.as_millis()
        ));
    }
    std::fs::write(args.dir.join("poll.sql"), sql)?;
    let mut engine: Child = Command::new(&args.engine)
        .current_dir(&args.dir)
        .args(["run", "poll.sql", "--http", "off", "--no-state"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(args.dir.join("engine.log"))?)
        .spawn()
        .context("starting the engine")?;
    let mut tails: Vec<Tail> = (0..args.devices)
        .map(|device| Tail::new(args.dir.join(format!("d{device:03}.jsonl"))))
        .collect();
    let warm_up = Instant::now() + args.interval * 3;
    let mut measuring_since: Option<(Instant, f64)> = None;
    let mut latencies: Vec<i64> = Vec::new();
    let mut rows = 0u64;
    let mut bad = 0u64;
    let mut per_device: HashMap<usize, u64> = HashMap::new();
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
        for (device, tail) in tails.iter_mut().enumerate() {
            let lines = tail.lines();
            if measuring_since.is_none() {
                continue;
            }
            let arrived = now_millis();
            for line in lines {
                let Some(polled) = event_millis(&line) else {
                    continue;
                };
                rows += 1;
                if line.contains("\"bad\"") {
                    bad += 1;
                }
                *per_device.entry(device).or_default() += 1;
                latencies.push(arrived - polled);
            }
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
    latencies.sort_unstable();
    let percentile = |p: f64| -> i64 {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    let expected = (args.devices * args.tags) as f64 / args.interval.as_secs_f64();
    println!(
        "{} devices × {} tags every {:?}: {:.0} tags/s sustained (expected {expected:.0}), {bad} bad; {} of {} devices delivered",
        args.devices,
        args.tags,
        args.interval,
        rows as f64 / seconds,
        per_device.len(),
        args.devices
    );
    println!(
        "engine CPU: {:.2} cores ({:.0}% of this machine's {}); poll-to-row latency ms: p50 {} p90 {} p99 {} max {}",
        cpu / seconds,
        100.0 * cpu / seconds / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        percentile(1.0)
    );
    Ok(())
}
