//! Load generator and hand-written baseline for the reference pipeline benchmark.
//!
//! `generate` writes sensor readings as JSON lines. `baseline` computes what
//! `bench/reference.sql` computes — derived columns, 1-minute tumbling windows per sensor and
//! per zone, each closed window written once — in one pass with serde and hash maps and no
//! framework: the practical limit the engine is measured against (`bench/run.sh`). `live`
//! measures live-view latency and fan-out against a running engine (`bench/live.sh`), writing
//! rows to a file or publishing them over MQTT; `mqtt-ingest` measures how fast the engine takes
//! in MQTT messages (`bench/mqtt.sh`), `kafka-ingest` Kafka messages (`bench/kafka.sh`);
//! `models` what ONNX inference and the anomaly detectors cost (`bench/models.sh`),
//! `detector-state` the memory they hold per series (`bench/memory.sh`); `alarms`
//! what alarm instances cost (`bench/alarms.sh`); `join-inputs` and `join-baseline` the join
//! benchmark's tables and hand-written joins (`bench/joins.sh`); `reduce` windows on our
//! aggregate operator against differential-dataflow's `reduce` (`bench/reduce.sh`); `watch` keeps
//! subscribers attached to live views through a soak (`bench/soak.sh`).

mod alarms;
mod detector_state;
mod joins;
mod kafka;
mod live;
mod measure;
mod modbus;
mod models;
mod mqtt;
mod reduce;
mod subscriber;
mod watch;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Vibelux benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write `rows` readings from `sensors` sensors (10 per zone), one per sensor every 10 s.
    Generate {
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1_000)]
        sensors: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// The reference computation, hand-written: reads `input`, writes two JSON-lines files.
    Baseline {
        input: PathBuf,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Live-view latency and fan-out against a running engine (see `bench/live.sh`).
    Live(live::LiveArgs),
    /// MQTT ingest rate of a running engine (see `bench/mqtt.sh`).
    MqttIngest(mqtt::IngestArgs),
    /// Kafka ingest rate of a running engine (see `bench/kafka.sh`).
    KafkaIngest(kafka::IngestArgs),
    /// Modbus polling: simulated PLCs here, one engine polling them all (see `bench/modbus.sh`).
    ModbusPoll(modbus::PollArgs),
    /// ONNX inference per batch size and detector throughput (see `bench/models.sh`).
    Models(models::ModelArgs),
    /// Resident memory per series of each anomaly detector (see `bench/memory.sh`).
    DetectorState(detector_state::DetectorStateArgs),
    /// Alarm instances over a simulated facility: CPU and reading-to-action latency (see
    /// `bench/alarms.sh`).
    Alarms(alarms::AlarmArgs),
    /// The tables the join benchmark joins readings with (see `bench/joins.sh`).
    JoinInputs(joins::InputArgs),
    /// A join of the join benchmark, hand-written (see `bench/joins.sh`).
    JoinBaseline(joins::BaselineArgs),
    /// Windows on our aggregate operator or on differential-dataflow's `reduce` (see
    /// `bench/reduce.sh`).
    Reduce(reduce::ReduceArgs),
    /// Subscribers that stay attached to live views for a run (see `bench/soak.sh`).
    Watch(watch::WatchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate { rows, sensors, out } => generate(rows, sensors, &out),
        Command::Baseline { input, out_dir } => baseline(&input, &out_dir),
        Command::Live(args) => live::run(args),
        Command::MqttIngest(args) => mqtt::ingest(args),
        Command::KafkaIngest(args) => kafka::ingest(args),
        Command::ModbusPoll(args) => modbus::poll(args),
        Command::Models(args) => models::run(args),
        Command::Alarms(args) => alarms::run(args),
        Command::DetectorState(args) => detector_state::run(args),
        Command::JoinInputs(args) => joins::write_inputs(args),
        Command::JoinBaseline(args) => joins::baseline(args),
        Command::Reduce(args) => reduce::run(args),
        Command::Watch(args) => watch::run(args),
    }
}

fn generate(rows: u64, sensors: u64, out: &PathBuf) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut writer = BufWriter::with_capacity(
        1 << 20,
        File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let start = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")?.timestamp_millis();
    for index in 0..rows {
        let sensor = index % sensors;
        let tick = (index / sensors) as i64;
        // Sensors report in turn across each 10 s tick, with up to 2 s of jitter: disorder well
        // inside the 5 s watermark delay, so no reading is late.
        let phase = sensor as i64 * 10_000 / sensors as i64;
        let ts_ms = start + tick * 10_000 + phase - rng.random_range(0..2_000);
        let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
            .expect("in range")
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let zone = sensor / 10;
        writeln!(
            writer,
            r#"{{"sensor_id":"s{sensor:04}","room":"r{:02}","zone":"z{zone:03}","ts":"{ts}","temp_c":{:.2},"rh":{:.1},"co2_ppm":{:.0},"ppfd":{:.0}}}"#,
            zone / 5,
            24.0 + rng.random_range(-2.0..2.0),
            60.0 + rng.random_range(-8.0..8.0),
            900.0 + rng.random_range(-100.0..100.0),
            700.0 + rng.random_range(-50.0..50.0),
        )?;
    }
    writer.flush()?;
    Ok(())
}

