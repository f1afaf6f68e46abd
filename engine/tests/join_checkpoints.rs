//! Joins and TOP-N end to end through kill -9: a replay killed at random moments and restarted
//! each time ends with the same outputs as a run that was never interrupted (a join with a
//! table, joins with conditions beside the equality, an interval join, an as-of join, a TOP-N
//! over an updating aggregate).

use std::collections::BTreeMap;
use std::path::Path;

mod common;
use common::replays::{
    Interruption, Lcg, folder_with, run_interrupted, run_to_end, sorted_lines, stop_mid_replay,
};

fn folder(rows: usize) -> tempfile::TempDir {
    folder_with(JOIN_PIPELINE, rows)
}

/// Readings joined with a table of zone names (a LEFT join: the zone without a name keeps its
/// readings, named NULL), then windowed. A regular join keeps every stream row (its retractions
/// need them), so its checkpoints grow with the input: a smaller replay.
const JOIN_PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE TABLE zones (zone TEXT, name TEXT, PRIMARY KEY (zone))
  WITH (connector = 'file', path = 'zones.csv', format = 'csv');
CREATE VIEW named AS
  SELECT r.ts, r.temp_c, z.name FROM readings r LEFT JOIN zones z ON r.zone = z.zone;
CREATE VIEW name_minute AS
  SELECT name, window_start, count(*) AS n, max(temp_c) AS temp_max
  FROM TUMBLE(named, ts, INTERVAL '1 minute') GROUP BY name, window_start;
CREATE SINK name_minute_out FROM name_minute
  WITH (connector = 'file', path = 'out/name_minute.jsonl');
";

#[test]
fn a_join_with_a_table_killed_at_random_moments_ends_with_the_same_results() {
    let with_join = |dir: &tempfile::TempDir| {
        std::fs::write(dir.path().join("pipeline.sql"), JOIN_PIPELINE).unwrap();
    };
    let reference = folder(40_000);
    with_join(&reference);
    run_to_end(reference.path(), &["--no-state"]);
    let resumed = folder(40_000);
    with_join(&resumed);
    let args = ["--checkpoint-interval", "50ms"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 4);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    let joined = sorted_lines(&reference.path().join("out/name_minute.jsonl"));
    // Three of the four zones have a name, and the fourth's readings come unnamed: 4 × 33
    // minutes.
    assert!(joined.len() >= 132, "{} joined windows", joined.len());
    assert!(joined.iter().any(|window| window.contains("\"name\":null")));
    assert_eq!(
        sorted_lines(&resumed.path().join("out/name_minute.jsonl")),
        joined,
        "the windows over the join differ"
    );
}

#[test]
fn a_join_with_a_table_resumed_with_other_worker_counts_ends_with_the_same_results() {
    let reference = folder(40_000);
    run_to_end(reference.path(), &["--no-state"]);
    // Two workers, then three, then one to the end: both arrangements' rows are shared out
    // among the new workers by key, and fed back without repeating a pair.
    let dir = folder(40_000);
    let args = |workers| ["--checkpoint-interval", "50ms", "--workers", workers];
    stop_mid_replay(dir.path(), &args("2"));
    let log = stop_mid_replay(dir.path(), &args("3"));
    assert!(log.contains("its state is shared out among 3"), "{log}");
    run_to_end(dir.path(), &args("1"));
    assert_eq!(
        sorted_lines(&dir.path().join("out/name_minute.jsonl")),
        sorted_lines(&reference.path().join("out/name_minute.jsonl")),
        "the windows over the join differ"
    );
}

/// A second view on the same join inputs: the readings' columns the first view reads, and the
/// zones, each by zone (a join's inputs carry the columns the view reads: a view reading other
/// columns of the readings arranges them again).
const PAIRED_VIEW: &str = "
CREATE VIEW paired AS SELECT r.ts, r.temp_c, z.name FROM readings r JOIN zones z ON r.zone = z.zone;
CREATE VIEW paired_minute AS SELECT name, window_start, count(*) AS n, min(temp_c) AS temp_min
  FROM TUMBLE(paired, ts, INTERVAL '1 minute') GROUP BY name, window_start;
