//! `vibelux evaluate`: detectors measured against labelled series, from a CSV file, from the
//! simulator's injected faults (whose ground truth the simulator knows), or from benchmark
//! tables of several sensors per machine (`labelled_tables`, SKAB's layout).

pub mod labelled_tables;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use vibelux_connectors::simulator::{
    FaultKind, SimulatorConfig, SimulatorReader, Speed, simulator_schema,
};
use vibelux_connectors::source::{Poll, Record, SourceReader};
use vibelux_models::detector::{DETECTORS, Scorer, options_of};
use vibelux_models::evaluation::{Evaluation, Scored, evaluate};
use vibelux_operators::row::Datum;

/// One series: (event time ns, value, labelled anomalous), in time order.
pub type Series = Vec<(i64, f64, bool)>;

/// A named set of series evaluated together (one table row per detector).
pub struct Case {
    pub name: String,
    pub series: Vec<Series>,
}

/// The series of a labelled CSV (`timestamp`, `value`, `label`).
pub fn from_csv(input: &Path) -> anyhow::Result<Case> {
    let mut reader =
        csv::Reader::from_path(input).with_context(|| format!("reading {}", input.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header.trim().eq_ignore_ascii_case(name))
            .with_context(|| {
                format!(
                    "{}: no `{name}` column (the header has: {})",
                    input.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
    };
    let (ts_column, value_column, label_column) =
        (column("timestamp")?, column("value")?, column("label")?);
    let mut series = Series::new();
    for (index, record) in reader.records().enumerate() {
        let record = record?;
        let line = index + 2;
        let field = |position: usize| record.get(position).unwrap_or("").trim();
        let ts = vibelux_connectors::payload::parse_timestamp(field(ts_column))
            .map_err(|problem| anyhow::anyhow!("line {line}: timestamp: {problem}"))?;
        let value: f64 = field(value_column).parse().map_err(|_| {
            anyhow::anyhow!(
                "line {line}: value: expected a number, found {:?}",
                field(value_column)
            )
        })?;
        let anomalous = match field(label_column).to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" | "" => false,
            other => {
                anyhow::bail!("line {line}: label: expected 1/0 or true/false, found {other:?}")
            }
        };
        series.push((ts, value, anomalous));
    }
    Ok(Case {
        name: input.display().to_string(),
        series: vec![series],
    })
}

/// For each fault kind, `runs` simulated runs of a small room (one zone, four sensors, a reading
/// a minute), each with its own seed: two fault-free days (so detectors that learn a daily
/// profile have learnt it), then two days with one injected fault, labelled by the simulator's
/// ground truth: the readings of the faulted sensor (or room) while the fault lasts; for a
/// dropout, which leaves no readings, the first reading after it.
pub fn from_simulator(faults: &[FaultKind], runs: u64) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for &kind in faults {
        let mut series = Vec::new();
        for seed in 1..=runs {
            let config = SimulatorConfig {
                rooms: 1,
                zones_per_room: 1,
                sensors_per_zone: 4,
                seed,
                interval_nanos: 60_000_000_000,
                speed: Speed::Max,
                start_nanos: None,
                duration_nanos: Some(2 * DAY),
                faults: vec![kind],
                ..SimulatorConfig::default()
            };
            let start = config.resolved_start();
            let plan = config.fault_plan(start);
            let burn_in = SimulatorConfig {
                start_nanos: Some(start - 2 * DAY),
                faults: Vec::new(),
                ..config.clone()
            };
            let mut by_sensor: BTreeMap<String, Series> = BTreeMap::new();
            simulate(burn_in, &mut by_sensor)?;
            simulate(config, &mut by_sensor)?;
            for (sensor, points) in &mut by_sensor {
                points.sort_by_key(|point| point.0);
                for fault in &plan {
                    let targeted = match fault.kind {
                        // One room: every sensor is in it.
                        FaultKind::HvacDrift => true,
                        _ => fault.target_name == *sensor,
                    };
                    if !targeted {
                        continue;
                    }
                    if fault.kind == FaultKind::Dropout {
                        if let Some(point) = points.iter_mut().find(|point| point.0 >= fault.end) {
                            point.2 = true;
                        }
                    } else {
                        for point in points.iter_mut() {
                            point.2 |= fault.start <= point.0 && point.0 < fault.end;
                        }
                    }
                }
            }
            series.extend(by_sensor.into_values());
        }
        cases.push(Case {
            name: fault_name(kind).to_string(),
            series,
        });
    }
    Ok(cases)
}

const DAY: i64 = 24 * 3600 * 1_000_000_000;

/// Runs the simulator to its end, appending each sensor's temperatures to its series.
fn simulate(
    config: SimulatorConfig,
    by_sensor: &mut BTreeMap<String, Series>,
) -> anyhow::Result<()> {
    let schema = simulator_schema();
    let sensor_column = schema.index_of("sensor_id")?;
    let ts_column = schema.index_of("ts")?;
    let temp_column = schema.index_of("temp_c")?;
    let mut reader = SimulatorReader::new(config, &schema, 0, 1).map_err(anyhow::Error::msg)?;
    let mut records = Vec::new();
    let mut finished = false;
    while !finished {
        // The last poll's records count too.
        finished = reader.poll(&mut records, 4096) == Poll::Finished;
        for record in records.drain(..) {
            let Record::Row { row, .. } = record else {
                continue;
            };
            let (Datum::Utf8(sensor), Datum::Timestamp(ts), Datum::Float64(temp)) =
                (&row[sensor_column], &row[ts_column], &row[temp_column])
            else {
                continue;
            };
            by_sensor
                .entry(sensor.to_string())
                .or_default()
                .push((*ts, *temp, false));
        }
    }
    Ok(())
}

fn fault_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::HvacDrift => "hvac_drift",
        FaultKind::StuckSensor => "stuck",
        FaultKind::Spike => "spike",
        FaultKind::Dropout => "dropout",
    }
}

