//! `vibelux score` in a pipe: one flushed line out per line in, before stdin ends.

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
    for i in 0..200 {
        let value = 21.0 + (i as f64 / 10.0).sin() * 0.5 + ((i * 31) % 7) as f64 * 0.03;
        let value = if i == 150 { 30.0 } else { value };
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
        errors.contains("line 202: value: expected a number, found \"warm\""),
        "{errors}"
    );
    assert!(
        scores[..30].iter().all(String::is_empty),
        "warm-up: {:?}",
        &scores[..30]
    );
    let spike: f64 = scores[150].parse().unwrap();
    assert!(spike > 0.99, "{spike}");
    let calm: Vec<f64> = scores[120..150]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(calm.iter().all(|score| *score < 0.99), "{calm:?}");
}

#[test]
fn an_unknown_detector_is_refused_with_the_choices() {
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .args(["score", "--detector", "prophet"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("unknown detector `prophet`: use zscore, ewma or robust")
    );
}
