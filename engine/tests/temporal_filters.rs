//! Temporal filters end to end: a running `vibelux run` whose views keep only the recent past
//! (`ts > now() - INTERVAL …`, and a windowed view's `window_end > now() - …`), read through the
//! HTTP API while readings arrive and age out, across a crash and a clean restart.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Engine, start_engine_with};

use serde_json::Value;

/// A temporal filter (`ts > now() - INTERVAL '1 minute'`, `now()` the watermark) keeps each
/// sensor's last minute: its count stays at about six readings (one every 10 s, at 60×) while the
/// readings of all time pile up, and its oldest reading moves on with the newest. Killed and
/// restarted from its checkpoint, it goes on retracting the rows it held.
#[test]
fn a_temporal_filter_keeps_the_last_minute_as_readings_arrive_age_out_and_survive_a_crash() {
    let mut engine = start_engine_with(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '2', sensors_per_zone = '5',
               interval = '10 seconds', speed = '60x', seed = '5');
         CREATE MATERIALIZED VIEW recent AS
           SELECT sensor_id, count(*) AS n, min(ts) AS oldest FROM readings
           WHERE ts > now() - INTERVAL '1 minute' AND temp_c > -100 GROUP BY sensor_id;
         CREATE MATERIALIZED VIEW all_time AS
           SELECT sensor_id, count(*) AS n, min(ts) AS first FROM readings GROUP BY sensor_id;",
        &["--state", "state", "--checkpoint-interval", "200ms"],
    );
    watch_the_last_minute(&engine, 3);
    engine.crash_and_restart();
    watch_the_last_minute(&engine, 6);
}

/// A view's current rows, from the API (none while it cannot answer).
fn view_rows(engine: &Engine, view: &str) -> Vec<Value> {
    let path = format!("/v1/views/{view}");
    let answer = common::request(&engine.address, "GET", &path, &[], None);
    serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|body| body["rows"].as_array().cloned())
        .unwrap_or_default()
}

/// A timestamp column of a view's row.
fn time(row: &Value, column: &str) -> chrono::NaiveDateTime {
    let text = row[column].as_str().unwrap();
    chrono::NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
}

/// Watches the views of the test above until every sensor's last minute lies `minutes` after
/// its first reading, checking all along that no more than a minute's readings are counted.
fn watch_the_last_minute(engine: &Engine, minutes: i64) {
    let rows = |view: &str| view_rows(engine, view);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all_time = rows("all_time");
        let recent = rows("recent");
        let counts: Vec<i64> = recent
            .iter()
            .map(|row| row["n"].as_i64().unwrap())
            .collect();
        // Readings from the last 65 s of event time (the minute, and the watermark's 5 s).
        assert!(counts.iter().all(|n| (1..=8).contains(n)), "{recent:?}");
        let first = all_time.first().map(|row| time(row, "first"));
        let aged_out = first.is_some_and(|first| {
            recent.len() == 10
                && recent
                    .iter()
                    .all(|row| time(row, "oldest") - first > chrono::TimeDelta::minutes(minutes))
        });
        if all_time.len() == 10 && aged_out {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recent {recent:?}, all time {all_time:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stopped cleanly (Ctrl-C) and started again, a temporal filter's view goes on with the same
/// last minute: its rows stay in at the stop (the frontier runs out because the sources stop,
/// not because time passed), rather than age out and refill from the readings after the restart.
#[test]
fn a_temporal_filter_keeps_its_last_minute_over_a_clean_restart() {
    let mut engine = start_engine_with(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '1 second')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '1', sensors_per_zone = '2',
               interval = '1 second', speed = 'realtime', seed = '5');
         CREATE MATERIALIZED VIEW recent AS
           SELECT sensor_id, count(*) AS n FROM readings
           WHERE ts > now() - INTERVAL '1 minute' GROUP BY sensor_id;",
        &["--state", "state", "--checkpoint-interval", "200ms"],
    );
    let counts = |engine: &Engine| -> Vec<i64> {
        let answer = common::request(&engine.address, "GET", "/v1/views/recent", &[], None);
        serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|body| body["rows"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|row| row["n"].as_i64().unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(counts(&engine).len() == 2 && counts(&engine).iter().all(|n| *n >= 6)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            counts(&engine)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.interrupt();
    engine.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let after = counts(&engine);
        if !after.is_empty() {
            assert!(
                after.len() == 2 && after.iter().all(|n| *n >= 6),
                "{after:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rows after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A windowed view bounded by a temporal filter on its windows' end (`window_end > now() -
/// INTERVAL '3 minutes'`) keeps the last three minutes of windows and the one still open: each
/// window once, with the same result as the unbounded view's, while older windows leave. Killed
/// and restarted from its checkpoint, it goes on.
#[test]
fn a_temporal_filter_keeps_a_windowed_views_last_minutes_and_survives_a_crash() {
    let mut engine = start_engine_with(
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '1', sensors_per_zone = '3',
               interval = '10 seconds', speed = '60x', seed = '5');
         CREATE MATERIALIZED VIEW minutes AS
           SELECT sensor_id, window_start, window_end, count(*) AS n, avg(temp_c) AS temp_avg
           FROM TUMBLE(readings, ts, INTERVAL '1 minute')
           GROUP BY sensor_id, window_start, window_end;
         CREATE MATERIALIZED VIEW recent_minutes AS
           SELECT * FROM minutes WHERE window_end > now() - INTERVAL '3 minutes';",
        &["--state", "state", "--checkpoint-interval", "200ms"],
    );
    watch_the_recent_windows(&engine, 6);
    engine.crash_and_restart();
    watch_the_recent_windows(&engine, 12);
}

/// Watches the views of the test above until the oldest window kept starts `minutes` after the
/// first window of all, checking all along what the bounded view holds.
fn watch_the_recent_windows(engine: &Engine, minutes: i64) {
    let rows = |view: &str| view_rows(engine, view);
    let window = |row: &Value| (row["sensor_id"].to_string(), time(row, "window_start"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let recent = rows("recent_minutes");
        let all: HashMap<_, Value> = rows("minutes")
            .into_iter()
            .map(|row| (window(&row), row))
            .collect();
        let mut kept: HashMap<String, Vec<chrono::NaiveDateTime>> = HashMap::new();
        for row in &recent {
            let (sensor, start) = window(row);
            kept.entry(sensor).or_default().push(start);
        }
        for (sensor, starts) in &mut kept {
            starts.sort();
            let before = starts.len();
            starts.dedup();
            assert_eq!(
                before,
                starts.len(),
                "{sensor}: a window twice in {recent:?}"
            );
            // Three minutes of closed windows and the open one, and one more while the
            // watermark is between the end of a window and the first reading of the next.
            assert!(starts.len() <= 5, "{sensor}: {starts:?}");
        }
        let newest = kept.values().flatten().max().copied();
        for row in &recent {
            // Windows two minutes older than the newest are closed: final in both views.
            if newest.is_some_and(|newest| {
                time(row, "window_end") <= newest - chrono::TimeDelta::minutes(1)
            }) && let Some(unbounded) = all.get(&window(row))
            {
                assert_eq!(
                    row, unbounded,
                    "the bounded view differs from the unbounded one"
                );
            }
        }
        let first = all.keys().map(|(_, start)| *start).min();
        let oldest = kept.values().flatten().min().copied();
        if let (Some(first), Some(oldest)) = (first, oldest)
            && kept.len() == 3
            && oldest - first >= chrono::TimeDelta::minutes(minutes)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recent {recent:?}, all {:?}",
            all.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
