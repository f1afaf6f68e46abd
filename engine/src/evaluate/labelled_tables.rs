//! Benchmarks of several sensors per machine with labelled faults, in SKAB's layout (the
//! Skoltech Anomaly Benchmark): one experiment per file, `;`-separated, a `datetime` column,
//! a column per sensor, then `anomaly` (1 on every reading of a fault: the outlier problem)
//! and `changepoint` (1 where a fault or a change starts: the change-point problem).
//!
//! Every detector runs online over each file, in time order, knowing only the readings before
//! each one, and is scored the way the benchmark scores: F1 with false and missed alarm rates
//! over every reading of every file (a reading the detector does not score yet, while it warms
//! up, is one it did not flag); NAB's standard score with a window of a minute to the right of
//! each change point, where a detection is the first of a run of flagged readings. Detectors
//! of one value score every sensor apart and a reading takes the highest of their scores.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use vibelux_models::detector::{JOINT, Scorer};
use vibelux_models::evaluation::Evaluation;
use vibelux_models::nab::{NabScore, rising_edges};

/// NAB's window to the right of each change point, as SKAB sets it.
const CHANGE_WINDOW_NANOS: i64 = 60_000_000_000;

/// One experiment: a file's readings with their labels.
pub struct Experiment {
    pub name: String,
    pub sensors: Vec<String>,
    /// Event times, nanoseconds, ascending.
    pub times: Vec<i64>,
    /// One row of sensor values per reading.
    pub values: Vec<Vec<f64>>,
    pub anomalous: Vec<bool>,
    /// The times of the readings labelled as change points.
    pub changes: Vec<i64>,
}

/// Whether `path` holds tables in this layout: a folder (of files, at any depth), or a file
/// whose header has an `anomaly` column.
pub fn is_labelled_table(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().next().map(str::to_string))
        .is_some_and(|header| {
            header
                .split([';', ','])
                .any(|column| column.trim().eq_ignore_ascii_case("anomaly"))
        })
}

/// Every labelled experiment under `path` (a file or a folder), in path order. Files without
/// an `anomaly` column (SKAB's anomaly-free run) are left out and named in the second value.
pub fn read_experiments(path: &Path) -> anyhow::Result<(Vec<Experiment>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    collect_csv_files(path, &mut files)?;
    files.sort();
    let mut experiments = Vec::new();
    let mut unlabelled = Vec::new();
    for file in files {
        match read_experiment(&file)? {
            Some(experiment) => experiments.push(experiment),
            None => unlabelled.push(file),
        }
    }
    anyhow::ensure!(
        !experiments.is_empty(),
        "{}: no CSV file with an `anomaly` column",
        path.display()
    );
    Ok((experiments, unlabelled))
}

fn collect_csv_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !path.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let entry = entry?.path();
        if entry.is_dir() {
            collect_csv_files(&entry, files)?;
        } else if entry
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("csv"))
        {
            files.push(entry);
        }
    }
    Ok(())
}

/// One file, or `None` when it has no `anomaly` column.
fn read_experiment(path: &Path) -> anyhow::Result<Option<Experiment>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let header = text.lines().next().unwrap_or_default();
    let delimiter = if header.contains(';') { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(anomaly_column) = find("anomaly") else {
        return Ok(None);
    };
    let time_column = find("datetime")
        .or_else(|| find("timestamp"))
        .with_context(|| {
            format!(
                "{}: no `datetime` or `timestamp` column (the header has: {})",
                path.display(),
                headers.join(", ")
            )
        })?;
    let change_column = find("changepoint");
    let sensor_columns: Vec<usize> = (0..headers.len())
        .filter(|c| *c != time_column && *c != anomaly_column && Some(*c) != change_column)
        .collect();
    let mut experiment = Experiment {
        name: path.display().to_string(),
        sensors: sensor_columns.iter().map(|c| headers[*c].clone()).collect(),
        times: Vec::new(),
        values: Vec::new(),
        anomalous: Vec::new(),
        changes: Vec::new(),
    };
    let flag = |text: &str, line: usize, column: &str| -> anyhow::Result<bool> {
        match text.trim().parse::<f64>() {
            Ok(value) => Ok(value != 0.0),
            Err(_) => anyhow::bail!(
                "{}: line {line}: {column}: expected 0 or 1, found {text:?}",
                path.display()
            ),
        }
    };
    for (index, record) in reader.records().enumerate() {
        let record = record.with_context(|| path.display().to_string())?;
        let line = index + 2;
        let field = |column: usize| record.get(column).unwrap_or("").trim();
        let ts = vibelux_connectors::payload::parse_timestamp(field(time_column))
            .map_err(|problem| anyhow::anyhow!("{}: line {line}: {problem}", path.display()))?;
        let values = sensor_columns
            .iter()
            .map(|&column| {
                field(column).parse::<f64>().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: line {line}: {}: expected a number, found {:?}",
                        path.display(),
                        headers[column],
                        field(column)
                    )
                })
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        experiment.times.push(ts);
        experiment.values.push(values);
        experiment
            .anomalous
            .push(flag(field(anomaly_column), line, "anomaly")?);
        if let Some(column) = change_column
            && flag(field(column), line, "changepoint")?
        {
            experiment.changes.push(ts);
        }
    }
    Ok(Some(experiment))
}

