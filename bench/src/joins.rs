//! Inputs and hand-written baselines for the join benchmark (`bench/joins.sh`).
//!
//! `join-inputs` writes the reference data the readings are joined with: a name per zone
//! (`zones.csv`, a table), a temperature limit per zone (`limits.csv`, a table) and a target
//! temperature per zone every five minutes (`targets.jsonl`, a versioned table). `join-baseline`
//! computes what `bench/joins/table.sql`, `as_of.sql`, `interval.sql` and `top_n.sql` compute,
//! with serde and hash maps, knowing every target (and, for the interval join, every reading) in
//! advance, and for TOP-N only the final podium (the engine keeps it up to date after every
//! reading): the practical limit the engine is measured against.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct InputArgs {
    #[arg(long, default_value_t = 100)]
    zones: u64,
    /// How long the targets cover, from 2026-06-01T00:00:00Z (the readings' start).
    #[arg(long, default_value_t = 16)]
    hours: u64,
    #[arg(long)]
    out_dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Each reading with its zone's name (a stream–table join), per name and minute.
    Table,
    /// Each reading with its zone's target in force at its time (an as-of join), per zone and
    /// minute.
    AsOf,
    /// Each reading with the same sensor's readings of the next 10 seconds (an interval join),
    /// the count and largest rise per sensor and minute.
    Interval,
    /// The three sensors of each zone with the highest average temperature (TOP-N over an
    /// aggregate): the final podium.
    TopN,
}

#[derive(clap::Args)]
pub struct BaselineArgs {
    #[arg(value_enum)]
    kind: Kind,
    readings: PathBuf,
    /// The folder `join-inputs` wrote.
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

const START_MS: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
const MINUTE_MS: i64 = 60_000;

pub fn write_inputs(args: InputArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let mut zones = BufWriter::new(File::create(args.out_dir.join("zones.csv"))?);
    writeln!(zones, "zone,name")?;
    for zone in 0..args.zones {
        writeln!(zones, "z{zone:03},room {:02} bay {}", zone / 5, zone % 5)?;
    }
    zones.flush()?;
    let mut limits = BufWriter::new(File::create(args.out_dir.join("limits.csv"))?);
    writeln!(limits, "zone,max_c")?;
    for zone in 0..args.zones {
        writeln!(limits, "z{zone:03},{:.1}", 23.0 + (zone % 4) as f64)?;
    }
    limits.flush()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut targets = BufWriter::new(File::create(args.out_dir.join("targets.jsonl"))?);
    for slot in 0..args.hours as i64 * 12 {
        for zone in 0..args.zones {
            // Each within the first minute of its five, so a file in slot order is in order
            // to within a minute (the table's watermark waits two).
            let millis = START_MS + slot * 5 * MINUTE_MS + rng.random_range(0..MINUTE_MS);
            let valid_from = chrono::DateTime::from_timestamp_millis(millis)
                .expect("in range")
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            writeln!(
                targets,
                r#"{{"zone":"z{zone:03}","valid_from":"{valid_from}","target_c":{:.1}}}"#,
                22.0 + rng.random_range(0.0..4.0)
            )?;
        }
    }
    targets.flush()?;
    Ok(())
}

#[derive(Deserialize)]
struct Reading<'a> {
    #[serde(default)]
    sensor_id: &'a str,
    zone: &'a str,
    ts: &'a str,
    temp_c: f64,
}

#[derive(Deserialize)]
struct Target<'a> {
    zone: &'a str,
    valid_from: &'a str,
    target_c: f64,
}

fn millis(text: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("not a time: {text}"))?
        .timestamp_millis())
}

/// Count and maximum per key and minute.
#[derive(Default)]
struct Windows(BTreeMap<(String, i64), (u64, f64)>);

impl Windows {
    fn add(&mut self, key: &str, ts: i64, value: f64) {
        let window = ts.div_euclid(MINUTE_MS) * MINUTE_MS;
        let entry = self
            .0
            .entry((key.to_string(), window))
            .or_insert((0, f64::NEG_INFINITY));
        entry.0 += 1;
        entry.1 = entry.1.max(value);
    }

    fn write(&self, out: &PathBuf, key_name: &str) -> anyhow::Result<()> {
        let mut out = BufWriter::new(File::create(out)?);
        for ((key, window), (count, top)) in &self.0 {
            let start = chrono::DateTime::from_timestamp_millis(*window)
                .expect("in range")
                .format("%Y-%m-%dT%H:%M:%S%.3f");
            writeln!(
                out,
                r#"{{"{key_name}":{},"window_start":"{start}","n":{count},"top":{}}}"#,
                serde_json::to_string(key)?,
                serde_json::to_string(top)?
            )?;
        }
        out.flush()?;
        Ok(())
    }
}