CREATE SINK paired_out FROM paired_minute
  WITH (connector = 'file', path = 'out/paired_minute.jsonl');
";

#[test]
fn a_view_added_mid_replay_joins_the_rows_the_shared_arrangements_kept() {
    let both = format!("{JOIN_PIPELINE}{PAIRED_VIEW}");
    let reference = folder_with(&both, 40_000);
    run_to_end(reference.path(), &["--no-state"]);
    // The first view's join arranges the readings and the zones by zone; the view added at the
    // restart reads the same arrangements, restored, so it joins the readings read before it
    // existed too, and no arrangement starts empty.
    let dir = folder(40_000);
    let args = ["--checkpoint-interval", "50ms"];
    stop_mid_replay(dir.path(), &args);
    std::fs::write(dir.path().join("pipeline.sql"), &both).unwrap();
    let log = run_to_end(dir.path(), &args);
    assert!(!log.contains("arranged by join key"), "{log}");
    for output in ["out/paired_minute.jsonl", "out/name_minute.jsonl"] {
        assert_eq!(
            sorted_lines(&dir.path().join(output)),
            sorted_lines(&reference.path().join(output)),
            "{output} differs"
        );
    }
}

/// Joins with a condition beside the equality, both ways they run: a LEFT JOIN with a view
/// that has two names per zone and no key (pairs met, and the rows that met none padded), and
/// a NOT EXISTS with the table by its key (the plain join, its one pair tested).
const CONDITIONAL_JOIN_PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE TABLE zones (zone TEXT, name TEXT, PRIMARY KEY (zone))
  WITH (connector = 'file', path = 'zones.csv', format = 'csv');
CREATE VIEW zone_names AS
  SELECT zone, name FROM zones UNION ALL SELECT zone, substr(name, 1, 2) AS name FROM zones;
CREATE VIEW warm AS SELECT r.ts, r.temp_c, z.name
  FROM readings r LEFT JOIN zone_names z ON r.zone = z.zone AND r.temp_c > 19.0 + length(z.name);
CREATE VIEW warm_minute AS SELECT name, window_start, count(*) AS n, max(temp_c) AS temp_max
  FROM TUMBLE(warm, ts, INTERVAL '1 minute') GROUP BY name, window_start;
CREATE SINK warm_out FROM warm_minute WITH (connector = 'file', path = 'out/warm_minute.jsonl');
CREATE VIEW cool AS SELECT r.ts, r.temp_c FROM readings r
  WHERE NOT EXISTS (SELECT 1 FROM zones z WHERE z.zone = r.zone AND r.temp_c > 19.0 + length(z.name));
CREATE VIEW cool_minute AS SELECT window_start, count(*) AS n
  FROM TUMBLE(cool, ts, INTERVAL '1 minute') GROUP BY window_start;
CREATE SINK cool_out FROM cool_minute WITH (connector = 'file', path = 'out/cool_minute.jsonl');
";

#[test]
fn joins_with_conditions_killed_at_random_moments_end_with_the_same_results() {
    let reference = folder_with(CONDITIONAL_JOIN_PIPELINE, 40_000);
    run_to_end(reference.path(), &["--no-state"]);
    let resumed = folder_with(CONDITIONAL_JOIN_PIPELINE, 40_000);
    let args = ["--checkpoint-interval", "50ms"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 4);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    let warm = sorted_lines(&reference.path().join("out/warm_minute.jsonl"));
    // Names that met the condition, their two-letter forms, and readings that met none.
    for name in ["\"name\":\"north\"", "\"name\":\"no\"", "\"name\":null"] {
        assert!(
            warm.iter().any(|window| window.contains(name)),
            "{name}: {warm:?}"
        );
    }
    let cool = sorted_lines(&reference.path().join("out/cool_minute.jsonl"));
    assert!(cool.len() >= 30, "{} windows", cool.len());
    for (output, expected) in [
        ("out/warm_minute.jsonl", warm),
        ("out/cool_minute.jsonl", cool),
    ] {
        assert_eq!(
            sorted_lines(&resumed.path().join(output)),
            expected,
            "{output} differs"
        );
    }
}