#[derive(Deserialize)]
struct Reading<'a> {
    sensor_id: &'a str,
    zone: &'a str,
    ts: &'a str,
    temp_c: f64,
    rh: f64,
}

#[derive(Default)]
struct WindowState {
    temp_sum: f64,
    temp_f_max: f64,
    rh_min: f64,
    count: u64,
}

impl WindowState {
    fn add(&mut self, temp_c: f64, temp_f: f64, rh: f64) {
        if self.count == 0 {
            self.temp_f_max = temp_f;
            self.rh_min = rh;
        }
        self.temp_sum += temp_c;
        self.temp_f_max = self.temp_f_max.max(temp_f);
        self.rh_min = self.rh_min.min(rh);
        self.count += 1;
    }
}

const MINUTE_MS: i64 = 60_000;
const DELAY_MS: i64 = 5_000;

/// Open windows by key, then by window start: lookups by `&str` allocate nothing.
struct Windows {
    open: HashMap<String, HashMap<i64, WindowState>>,
    out: BufWriter<File>,
    key_name: &'static str,
}

impl Windows {
    fn add(&mut self, key: &str, window: i64, temp_c: f64, temp_f: f64, rh: f64) {
        let windows = match self.open.get_mut(key) {
            Some(windows) => windows,
            None => self.open.entry(key.to_string()).or_default(),
        };
        windows.entry(window).or_default().add(temp_c, temp_f, rh);
    }

    /// Writes and forgets every window that ended at or before `watermark`.
    fn close(&mut self, watermark: i64) -> anyhow::Result<()> {
        let mut closed: Vec<(String, i64, WindowState)> = Vec::new();
        for (name, windows) in &mut self.open {
            let ended: Vec<i64> = windows
                .keys()
                .copied()
                .filter(|start| start + MINUTE_MS <= watermark)
                .collect();
            for start in ended {
                closed.push((name.clone(), start, windows.remove(&start).expect("listed")));
            }
        }
        for (name, window, state) in closed {
            let key = (name, window);
            let start = chrono::DateTime::from_timestamp_millis(key.1)
                .expect("in range")
                .naive_utc();
            let end = chrono::DateTime::from_timestamp_millis(key.1 + MINUTE_MS)
                .expect("in range")
                .naive_utc();
            writeln!(
                self.out,
                r#"{{"{}":"{}","window_start":"{}","window_end":"{}","temp_avg":{},"temp_f_max":{},"rh_min":{},"n":{}}}"#,
                self.key_name,
                key.0,
                start.format("%Y-%m-%dT%H:%M:%S%.3f"),
                end.format("%Y-%m-%dT%H:%M:%S%.3f"),
                state.temp_sum / state.count as f64,
                state.temp_f_max,
                state.rh_min,
                state.count
            )?;
        }
        Ok(())
    }
}

fn baseline(input: &PathBuf, out_dir: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let open = |name: &str| -> anyhow::Result<BufWriter<File>> {
        Ok(BufWriter::new(File::create(out_dir.join(name))?))
    };
    let mut per_sensor = Windows {
        open: HashMap::new(),
        out: open("sensor_minute.jsonl")?,
        key_name: "sensor_id",
    };
    let mut per_zone = Windows {
        open: HashMap::new(),
        out: open("zone_minute.jsonl")?,
        key_name: "zone",
    };
    let reader = BufReader::with_capacity(1 << 20, File::open(input)?);
    let mut max_ts = i64::MIN;
    let mut last_close = i64::MIN;
    let (mut rows, mut bad, mut late) = (0u64, 0u64, 0u64);
    for line in reader.lines() {
        let line = line?;
        let Ok(reading) = serde_json::from_str::<Reading>(&line) else {
            bad += 1;
            continue;
        };
        let Ok(ts) = chrono::DateTime::parse_from_rfc3339(reading.ts) else {
            bad += 1;
            continue;
        };
        let ts = ts.timestamp_millis();
        rows += 1;
        // As the engine does: a reading older than the watermark is late and left out.
        if ts < max_ts.saturating_sub(DELAY_MS) {
            late += 1;
            continue;
        }
        max_ts = max_ts.max(ts);
        if !(0.0..=100.0).contains(&reading.rh) {
            continue;
        }
        let temp_f = reading.temp_c * 1.8 + 32.0;
        let window = ts.div_euclid(MINUTE_MS) * MINUTE_MS;
        per_sensor.add(
            reading.sensor_id,
            window,
            reading.temp_c,
            temp_f,
            reading.rh,
        );
        per_zone.add(reading.zone, window, reading.temp_c, temp_f, reading.rh);
        let watermark = max_ts - DELAY_MS;
        // Windows close on minute boundaries: check once per watermark minute.
        if watermark.div_euclid(MINUTE_MS) != last_close.div_euclid(MINUTE_MS) {
            per_sensor.close(watermark)?;
            per_zone.close(watermark)?;
            last_close = watermark;
        }
    }
    per_sensor.close(i64::MAX)?;
    per_zone.close(i64::MAX)?;
    per_sensor.out.flush()?;
    per_zone.out.flush()?;
    eprintln!("baseline: {rows} rows, {bad} unreadable, {late} late");
    Ok(())
}
