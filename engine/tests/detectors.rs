//! The anomaly detectors from the command line: `vibelux score` in a pipe (one flushed line
//! out per line in, before stdin ends) and `vibelux evaluate` on a labelled series.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn scores_come_back_line_by_line_and_a_spike_scores_high() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["score", "--detector", "robust", "--option", "window=30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(stdin, "timestamp,value").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "score");
    let mut scores = Vec::new();
    for i in 0..300 {
        let value = 21.0 + (i as f64 / 10.0).sin() * 0.5 + ((i * 31) % 7) as f64 * 0.03;
        let value = if i == 250 { 30.0 } else { value };
        let minute = i % 60;
        let hour = i / 60;
        writeln!(stdin, "2026-06-01T{hour:02}:{minute:02}:00Z,{value}").unwrap();
        stdin.flush().unwrap();
        // The score of this line arrives while stdin is still open.
        line.clear();
        stdout.read_line(&mut line).unwrap();
        scores.push(line.trim().to_string());
    }
    writeln!(stdin, "2026-06-01T05:00:00Z,warm").unwrap();
    stdin.flush().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "\n", "a bad line still gets its (empty) line");
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("line 302: value: expected a number, found \"warm\""),
        "{errors}"
    );
    assert!(
        scores[..30].iter().all(String::is_empty),
        "warm-up: {:?}",
        &scores[..30]
    );
    let spike: f64 = scores[250].parse().unwrap();
    assert!(spike > 0.99, "{spike}");
    let calm: Vec<f64> = scores[220..250]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        calm.iter().filter(|score| **score >= 0.99).count() <= 1,
        "{calm:?}"
    );
}

#[test]
fn an_unknown_detector_is_refused_with_the_choices() {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["score", "--detector", "prophet"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(
        "unknown detector `prophet`: use auto, zscore, ewma, robust, seasonal, drift, flatline, gap, hst, mahalanobis or change"
    ));
}

#[test]
fn evaluate_reports_precision_recall_and_time_to_detect_on_labelled_spikes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("labelled.csv");
    let mut csv = String::from("timestamp,value,label\n");
    for i in 0..600 {
        let spike = [250, 400, 550].contains(&i);
        let value = 21.0 + (i as f64 / 15.0).sin() * 0.5 + ((i * 31) % 7) as f64 * 0.03;
        let value = if spike { value + 8.0 } else { value };
        csv.push_str(&format!(
            "2026-06-01T{:02}:{:02}:00Z,{value},{}\n",
            i / 60,
            i % 60,
            u8::from(spike)
        ));
    }
    std::fs::write(&input, csv).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .arg("evaluate")
        .arg(&input)
        .args([
            "--detector",
            "robust",
            "--detector",
            "zscore",
            "--option",
            "window=60",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("600 readings, 3 labelled anomalous; threshold 0.9999"),
        "{text}"
    );
    let robust = text
        .lines()
        .find(|line| line.contains("| robust "))
        .unwrap();
    let cells: Vec<&str> = robust.split('|').map(str::trim).collect();
    assert_eq!(cells[3], "1.000", "recall: {text}");
    assert_eq!(cells[5], "3/3", "{text}");
    assert_eq!(cells[6], "0 s", "{text}");
    assert!(
        text.lines().any(|line| line.contains("| zscore ")),
        "{text}"
    );
    // A label that is neither 1/0 nor true/false names the line.
    std::fs::write(
        &input,
        "timestamp,value,label\n2026-06-01T00:00:00Z,1,maybe\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .arg("evaluate")
        .arg(&input)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("line 2: label: expected 1/0 or true/false, found \"maybe\"")
    );
}

