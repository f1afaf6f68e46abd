//! Interval joins over streams long enough for rows to leave their state while they run: every
//! pair is still found (a row that left too early would lose some), and every row that met
//! nothing comes out once, in time for the windows after the join.

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

/// Readings of 10 sensors every 100 ms each, out of order by up to 50 ms; sensors 0–4 miss 15
/// readings (1.5 s) of every 100, so the reading before each gap has none in the second after
/// it, and it is in the last 200 ms of a 10-second window, so it comes out of a join after that
/// window's end plus the readings' lateness. Returns the file and each reading's (sensor,
/// millisecond).
fn readings_with_gaps(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(i64, i64)>) {
    let mut kept = Vec::new();
    let mut lines: Vec<(i64, String)> = Vec::new();
    for i in 0..20_000i64 {
        let (sensor, step) = (i % 10, i / 10);
        if sensor < 5 && !(14..99).contains(&(step % 100)) && step >= 100 {
            continue;
        }
        let millis = 1_780_000_000_000 + 10 * i;
        let stamp = chrono::DateTime::from_timestamp_millis(millis)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        kept.push((sensor, millis));
        let line = format!("{{\"sensor_id\": \"s{sensor}\", \"ts\": \"{stamp}\"}}\n");
        lines.push((10 * i + (i * 7919) % 5 * 10, line));
    }
    lines.sort_by_key(|(at, _)| *at);
    let input = dir.join("gaps.jsonl");
    std::fs::write(
        &input,
        lines.into_iter().map(|(_, line)| line).collect::<String>(),
    )
    .unwrap();
    (input, kept)
}

#[test]
fn outer_and_anti_interval_joins_give_each_unmatched_row_once_in_time_for_the_windows_after() {
    let dir = tempfile::tempdir().unwrap();
    let (input, readings) = readings_with_gaps(dir.path());
    // The readings none of the same sensor's followed within (0, 1 s], worked out directly.
    let followed = |&(sensor, at): &(i64, i64)| {
        readings
            .iter()
            .any(|&(other, then)| other == sensor && then > at && then <= at + 1_000)
    };
    let unmatched: Vec<(i64, i64)> = readings.iter().copied().filter(|r| !followed(r)).collect();
    // 5 sensors × 20 gaps (the last at the series' end), and the other sensors' last readings.
    assert_eq!(unmatched.len(), 5 * 20 + 5);
    let pairs: usize = readings
        .iter()
        .map(|&(sensor, at)| {
            readings
                .iter()
                .filter(|&&(other, then)| other == sensor && then > at && then <= at + 1_000)
                .count()
        })
        .sum();
    let mut planner = Planner::new(vibelux_connectors::registry::with_audit_trail(
        &dir.path().join("audit.jsonl"),
    ));
    let pipeline = format!(
        "CREATE SOURCE readings (sensor_id TEXT, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
           WITH (connector = 'file', path = '{}', batch_size = '64');
         CREATE VIEW silent AS SELECT a.sensor_id, a.ts FROM readings a WHERE NOT EXISTS (
           SELECT 1 FROM readings b WHERE b.sensor_id = a.sensor_id
             AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL '1 second');
         SELECT window_start, count(*) FROM TUMBLE(silent, ts, INTERVAL '10 seconds')
           GROUP BY window_start;
         SELECT count(*), count(b.ts) FROM readings a LEFT JOIN readings b
           ON a.sensor_id = b.sensor_id AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL '1 second';",
        input.display()
    );
    let mut queries = Vec::new();
    for statement in parse_pipeline(&pipeline).unwrap() {
        if let Outcome::Query { node } = planner.execute(&statement).unwrap() {
            queries.push(node);
        }
    }
    let [windows, left_join] = queries[..] else {
        panic!("two queries: {queries:?}")
    };
    // The silent readings per 10-second window, worked out directly.
    let mut expected_windows = std::collections::BTreeMap::<i64, i64>::new();
    for (_, at) in &unmatched {
        *expected_windows
            .entry(at - at.rem_euclid(10_000))
            .or_default() += 1;
    }
    use vibelux_interfaces::row::Datum;
    for workers in [1, 2] {
        let mut rows = query_to_completion(&planner.plan, windows, workers).unwrap();
        rows.sort();
        let counted: std::collections::BTreeMap<i64, i64> = rows
            .iter()
            .map(|row| match (&row[0], &row[1]) {
                (Datum::Timestamp(start), Datum::Int64(count)) => (start / 1_000_000, *count),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(counted, expected_windows, "{workers} workers");
        // A LEFT join: every pair, and each unmatched reading once (count(b.ts) skips its NULL).
        let rows = query_to_completion(&planner.plan, left_join, workers).unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Datum::Int64((pairs + unmatched.len()) as i64),
                Datum::Int64(pairs as i64)
            ]],
            "{workers} workers"
        );
    }
}