/// The three warmest sensors of each zone so far, as a changelog: each sensor's maximum
/// updates, and the first three of its zone follow.
const TOP_N_PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE VIEW hottest AS SELECT zone, sensor_id, max(temp_c) AS temp_max FROM readings GROUP BY zone, sensor_id;
CREATE VIEW podium AS SELECT zone, sensor_id, temp_max, place FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY zone ORDER BY temp_max DESC) AS place FROM hottest)
  WHERE place <= 3;
CREATE SINK podium_out FROM podium WITH (connector = 'file', path = 'out/podium.jsonl');
";

/// Each reading paired with the same sensor's readings of the next two seconds (an interval join
/// of the stream with itself; a LEFT join, so the readings none followed come out too, once they
/// can meet none), then counted per sensor-minute.
const INTERVAL_JOIN_PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE VIEW rises AS SELECT a.sensor_id, a.ts, b.temp_c - a.temp_c AS rise
  FROM readings a LEFT JOIN readings b
  ON a.sensor_id = b.sensor_id AND b.ts BETWEEN a.ts + INTERVAL '1 millisecond' AND a.ts + INTERVAL '2 seconds';
CREATE VIEW rise_minute AS SELECT sensor_id, window_start, count(*) AS n, count(rise) AS rises,
  round(max(rise), 6) AS top
  FROM TUMBLE(rises, ts, INTERVAL '1 minute') GROUP BY sensor_id, window_start;
CREATE SINK rise_minute_out FROM rise_minute WITH (connector = 'file', path = 'out/rise_minute.jsonl');
";

#[test]
fn an_interval_join_killed_at_random_moments_ends_with_the_same_results() {
    let with_pipeline = |dir: &tempfile::TempDir| {
        std::fs::write(dir.path().join("pipeline.sql"), INTERVAL_JOIN_PIPELINE).unwrap();
    };
    let reference = folder(200_000);
    with_pipeline(&reference);
    run_to_end(reference.path(), &["--no-state"]);
    let resumed = folder(200_000);
    with_pipeline(&resumed);
    let args = ["--checkpoint-interval", "50ms"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 6);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    let windows = sorted_lines(&reference.path().join("out/rise_minute.jsonl"));
    // 20 sensors over 10,000 seconds of readings: about 167 minutes each.
    assert!(windows.len() >= 3_000, "{} windows", windows.len());
    // Some readings had no other within two seconds after them.
    let unmatched = |window: &String| {
        let row: serde_json::Value = serde_json::from_str(window).unwrap();
        row["n"].as_i64() != row["rises"].as_i64()
    };
    assert!(windows.iter().filter(|w| unmatched(w)).count() > 100);
    assert_eq!(
        sorted_lines(&resumed.path().join("out/rise_minute.jsonl")),
        windows,
        "the windows over the interval join differ"
    );
}

/// Each reading with its zone's target in force when it was taken (an as-of join to a versioned
/// table whose versions come as fast as the readings, so rows wait for them and some wait
/// across checkpoints), then windowed.
const AS_OF_JOIN_PIPELINE: &str = "
CREATE SOURCE readings (sensor_id TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'file', path = 'in.jsonl');
CREATE TABLE targets (zone TEXT, valid_from TIMESTAMP, target_c DOUBLE, PRIMARY KEY (zone),
  WATERMARK FOR valid_from AS valid_from - INTERVAL '3 seconds')
  WITH (connector = 'file', path = 'targets.jsonl');
CREATE VIEW deviations AS SELECT r.zone, r.ts, r.temp_c - t.target_c AS deviation
  FROM readings r LEFT JOIN targets FOR SYSTEM_TIME AS OF r.ts AS t ON r.zone = t.zone;
