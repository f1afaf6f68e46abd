//! What scoring costs: ONNX inference per call and per row at several batch sizes, and the
//! online detectors' throughput (see `bench/models.sh`).
//!
//! Inference is measured through the same `OnnxModel::predict` the `predict` SQL function calls
//! once per Arrow batch, so a call's latency is what `predict` adds to every event of a batch
//! that size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vibelux_models::detector::Scorer;
use vibelux_models::onnx::{ModelOptions, OnnxModel};

#[derive(clap::Args)]
pub struct ModelArgs {
    /// The ONNX model (models/iforest/train.py writes one).
    #[arg(long)]
    model: PathBuf,
    /// CSV rows to score, with the model's features as columns (the training rows will do).
    #[arg(long)]
    rows: PathBuf,
    /// Rows per call to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    batches: Vec<usize>,
    /// ONNX Runtime threads per call to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Time spent per batch size.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Readings fed to each detector.
    #[arg(long, default_value_t = 500_000)]
    detector_rows: usize,
}

fn read_rows(args: &ModelArgs, features: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut reader = csv::Reader::from_path(&args.rows)
        .with_context(|| format!("reading {}", args.rows.display()))?;
    let headers = reader.headers()?.clone();
    let columns: Vec<usize> = features
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|header| header == name)
                .with_context(|| format!("{} has no column {name}", args.rows.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut values = Vec::new();
    for record in reader.records() {
        let record = record?;
        for column in &columns {
            values.push(record[*column].parse::<f64>()?);
        }
    }
    if values.is_empty() {
        bail!("{} has no rows", args.rows.display());
    }
    Ok(values)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    println!("inference ({}):", args.model.display());
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>14}",
        "threads", "batch", "p50 µs", "p99 µs", "inferences/s"
    );
    for threads in &args.threads {
        let options = ModelOptions {
            threads: *threads,
            ..ModelOptions::default()
        };
        let model = OnnxModel::load("bench", &args.model, &options)?;
        let width = model.feature_count();
        let rows = read_rows(&args, &model.features)?;
        let available = rows.len() / width;
        for batch in &args.batches {
            let mut latencies = Vec::new();
            let mut scored = 0usize;
            let mut offset = 0usize;
            let started = Instant::now();
            while started.elapsed() < args.duration {
                if offset + batch > available {
                    offset = 0;
                }
                let input = &rows[offset * width..(offset + batch) * width];
                let call = Instant::now();
                let scores = model.predict(*batch, input)?;
                latencies.push(call.elapsed());
                scored += scores.len();
                offset += batch;
            }
            let elapsed = started.elapsed().as_secs_f64();
            latencies.sort_unstable();
            println!(
                "{:>8} {:>8} {:>12.1} {:>12.1} {:>14.0}",
                threads,
                batch,
                percentile(&latencies, 0.5).as_secs_f64() * 1e6,
                percentile(&latencies, 0.99).as_secs_f64() * 1e6,
                scored as f64 / elapsed
            );
        }
    }

    if args.detector_rows == 0 {
        return Ok(());
    }
    println!(
        "\ndetectors ({} readings each, one series):",
        args.detector_rows
    );
    println!("{:>10} {:>14}", "detector", "rows/s");
    for name in vibelux_models::detector::DETECTORS {
        let values = if vibelux_models::detector::JOINT.contains(&name) {
            3
        } else {
            1
        };
        let mut scorer = Scorer::for_values(name, &[], values)?;
        // A day-shaped series every 10 s, with noise, so no detector sees a constant.
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        let mut reading = vec![0.0; values];
        let started = Instant::now();
        let mut scored = 0usize;
        for index in 0..args.detector_rows {
            let ts = index as i64 * 10_000_000_000;
            let day = (index as f64 * 10.0 / 86_400.0) * std::f64::consts::TAU;
            for (column, value) in reading.iter_mut().enumerate() {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let jitter = (noise % 1000) as f64 / 1000.0 - 0.5;
                *value = 22.0 + column as f64 * 10.0 + 3.0 * day.sin() + jitter;
            }
            let score = if values == 1 {
                scorer.score(ts, reading[0])
            } else {
                scorer.score_values(ts, &reading)
            };
            scored += usize::from(score.is_some());
        }
        let elapsed = started.elapsed().as_secs_f64();
        std::hint::black_box(scored);
        println!("{name:>10} {:>14.0}", args.detector_rows as f64 / elapsed);
    }
    Ok(())
}
