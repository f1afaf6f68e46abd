//! ONNX models through the engine, against real ONNX Runtime and scikit-learn: a model trained
//! by `models/iforest/train.py` on simulator data scores rows exactly as scikit-learn does;
//! versions are replaced and shadowed while the pipeline runs without losing a row; mistakes are
//! refused when the model or view is created.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::output::json_lines;
use common::{post_sql, start_engine};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Two versions of the model, trained once for the whole file on different simulated days and
/// exported the two ways the script knows.
struct Trained {
    _dir: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
}

fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let train = |name: &str, seed: &str, trees: &str, export: &str| {
            let out = dir.path().join(name);
            let status = Command::new("python3")
                .arg(repo().join("models/iforest/train.py"))
                .args(["train", "--vibelux", env!("CARGO_BIN_EXE_vibelux")])
                .arg("--out")
                .arg(&out)
                .args(["--duration", "12h", "--seed", seed, "--trees", trees])
                .args(["--export", export])
                .status()
                .expect("python3 runs the training script");
            assert!(status.success(), "training failed");
            out
        };
        // Both exports: the compact one-node forest, and skl2onnx's own converter.
        let v1 = train("v1", "11", "50", "compact");
        let v2 = train("v2", "23", "30", "skl2onnx");
        Trained { _dir: dir, v1, v2 }
    })
}

/// scikit-learn's own scores for the rows of a JSON-lines file.
fn sklearn_scores(model: &Path, rows: &Path) -> Vec<f64> {
    let output = Command::new("python3")
        .arg(repo().join("models/iforest/train.py"))
        .arg("score")
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(rows)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

const READINGS: &str = "CREATE SOURCE readings (
      sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
      temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE,
      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')";

fn run_to_end(dir: &Path, sql: &str, env: &[(&str, &str)]) -> (bool, String) {
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(["run", "pipeline.sql", "--http", "off"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.success(), text)
}

#[test]
fn predict_gives_scikit_learns_scores_and_psi_compares_with_training() {
    let models = trained();
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "{READINGS} WITH (connector = 'simulator', rooms = '2', zones_per_room = '2',
            sensors_per_zone = '2', interval = '1 minute', speed = 'max', duration = '1d', seed = '11');
         CREATE MODEL iforest FROM '{}/model.onnx' WITH (version = '1');
         CREATE VIEW scored AS
           SELECT ts, sensor_id, temp_c, rh, co2_ppm,
                  predict('iforest', temp_c, rh, co2_ppm) AS score FROM readings;
         CREATE VIEW drift AS
           SELECT window_start, psi('iforest', 'temp_c', temp_c) AS psi_temp,
                  psi('iforest', 'co2_ppm', co2_ppm + 300) AS psi_co2_shifted
           FROM TUMBLE(readings, ts, INTERVAL '12 hours') GROUP BY window_start;
         CREATE SINK scored_out FROM scored WITH (connector = 'file', path = 'scored.jsonl');
         CREATE SINK drift_out FROM drift WITH (connector = 'file', path = 'drift.jsonl');",
        models.v1.display()
    );
    let (ok, log) = run_to_end(dir.path(), &sql, &[]);
    assert!(ok, "{log}");
    let rows = json_lines(&dir.path().join("scored.jsonl"));
    assert_eq!(rows.len(), 2 * 2 * 2 * 24 * 60, "{log}");
    let expected = sklearn_scores(&models.v1, &dir.path().join("scored.jsonl"));
    assert_eq!(expected.len(), rows.len());
    let worst = rows
        .iter()
        .zip(&expected)
        .map(|(row, expected)| (row["score"].as_f64().unwrap() - expected).abs())
        .fold(0.0, f64::max);
    // The ONNX graph computes in float32, scikit-learn in float64.
    assert!(
        worst < 1e-5,
        "largest difference from scikit-learn: {worst}"
    );
    // Both signs occur: the model finds some of the day unusual, most of it not.
    assert!(rows.iter().any(|row| row["score"].as_f64().unwrap() < 0.0));

    let drift = json_lines(&dir.path().join("drift.jsonl"));
    assert_eq!(drift.len(), 2, "{drift:?}");
    // The first 12 hours are the very rows the model was trained on: no drift at all.
    let same = drift[0]["psi_temp"].as_f64().unwrap();
    assert!(same < 1e-6, "{drift:?}");
    // CO₂ 300 ppm above anything seen in training is a large drift.
    for window in &drift {
        assert!(
            window["psi_co2_shifted"].as_f64().unwrap() > 0.25,
            "{drift:?}"
        );
    }
}

/// Which of the expected score lists a row's score matches.
fn version_of(score: Option<f64>, row: usize, candidates: &[(&str, &[f64])]) -> String {
    let Some(score) = score else {
        return "null".to_string();
    };
    let matching: Vec<&str> = candidates
        .iter()
        .filter(|(_, scores)| (scores[row] - score).abs() < 1e-5)
        .map(|(name, _)| *name)
        .collect();
    match matching[..] {
        [one] => one.to_string(),
        [] => format!("neither ({score})"),
        // Both models give this row the same score: it says nothing of which one ran.
        _ => AMBIGUOUS.to_string(),
    }
}

const AMBIGUOUS: &str = "either";