pub fn baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let reader = BufReader::with_capacity(1 << 20, File::open(&args.readings)?);
    let mut windows = Windows::default();
    match args.kind {
        Kind::Table => {
            let mut names: HashMap<String, String> = HashMap::new();
            let zones = std::fs::read_to_string(args.inputs.join("zones.csv"))?;
            for line in zones.lines().skip(1) {
                let (zone, name) = line.split_once(',').context("zone,name")?;
                names.insert(zone.to_string(), name.to_string());
            }
            for line in reader.lines() {
                let line = line?;
                let reading: Reading = serde_json::from_str(&line)?;
                if let Some(name) = names.get(reading.zone) {
                    windows.add(name, millis(reading.ts)?, reading.temp_c);
                }
            }
            windows.write(&args.out, "name")
        }
        Kind::AsOf => {
            // Every zone's targets in time order, known in advance (a streaming engine cannot).
            let mut targets: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
            let text = std::fs::read_to_string(args.inputs.join("targets.jsonl"))?;
            for line in text.lines() {
                let target: Target = serde_json::from_str(line)?;
                targets
                    .entry(target.zone.to_string())
                    .or_default()
                    .push((millis(target.valid_from)?, target.target_c));
            }
            for versions in targets.values_mut() {
                versions.sort_by_key(|(from, _)| *from);
            }
            for line in reader.lines() {
                let line = line?;
                let reading: Reading = serde_json::from_str(&line)?;
                let ts = millis(reading.ts)?;
                let Some(versions) = targets.get(reading.zone) else {
                    continue;
                };
                let after = versions.partition_point(|(from, _)| *from <= ts);
                if let Some((_, target)) = after.checked_sub(1).map(|i| versions[i]) {
                    windows.add(reading.zone, ts, reading.temp_c - target);
                }
            }
            windows.write(&args.out, "zone")
        }
        Kind::Interval => {
            // Every sensor's readings in time order, read in advance (a streaming engine
            // cannot), then each paired with those of the 10 seconds after it.
            let mut series: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
            for line in reader.lines() {
                let line = line?;
                let reading: Reading = serde_json::from_str(&line)?;
                let ts = millis(reading.ts)?;
                match series.get_mut(reading.sensor_id) {
                    Some(readings) => readings.push((ts, reading.temp_c)),
                    None => {
                        let first = vec![(ts, reading.temp_c)];
                        series.insert(reading.sensor_id.to_string(), first);
                    }
                }
            }
            for (sensor, readings) in &mut series {
                readings.sort_by_key(|(ts, _)| *ts);
                for (index, (ts, temp)) in readings.iter().enumerate() {
                    for (then, other) in &readings[index + 1..] {
                        if *then > ts + 10_000 {
                            break;
                        }
                        // Readings of the same millisecond are not within the interval.
                        if *then > *ts {
                            windows.add(sensor, *ts, other - temp);
                        }
                    }
                }
            }
            windows.write(&args.out, "sensor_id")
        }
        Kind::TopN => top_n(reader, &args.out),
    }
}

/// Each sensor's running sum and count, then each zone's three highest averages.
fn top_n(reader: BufReader<File>, out: &PathBuf) -> anyhow::Result<()> {
    let mut sensors: HashMap<(String, String), (f64, u64)> = HashMap::new();
    for line in reader.lines() {
        let line = line?;
        let reading: Reading = serde_json::from_str(&line)?;
        let key = (reading.zone.to_string(), reading.sensor_id.to_string());
        let entry = sensors.entry(key).or_insert((0.0, 0));
        entry.0 += reading.temp_c;
        entry.1 += 1;
    }
    let mut zones: BTreeMap<&str, Vec<(f64, &str)>> = BTreeMap::new();
    for ((zone, sensor), (sum, count)) in &sensors {
        zones
            .entry(zone)
            .or_default()
            .push((sum / *count as f64, sensor));
    }
    let mut out = BufWriter::new(File::create(out)?);
    for (zone, mut averages) in zones {
        averages.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (place, (average, sensor)) in averages.iter().take(3).enumerate() {
            writeln!(
                out,
                r#"{{"zone":{},"sensor_id":{},"temp_avg":{},"place":{}}}"#,
                serde_json::to_string(zone)?,
                serde_json::to_string(sensor)?,
                serde_json::to_string(average)?,
                place + 1
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
