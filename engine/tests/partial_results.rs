//! A materialized view shows a window filling up as readings arrive, long before the watermark
//! closes it; the window's final row replaces the partial ones.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vibelux::runtime::{RunOptions, start};
use vibelux_operators::row::Datum;
use vibelux_queries::planner::{Outcome, Planner};

#[test]
fn a_window_publishes_partial_results_before_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("readings.jsonl");
    let mut lines = String::new();
    // Three readings in the first minute, then time moves on to close it.
    for (second, temp) in [(1, 20.0), (20, 22.0), (40, 24.0), (130, 30.0)] {
        lines.push_str(&format!(
            "{{\"zone\":\"z1\",\"ts\":\"2026-06-01T00:{:02}:{:02}Z\",\"temp_c\":{temp}}}\n",
            second / 60,
            second % 60
        ));
    }
    std::fs::write(&data, lines).unwrap();
    let sql = format!(
        "CREATE SOURCE readings (zone TEXT, ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
           WITH (connector = 'file', path = '{}', batch_size = '1');
         SELECT zone, window_start, count(*) AS n, avg(temp_c) AS temp_avg
           FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_start;",
        data.display()
    );
    let (planner, outcomes) =
        Planner::plan_pipeline(&sql, vibelux_connectors::registry::registry()).unwrap();
    let Some(Outcome::Query { node }) = outcomes.last() else {
        panic!("expected a query")
    };
    let options = RunOptions {
        workers: 1,
        stop: Arc::new(AtomicBool::new(false)),
        capture: vec![*node],
        retention: Default::default(),
        extensible: false,
        state: None,
        cluster: None,
    };
    let mut captured = start(Arc::new(planner.plan.clone()), options)
        .unwrap()
        .join()
        .unwrap();
    let changes = captured.remove(node).unwrap();

    let first_minute = Datum::Timestamp(1_780_272_000_000_000_000);
    let first_minute_closes_at = 1_780_272_060_000u64;
    let window: Vec<_> = changes
        .iter()
        .filter(|(row, _, _)| row[1] == first_minute)
        .collect();
    // Partial counts 1 and 2 appear (dataflow time before the close) and are retracted again.
    for partial in [1, 2] {
        let shown = window
            .iter()
            .filter(|(row, time, diff)| {
                row[2] == Datum::Int64(partial) && *time < first_minute_closes_at && *diff > 0
            })
            .count();
        assert_eq!(
            shown, 1,
            "partial count {partial} not published: {changes:?}"
        );
    }
    let net: i64 = window.iter().map(|(_, _, diff)| diff).sum();
    assert_eq!(net, 1, "one row stays: {window:?}");
    let last = window.iter().rfind(|(_, _, diff)| *diff > 0).unwrap();
    assert_eq!(last.0[2..], [Datum::Int64(3), Datum::Float64(22.0)]);
}