/// What one detector did over every experiment.
pub struct Measured {
    pub detector: String,
    pub outliers: Evaluation,
    pub changes: NabScore,
    pub micros_per_reading: f64,
}

/// Runs `name` over every experiment at `threshold`.
pub fn measure(
    experiments: &[Experiment],
    name: &str,
    options: &[(String, String)],
    threshold: f64,
) -> anyhow::Result<Measured> {
    let mut outliers = Evaluation::default();
    let mut changes = NabScore::default();
    let mut spent = 0.0;
    let mut readings = 0usize;
    for experiment in experiments {
        let started = Instant::now();
        let scores = score_experiment(experiment, name, options)?;
        spent += started.elapsed().as_secs_f64();
        readings += scores.len();
        let flagged: Vec<bool> = scores
            .iter()
            .map(|score| score.is_some_and(|score| score >= threshold))
            .collect();
        for (flag, anomalous) in flagged.iter().zip(&experiment.anomalous) {
            outliers.readings += 1;
            match (flag, anomalous) {
                (true, true) => outliers.true_positives += 1,
                (true, false) => outliers.false_positives += 1,
                (false, true) => outliers.false_negatives += 1,
                (false, false) => {}
            }
        }
        let detections = rising_edges(&experiment.times, &flagged);
        changes.add(&NabScore::of(
            &experiment.changes,
            &detections,
            CHANGE_WINDOW_NANOS,
        ));
    }
    Ok(Measured {
        detector: name.to_string(),
        outliers,
        changes,
        micros_per_reading: spent * 1e6 / readings.max(1) as f64,
    })
}

/// Each reading's score: the detector over all sensors, or for one-value detectors the
/// highest of one detector per sensor.
fn score_experiment(
    experiment: &Experiment,
    name: &str,
    options: &[(String, String)],
) -> anyhow::Result<Vec<Option<f64>>> {
    let sensors = experiment.sensors.len();
    if JOINT.contains(&name) {
        let mut scorer = Scorer::for_values(name, options, sensors)?;
        return Ok(experiment
            .times
            .iter()
            .zip(&experiment.values)
            .map(|(ts, values)| scorer.score_values(*ts, values))
            .collect());
    }
    let mut scorers = (0..sensors)
        .map(|_| Scorer::new(name, options))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(experiment
        .times
        .iter()
        .zip(&experiment.values)
        .map(|(ts, values)| {
            scorers
                .iter_mut()
                .zip(values)
                .filter_map(|(scorer, value)| scorer.score(*ts, *value))
                .reduce(f64::max)
        })
        .collect())
}

/// The two problems' tables for `detectors` (default: all).
pub fn report(
    experiments: &[Experiment],
    detectors: &[String],
    options: &[(String, String)],
    threshold: f64,
) -> anyhow::Result<String> {
    let mut measured = Vec::new();
    for name in super::detector_names(detectors) {
        let taken = super::options_for(&name, options);
        measured.push(measure(experiments, &name, &taken, threshold)?);
    }
    let show = |value: Option<f64>, scale: f64, digits: usize| {
        value.map_or("-".to_string(), |v| format!("{:.*}", digits, v * scale))
    };
    let outlier_rows: Vec<Vec<String>> = measured
        .iter()
        .map(|m| {
            vec![
                m.detector.clone(),
                show(m.outliers.f1(), 1.0, 2),
                show(m.outliers.false_alarm_rate(), 100.0, 1),
                show(m.outliers.missed_alarm_rate(), 100.0, 1),
                show(m.outliers.precision(), 1.0, 2),
                show(m.outliers.recall(), 1.0, 2),
                format!("{:.2}", m.micros_per_reading),
            ]
        })
        .collect();
    let change_rows: Vec<Vec<String>> = measured
        .iter()
        .map(|m| {
            vec![
                m.detector.clone(),
                show(m.changes.normalized(), 1.0, 1),
                format!("{}/{}", m.changes.missed, m.changes.windows),
                m.changes.false_positives.to_string(),
            ]
        })
        .collect();
    let columns = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    Ok(format!(
        "Outliers (every reading of a fault is anomalous):\n{}\nChange points (NAB standard, a {} s window after each):\n{}",
        crate::format::table(
            &columns(&[
                "detector",
                "F1",
                "FAR %",
                "MAR %",
                "precision",
                "recall",
                "µs/reading"
            ]),
            &outlier_rows
        ),
        CHANGE_WINDOW_NANOS / 1_000_000_000,
        crate::format::table(
            &columns(&["detector", "NAB standard", "missed", "false positives"]),
            &change_rows
        ),
    ))
}