CREATE VIEW deviation_minute AS SELECT zone, window_start, count(*) AS n,
  count(deviation) AS matched, max(deviation) AS top, min(deviation) AS bottom
  FROM TUMBLE(deviations, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE SINK deviation_minute_out FROM deviation_minute
  WITH (connector = 'file', path = 'out/deviation_minute.jsonl');
";

/// A target per zone every 2 s from 10 s after the readings begin (the first readings meet
/// none), slightly out of order; for 40 zones, of which the readings have 4, so that the
/// targets come no faster than the readings and rows wait for them.
fn write_targets(dir: &Path, seconds: i64, first_second: i64) {
    let mut random = Lcg(11);
    let mut text = String::new();
    for step in 5..seconds / 2 {
        for zone in 0..40 {
            let millis = (first_second + 2 * step) * 1000 + random.below(2000) as i64;
            let valid_from = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let target = 20.0 + random.below(50) as f64 / 10.0;
            text.push_str(&format!(
                "{{\"zone\": \"z{zone}\", \"valid_from\": \"{valid_from}\", \"target_c\": {target}}}\n"
            ));
        }
    }
    std::fs::write(dir.join("targets.jsonl"), text).unwrap();
}

#[test]
fn an_as_of_join_killed_at_random_moments_ends_with_the_same_results() {
    let with_pipeline = |dir: &tempfile::TempDir| {
        std::fs::write(dir.path().join("pipeline.sql"), AS_OF_JOIN_PIPELINE).unwrap();
        write_targets(dir.path(), 10_000, 1_717_200_000);
    };
    let reference = folder(200_000);
    with_pipeline(&reference);
    run_to_end(reference.path(), &["--no-state", "--workers", "2"]);
    let resumed = folder(200_000);
    with_pipeline(&resumed);
    let args = ["--checkpoint-interval", "50ms", "--workers", "2"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 8);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    let windows = sorted_lines(&reference.path().join("out/deviation_minute.jsonl"));
    // 4 zones over 10,000 seconds of readings: about 167 minutes each; the first minute's
    // first readings meet no target.
    assert!(windows.len() >= 660, "{} windows", windows.len());
    assert!(windows[0].contains("\"matched\":"), "{}", windows[0]);
    let rows: i64 = windows
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 200_000, "every reading leaves the join once");
    assert_eq!(
        sorted_lines(&resumed.path().join("out/deviation_minute.jsonl")),
        windows,
        "the windows over the as-of join differ"
    );
}

/// What a changelog file holds in the end: each row with its count of inserts less deletes.
fn net_rows(path: &Path) -> BTreeMap<String, i64> {
    let mut net = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).unwrap();
        let op = row.remove("_op").unwrap();
        *net.entry(serde_json::Value::Object(row).to_string())
            .or_default() += if op == "insert" { 1 } else { -1 };
    }
    net.retain(|_, count| *count != 0);
    net
}

#[test]
fn a_top_n_killed_at_random_moments_ends_with_the_same_first_rows() {
    let with_top_n = |dir: &tempfile::TempDir| {
        std::fs::write(dir.path().join("pipeline.sql"), TOP_N_PIPELINE).unwrap();
    };
    // A top-N keeps little state and runs fast: more readings, so that a run lasts long enough
    // to be killed.
    let reference = folder(300_000);
    with_top_n(&reference);
    run_to_end(reference.path(), &["--no-state", "--workers", "2"]);
    let resumed = folder(300_000);
    with_top_n(&resumed);
    let args = ["--checkpoint-interval", "50ms", "--workers", "2"];
    let (interrupted, logs) = run_interrupted(resumed.path(), &args, Interruption::Kill, 5);
    assert!(
        interrupted >= 2,
        "only {interrupted} interruptions:\n{logs}"
    );
    assert!(logs.contains("resuming from checkpoint"), "{logs}");
    let podium = net_rows(&reference.path().join("out/podium.jsonl"));
    // Four zones, three places each, every row once.
    assert_eq!(podium.len(), 12, "{podium:?}");
    assert!(podium.values().all(|count| *count == 1), "{podium:?}");
    assert_eq!(
        net_rows(&resumed.path().join("out/podium.jsonl")),
        podium,
        "the first rows after the kills differ"
    );
}