/// The detectors asked for, or all of them.
pub(crate) fn detector_names(asked: &[String]) -> Vec<String> {
    match asked.is_empty() {
        true => DETECTORS.map(String::from).to_vec(),
        false => asked.to_vec(),
    }
}

/// The `key=value` settings `name` takes; the others are for other detectors.
pub(crate) fn options_for(name: &str, options: &[(String, String)]) -> Vec<(String, String)> {
    let known = options_of(name).unwrap_or(&[]);
    options
        .iter()
        .filter(|(key, _)| known.contains(&key.as_str()))
        .cloned()
        .collect()
}

/// One table row per case and detector.
pub fn report(
    cases: &[Case],
    detectors: &[String],
    options: &[(String, String)],
    threshold: f64,
) -> anyhow::Result<String> {
    let names = detector_names(detectors);
    let mut rows = Vec::new();
    for case in cases {
        for name in &names {
            let taken = options_for(name, options);
            Scorer::new(name, &taken)?;
            let mut total = Evaluation::default();
            for series in &case.series {
                let mut scorer = Scorer::new(name, &taken)?;
                let scored: Vec<Scored> = series
                    .iter()
                    .map(|&(ts, value, anomalous)| Scored {
                        ts,
                        score: scorer.score(ts, value),
                        anomalous,
                    })
                    .collect();
                total.add(evaluate(&scored, threshold));
            }
            let show = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.3}"));
            rows.push(vec![
                case.name.clone(),
                name.clone(),
                show(total.precision()),
                show(total.recall()),
                show(total.f1()),
                format!("{}/{}", total.events_detected, total.events),
                total
                    .median_time_to_detect()
                    .map_or("-".to_string(), |s| format!("{s:.0} s")),
            ]);
        }
    }
    let columns = [
        "series",
        "detector",
        "precision",
        "recall",
        "F1",
        "events found",
        "median time to detect",
    ]
    .map(String::from)
    .to_vec();
    Ok(crate::format::table(&columns, &rows))
}