#[test]
fn evaluate_on_the_simulators_faults_labels_every_kind() {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["evaluate", "--simulator", "spike,stuck", "--runs", "1"])
        .args(["--detector", "zscore"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spike = text.lines().find(|line| line.starts_with("spike")).unwrap();
    let cells: Vec<&str> = spike.split('|').map(str::trim).collect();
    // One spike, one reading long, on one of four sensors: found at once.
    assert_eq!(
        (cells[3], cells[5], cells[6]),
        ("1.000", "1/1", "0 s"),
        "{text}"
    );
    assert!(text.lines().any(|line| line.starts_with("stuck")), "{text}");
    let bad = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["evaluate", "--simulator", "meteor"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("unknown fault \"meteor\": use hvac_drift, stuck, spike, dropout")
    );
}

#[test]
fn hst_scores_several_values_together_from_the_command_line() {
    let mut input = String::from("timestamp,temp_c,rh\n");
    for i in 0..700 {
        let t = 20.0 + (i % 50) as f64 * 0.1;
        let rh = 80.0 - 2.0 * (t - 20.0) + ((i * 7919) % 7) as f64 * 0.05;
        input.push_str(&format!(
            "2026-06-01T{:02}:{:02}:00Z,{t},{rh}\n",
            i / 60,
            i % 60
        ));
    }
    // Warm and humid at once: each value seen before, never together.
    input.push_str("2026-06-01T11:40:00Z,24.5,79.0\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["score", "--detector", "hst"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let scores: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(scores.len(), 701);
    let odd: f64 = scores[700].parse().unwrap();
    assert!(odd >= 0.9999, "{odd}");
}

/// A pump test run in SKAB's layout: three sensors, a valve that closes at reading 600 (flow
/// down, pressure up) and opens again at 800.
fn pump_run(seed: usize) -> String {
    let mut csv =
        String::from("datetime;Pressure;Volume Flow RateRMS;Current;anomaly;changepoint\n");
    for i in 0..1_000usize {
        let closed = (600..800).contains(&i);
        let noise = |k: usize| (((i + seed) * 7919 + k * 104_729) % 1_009) as f64 / 1_009.0 - 0.5;
        let pressure = 1.0 + 0.05 * noise(1) + if closed { 0.2 } else { 0.0 };
        let flow = 32.0 + 0.5 * noise(2) - if closed { 3.0 } else { 0.0 };
        let current = 1.0 + 0.1 * noise(3);
        csv.push_str(&format!(
            "2020-03-09 {:02}:{:02}:{:02};{pressure};{flow};{current};{}.0;{}.0\n",
            10 + i / 3600,
            i / 60 % 60,
            i % 60,
            u8::from(closed),
            u8::from(i == 600 || i == 800)
        ));
    }
    csv
}

#[test]
fn evaluate_scores_benchmark_tables_for_outliers_and_change_points() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("valve");
    std::fs::create_dir_all(&runs).unwrap();
    for seed in 0..2 {
        std::fs::write(runs.join(format!("{seed}.csv")), pump_run(seed)).unwrap();
    }
    // A run without labels is left out, and said so.
    std::fs::write(
        dir.path().join("anomaly-free.csv"),
        "datetime;Pressure\n2020-03-09 10:00:00;1.0\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .arg("evaluate")
        .arg(dir.path())
        .args(["--detector", "mahalanobis", "--detector", "change"])
        .args(["--detector", "seasonal"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}{errors}");
    assert!(
        errors.contains("anomaly-free.csv: no `anomaly` column, left out"),
        "{errors}"
    );
    assert!(
        text.contains("2 experiments, 2000 readings, 400 labelled anomalous, 4 change points"),
        "{text}"
    );
    let row = |table: &str, detector: &str| -> Vec<String> {
        let start = text.find(table).unwrap();
        text[start..]
            .lines()
            .find(|line| line.starts_with(&format!("{detector} ")))
            .unwrap()
            .split('|')
            .map(|cell| cell.trim().to_string())
            .collect()
    };
    // The closed valve is flagged for as long as it lasts, and little else.
    let outliers = row("Outliers", "mahalanobis");
    let f1: f64 = outliers[1].parse().unwrap();
    assert!(f1 >= 0.9, "{text}");
    // The change detector fires at the closing and at the opening, early in each window.
    let changes = row("Change points", "change");
    let nab: f64 = changes[1].parse().unwrap();
    assert!(nab > 50.0, "{text}");
    assert_eq!(changes[2], "0/4", "{text}");
    // A detector that needs days of data never fires here: NAB's null score, 0.
    assert_eq!(row("Change points", "seasonal")[1], "0.0", "{text}");
    // A value that is not a number names the file, the line and the column.
    std::fs::write(
        runs.join("0.csv"),
        "datetime;Pressure;anomaly\n2020-03-09 10:00:00;high;0\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .arg("evaluate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("0.csv: line 2: Pressure: expected a number, found \"high\""),
        "{errors}"
    );
}
