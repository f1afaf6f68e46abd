//! Cultivation functions in a running pipeline: values in a view, refusals counted in /metrics.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::output::wait_for_lines;
use common::start_engine;

#[test]
fn out_of_range_inputs_are_null_and_counted_in_metrics() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("climate.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"room":"r1","ts":"2026-06-01T00:00:01Z","temp_c":25.0,"rh":60}"#,
            "\n",
            r#"{"room":"r2","ts":"2026-06-01T00:00:02Z","temp_c":24.0,"rh":140}"#,
            "\n",
            r#"{"room":"r3","ts":"2026-06-01T00:00:03Z","temp_c":95.0,"rh":50}"#,
            "\n",
        ),
    )
    .unwrap();
    let engine = start_engine(&format!(
        "CREATE SOURCE climate (room TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
           WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{}', mode = 'tail');
         CREATE VIEW vpd AS SELECT room, vpd_air(temp_c, rh) AS vpd_kpa,
           dew_point(temp_c, rh) AS dew_c FROM climate;
         CREATE SINK out FROM vpd WITH (connector = 'file', path = 'vpd.jsonl');",
        input.display()
    ));
    let rows = wait_for_lines(&engine.dir.path().join("vpd.jsonl"), 3);
    assert!(
        (rows[0]["vpd_kpa"].as_f64().unwrap() - 1.267).abs() < 0.001,
        "{rows:?}"
    );
    assert!(
        rows[1]["vpd_kpa"].is_null() && rows[2]["dew_c"].is_null(),
        "{rows:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{}/metrics", engine.address))
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&output.stdout).to_string();
        if metrics.contains("vibelux_function_out_of_range_total{function=\"vpd_air\"} 2")
            && metrics.contains("vibelux_function_out_of_range_total{function=\"dew_point\"} 2")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
