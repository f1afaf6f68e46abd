//! An interval join over streams long enough for rows to leave its state while it runs: every
//! pair is still found (a row that left too early would lose some).

use vibelux::pipeline::query_to_completion;
use vibelux_queries::parser::parse_pipeline;
use vibelux_queries::planner::{Outcome, Planner};

#[test]
fn every_pair_within_the_interval_is_found_while_rows_leave_the_state() {
    let dir = tempfile::tempdir().unwrap();
    // 10 sensors, a reading every 100 ms each (one every 10 ms in all), lines out of order by
    // up to 50 ms; read 64 lines at a time so the frontier moves all along.
    let readings = 20_000i64;
    let mut lines: Vec<(i64, String)> = (0..readings)
        .map(|i| {
            let millis = 1_780_000_000_000 + 10 * i;
            let stamp = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let line = format!(
                "{{\"sensor_id\": \"s{}\", \"ts\": \"{stamp}\", \"seq\": {i}}}\n",
                i % 10
            );
            (10 * i + (i * 7919) % 5 * 10, line)
        })
        .collect();
    lines.sort_by_key(|(at, _)| *at);
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        lines.into_iter().map(|(_, line)| line).collect::<String>(),
    )
    .unwrap();
    let mut planner = Planner::new(vibelux_connectors::registry::with_audit_trail(
        &dir.path().join("audit.jsonl"),
    ));
    let pipeline = format!(
        "CREATE SOURCE readings (sensor_id TEXT, ts TIMESTAMP, seq BIGINT,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = '{}', batch_size = '64');
         SELECT a.sensor_id, count(*) FROM readings a JOIN readings b
           ON a.sensor_id = b.sensor_id AND b.ts BETWEEN a.ts + INTERVAL '1 millisecond' AND a.ts + INTERVAL '1 second'
         GROUP BY a.sensor_id;",
        input.display()
    );
    let mut node = None;
    for statement in parse_pipeline(&pipeline).unwrap() {
        if let Outcome::Query { node: query } = planner.execute(&statement).unwrap() {
            node = Some(query);
        }
    }
    for workers in [1, 2] {
        let rows = query_to_completion(&planner.plan, node.unwrap(), workers).unwrap();
        assert_eq!(rows.len(), 10, "{rows:?}");
        for row in rows {
            // Each of a sensor's 2,000 readings meets the next ten (100 ms to 1 s later), but
            // the last ten readings meet fewer: 2,000 × 10 − (10 + 9 + … + 1).
            assert_eq!(
                row[1],
                vibelux_interfaces::row::Datum::Int64(19_945),
                "{row:?}"
            );
        }
    }
}
