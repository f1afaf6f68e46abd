//! What a detector holds per series once it has learnt: resident memory per series, measured by
//! building many series' detectors and feeding each several days of readings (`bench/memory.sh`).
//!
//! Per-series state is what decides how many sensors one process can score: at 100,000 sensors
//! every kilobyte per series is 100 MB. Measured as the growth of the process's resident set (the
//! allocator's overhead included); run one detector per process (`--detectors NAME`) so that
//! memory another detector freed does not hide what this one takes.

use std::time::Instant;

use vibelux_models::detector::{DETECTORS, JOINT, Scorer};

#[derive(clap::Args)]
pub struct DetectorStateArgs {
    /// Series per detector.
    #[arg(long, default_value_t = 20_000)]
    series: usize,
    /// Days of readings fed to each series (seasonal detectors score from their third day).
    #[arg(long, default_value_t = 4)]
    days: u32,
    /// Seconds between a series' readings.
    #[arg(long, default_value_t = 300)]
    interval: u32,
    /// The detectors to measure, in turn (all by default).
    #[arg(long, value_delimiter = ',')]
    detectors: Vec<String>,
    /// Values per reading for the detectors that score several together.
    #[arg(long, default_value_t = 3)]
    joint_values: usize,
}

/// The process's resident set, bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/statm has no resident field"))?
        .parse()?;
    Ok(pages * 4096)
}

pub fn run(args: DetectorStateArgs) -> anyhow::Result<()> {
    let readings = (args.days as u64 * 86_400 / args.interval.max(1) as u64) as usize;
    println!(
        "{} series per detector, {readings} readings each ({} days, one every {} s)",
        args.series, args.days, args.interval
    );
    println!(
        "{:>12} {:>8} {:>16} {:>14}",
        "detector", "values", "bytes/series", "ns/reading"
    );
    let mut kept: Vec<Vec<Scorer>> = Vec::new();
    let names: Vec<&str> = match args.detectors.is_empty() {
        true => DETECTORS.to_vec(),
        false => args.detectors.iter().map(String::as_str).collect(),
    };
    for name in names {
        let values = if JOINT.contains(&name) {
            args.joint_values
        } else {
            1
        };
        let before = resident_bytes()?;
        let mut scorers = (0..args.series)
            .map(|_| Scorer::for_values(name, &[], values))
            .collect::<Result<Vec<_>, _>>()?;
        // Each series a day-shaped signal with its own noise, read at its own phase.
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        let mut reading = vec![0.0; values];
        let started = Instant::now();
        let mut scored = 0usize;
        for index in 0..readings {
            let ts = index as i64 * args.interval as i64 * 1_000_000_000;
            let day = (index as f64 * args.interval as f64 / 86_400.0) * std::f64::consts::TAU;
            for (series, scorer) in scorers.iter_mut().enumerate() {
                for (column, value) in reading.iter_mut().enumerate() {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    let jitter = (noise % 1000) as f64 / 1000.0 - 0.5;
                    *value = 20.0
                        + (series % 7) as f64
                        + column as f64 * 10.0
                        + 3.0 * day.sin()
                        + jitter;
                }
                scored += usize::from(scorer.score_values(ts, &reading).is_some());
            }
        }
        let nanos = started.elapsed().as_nanos() as f64 / (readings * args.series) as f64;
        let grown = resident_bytes()?.saturating_sub(before);
        std::hint::black_box(scored);
        println!(
            "{name:>12} {values:>8} {:>16.0} {nanos:>14.0}",
            grown as f64 / args.series as f64
        );
        kept.push(scorers);
    }
    Ok(())
}