#[test]
fn versions_are_replaced_and_shadowed_while_running_without_losing_rows() {
    let models = trained();
    let mut engine = start_engine(&format!(
        "{READINGS} WITH (connector = 'simulator', rooms = '2', zones_per_room = '2',
            sensors_per_zone = '2', interval = '10 seconds', speed = '60x', seed = '3');
         CREATE MODEL iforest FROM '{}/model.onnx' WITH (version = '1');
         CREATE VIEW scored AS
           SELECT ts, sensor_id, temp_c, rh, co2_ppm,
                  predict('iforest', temp_c, rh, co2_ppm) AS live,
                  predict_shadow('iforest', temp_c, rh, co2_ppm) AS shadow FROM readings;
         CREATE SINK scored_out FROM scored WITH (connector = 'file', path = 'scored.jsonl');",
        models.v1.display()
    ));
    let output = engine.dir.path().join("scored.jsonl");
    let wait_for_more = |than: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while json_lines(&output).len() < than + 100 {
            assert!(Instant::now() < deadline, "rows stopped arriving");
            std::thread::sleep(Duration::from_millis(50));
        }
        json_lines(&output).len()
    };
    let seen = wait_for_more(0);
    let (status, body) = post_sql(
        &engine,
        &format!(
            "CREATE OR REPLACE MODEL iforest FROM '{}/model.onnx' WITH (version = '2', mode = 'shadow');",
            models.v2.display()
        ),
    );
    assert_eq!(status, 200, "{body}");
    let done = body["results"][0]["done"].as_str().unwrap().to_string();
    assert!(
        done.contains("version 2 runs in shadow beside version 1"),
        "{done}"
    );
    let seen = wait_for_more(seen);
    let (status, body) = post_sql(
        &engine,
        &format!(
            "CREATE OR REPLACE MODEL iforest FROM '{}/model.onnx' WITH (version = '2'); SHOW MODELS;",
            models.v2.display()
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["rows"][0][1], "2", "{body}");
    wait_for_more(seen);
    let log = engine.interrupt();

    let rows = json_lines(&output);
    let v1 = sklearn_scores(&models.v1, &output);
    let v2 = sklearn_scores(&models.v2, &output);
    let candidates: [(&str, &[f64]); 2] = [("v1", &v1), ("v2", &v2)];
    // Each row's phase: live version / shadow version.
    let mut phases: Vec<String> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let phase = format!(
            "{}/{}",
            version_of(row["live"].as_f64(), index, &candidates),
            version_of(row["shadow"].as_f64(), index, &candidates)
        );
        if phases.last() != Some(&phase) && !phase.contains(AMBIGUOUS) {
            phases.push(phase);
        }
    }
    assert_eq!(phases, ["v1/null", "v1/v2", "v2/null"], "{log}");
    // Every row the source produced was scored and written.
    let produced: usize = log
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("readings: ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|count| count.parse().ok())
        })
        .unwrap_or_else(|| panic!("no summary in {log}"));
    assert_eq!(rows.len(), produced, "{log}");
}

#[test]
fn model_mistakes_are_refused_when_created_with_what_to_do() {
    let models = trained();
    let dir = tempfile::tempdir().unwrap();
    let source =
        format!("{READINGS} WITH (connector = 'simulator', speed = 'max', duration = '1h');\n");
    let model = format!(
        "CREATE MODEL iforest FROM '{}/model.onnx';\n",
        models.v1.display()
    );
    let refused = |sql: &str, env: &[(&str, &str)], expected: &str| {
        let (ok, log) = run_to_end(dir.path(), sql, env);
        assert!(
            !ok && log.contains(expected),
            "expected {expected:?} in:\n{log}"
        );
    };
    refused(
        &format!(
            "{source}{model}CREATE VIEW s AS SELECT predict('iforest', temp_c, rh) AS score FROM readings;"
        ),
        &[],
        "6:1: model iforest takes 3 features (temp_c, rh, co2_ppm), but predict gives it 2",
    );
    refused(
        &format!(
            "{source}{model}CREATE VIEW s AS SELECT predict('iforest', temp_c, rh, sensor_id) AS score FROM readings;"
        ),
        &[],
        "predict: feature 3 is Utf8; models take numbers",
    );
    refused(
        &format!(
            "{source}CREATE MODEL m FROM '{}/model.onnx' WITH (output = 'probability');",
            models.v2.display()
        ),
        &[],
        "has no output `probability`; its outputs: label: i64[N, 1], scores: f32[N, 1]",
    );
    refused(
        &format!(
            "{source}{model}CREATE VIEW d AS SELECT window_start, psi('iforest', 'ppfd', temp_c) AS p FROM TUMBLE(readings, ts, INTERVAL '1 hour') GROUP BY window_start;"
        ),
        &[],
        "psi: model iforest has no reference for `ppfd`; it has: temp_c, rh, co2_ppm",
    );
    refused(
        &format!(
            "{source}{model}CREATE MODEL iforest FROM '{}/model.onnx';",
            models.v2.display()
        ),
        &[],
        "model iforest already exists; CREATE OR REPLACE MODEL installs a new version",
    );
    // Without ONNX Runtime, models are refused with how to install it, and the rest works.
    let missing = [("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")];
    refused(
        &format!("{source}{model}"),
        &missing,
        "ORT_DYLIB_PATH is /nonexistent/libonnxruntime.so, which is not a file; install it with `python3 -m pip install onnxruntime==1.31.1`",
    );
    let (ok, log) = run_to_end(
        dir.path(),
        &format!(
            "{source}CREATE VIEW v AS SELECT vpd_air(temp_c, rh) AS vpd FROM readings;
             CREATE SINK out FROM v WITH (connector = 'file', path = 'vpd.jsonl');"
        ),
        &missing,
    );
    assert!(ok, "{log}");
}
