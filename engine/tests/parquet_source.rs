//! The `parquet` source end to end: a backfill over a Hive-partitioned folder that DuckDB wrote
//! gives the windows DuckDB computes over it; files pyarrow wrote with other types (timestamps in
//! milliseconds with a zone, 32-bit numbers, dictionary strings) read as declared; a type that
//! cannot be read is an error naming the column and the file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn python(dir: &Path, script: &str) -> String {
    let output = Command::new("python3")
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Runs `sql` afresh: each test here runs several pipelines in one folder, each a whole replay
/// (resuming is `checkpoints.rs`'s subject).
fn run(dir: &Path, sql: &str, workers: &str) -> Output {
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vibelux"))
        .current_dir(dir)
        .args([
            "run",
            "--http",
            "off",
            "--no-state",
            "--workers",
            workers,
            "pipeline.sql",
        ])
        .output()
        .unwrap()
}

/// `room,window_start,n,avg,max` lines, averages to 9 decimals.
fn windows_from_jsonl(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            format!(
                "{},{},{},{:.9},{:.9}",
                row["room"].as_str().unwrap(),
                row["window_start"].as_str().unwrap(),
                row["n"],
                row["temp_avg"].as_f64().unwrap(),
                row["temp_max"].as_f64().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_backfill_over_a_duckdb_warehouse_gives_the_windows_duckdb_computes() {
    let dir = tempfile::tempdir().unwrap();
    // Three rooms, four sensors each, a reading a minute for six hours, partitioned by room the
    // way DuckDB writes Hive folders; each room's file spans the whole six hours.
    let expected = python(
        dir.path(),
        "import duckdb
duckdb.sql('''
CREATE TABLE readings AS
SELECT 'r0' || (s % 3)::VARCHAR AS room, 's' || s::VARCHAR AS sensor_id,
       TIMESTAMP '2026-05-01 00:00:00' + INTERVAL (m) MINUTE + INTERVAL (s) SECOND AS ts,
       round(18 + 8 * random(), 3) AS temp_c
FROM range(12) t(s), range(360) u(m)''')
duckdb.sql(\"COPY readings TO 'history' (FORMAT PARQUET, PARTITION_BY (room))\")
for row in duckdb.sql('''
SELECT room, strftime(time_bucket(INTERVAL '10 minutes', ts), '%Y-%m-%dT%H:%M:%S.000'),
       count(*), avg(temp_c), max(temp_c)
FROM readings GROUP BY ALL ORDER BY ALL''').fetchall():
    print('%s,%s,%d,%.9f,%.9f' % row)",
    );
    let expected: BTreeSet<String> = expected.lines().map(str::to_string).collect();
    assert_eq!(expected.len(), 3 * 36);
    let sql = "CREATE SOURCE history (room TEXT, sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'parquet', path = 'history');
         CREATE VIEW ten_minutes AS
           SELECT room, window_start, count(*) AS n, avg(temp_c) AS temp_avg, max(temp_c) AS temp_max
           FROM TUMBLE(history, ts, INTERVAL '10 minutes') GROUP BY room, window_start;
         CREATE SINK windows FROM ten_minutes WITH (connector = 'file', path = 'out/windows.jsonl');";
    for workers in ["1", "2"] {
        let output = run(dir.path(), sql, workers);
        assert!(output.status.success(), "{}", text(&output));
        assert!(
            text(&output).contains("history: 4320 rows, 0 dead letters, 0 late"),
            "{}",
            text(&output)
        );
        let windows = windows_from_jsonl(&dir.path().join("out/windows.jsonl"));
        assert_eq!(windows, expected, "{workers} workers");
    }
}

#[test]
fn files_pyarrow_wrote_with_other_types_read_as_declared() {
    let dir = tempfile::tempdir().unwrap();
    python(
        dir.path(),
        "import pyarrow as pa, pyarrow.parquet as pq, datetime
utc = datetime.timezone.utc
t0 = datetime.datetime(2026, 6, 1, tzinfo=utc)
table = pa.table({
    'ts': pa.array([t0 + datetime.timedelta(seconds=s) for s in (30, 10, 20)], pa.timestamp('ms', tz='UTC')),
    'sensor_id': pa.array(['a', 'b', 'a']).dictionary_encode(),
    'count': pa.array([1, 2, 3], pa.int32()),
    'temp_c': pa.array([20.5, 21.5, None], pa.float32()),
    'tags': pa.array([[1], [2], [3]], pa.list_(pa.int64())),
})
pq.write_table(table, 'readings.parquet')",
    );
    let sql = "CREATE SOURCE readings (sensor_id TEXT, ts TIMESTAMP, count BIGINT, temp_c DOUBLE,
           WATERMARK FOR ts AS ts)
         WITH (connector = 'parquet', path = 'readings.parquet');
         CREATE SINK rows FROM readings WITH (connector = 'file', path = 'out/rows.jsonl');";
    let output = run(dir.path(), sql, "1");
    assert!(output.status.success(), "{}", text(&output));
    // In event-time order, whatever the order in the file.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/rows.jsonl")).unwrap(),
        "{\"sensor_id\":\"b\",\"ts\":\"2026-06-01T00:00:10.000\",\"count\":2,\"temp_c\":21.5}\n\
         {\"sensor_id\":\"a\",\"ts\":\"2026-06-01T00:00:20.000\",\"count\":3,\"temp_c\":null}\n\
         {\"sensor_id\":\"a\",\"ts\":\"2026-06-01T00:00:30.000\",\"count\":1,\"temp_c\":20.5}\n"
    );
    // A list cannot be read as a number: the run says which column of which file.
    let sql = "CREATE SOURCE readings (ts TIMESTAMP, tags DOUBLE, WATERMARK FOR ts AS ts)
         WITH (connector = 'parquet', path = 'readings.parquet');
         CREATE SINK rows FROM readings WITH (connector = 'file', path = 'out/tags.jsonl');";
    let output = run(dir.path(), sql, "1");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("column `tags` of readings.parquet: its Parquet type List")
            && text(&output).contains("cannot be read as DOUBLE"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_warehouse_we_wrote_replays_into_a_new_view() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE SOURCE readings (sensor_id TEXT NOT NULL, room TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '2', zones_per_room = '1', sensors_per_zone = '3',
               interval = '1 minute', speed = 'max', start = '2026-06-01T00:00:00', duration = '2 hours');
         CREATE SINK wh FROM readings WITH (connector = 'parquet', path = 'warehouse/readings',
           partition_by = 'date(ts), room', rollover_rows = '100');
         CREATE VIEW per_room AS SELECT room, window_start, count(*) AS n
           FROM TUMBLE(readings, ts, INTERVAL '30 minutes') GROUP BY room, window_start;
         CREATE SINK live FROM per_room WITH (connector = 'file', path = 'out/live.jsonl');";
    let output = run(dir.path(), sql, "1");
    assert!(output.status.success(), "{}", text(&output));
    let backfill =
        "CREATE SOURCE history (sensor_id TEXT NOT NULL, room TEXT, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'parquet', path = 'warehouse/readings');
         CREATE VIEW per_room AS SELECT room, window_start, count(*) AS n
           FROM TUMBLE(history, ts, INTERVAL '30 minutes') GROUP BY room, window_start;
         CREATE SINK again FROM per_room WITH (connector = 'file', path = 'out/again.jsonl');";
    let output = run(dir.path(), backfill, "2");
    assert!(output.status.success(), "{}", text(&output));
    let lines = |name: &str| -> BTreeSet<String> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let live = lines("out/live.jsonl");
    assert_eq!(live.len(), 2 * 4, "{live:?}");
    assert_eq!(lines("out/again.jsonl"), live);
}

#[test]
fn a_corrupt_file_is_one_dead_letter_and_the_replay_reads_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("history")).unwrap();
    python(
        dir.path(),
        "import pyarrow as pa, pyarrow.parquet as pq, datetime
t0 = datetime.datetime(2026, 6, 1)
pq.write_table(pa.table({
    'ts': pa.array([t0 + datetime.timedelta(seconds=s) for s in range(5)], pa.timestamp('us')),
    'temp_c': pa.array([20.0, 21.0, 22.0, 23.0, 24.0]),
}), 'history/good.parquet')",
    );
    // A file cut short in a copy: the magic at the start, nothing a reader can use.
    std::fs::write(dir.path().join("history/broken.parquet"), b"PAR1 cut short").unwrap();
    let sql = "CREATE SOURCE history (ts TIMESTAMP, temp_c DOUBLE, WATERMARK FOR ts AS ts)
         WITH (connector = 'parquet', path = 'history');
         CREATE SINK rows FROM history WITH (connector = 'file', path = 'out/rows.jsonl');
         CREATE SINK errors FROM history_errors WITH (connector = 'file', path = 'out/errors.jsonl');";
    let output = run(dir.path(), sql, "1");
    assert!(output.status.success(), "{}", text(&output));
    let rows = std::fs::read_to_string(dir.path().join("out/rows.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 5, "{rows}");
    let errors = std::fs::read_to_string(dir.path().join("out/errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(
        errors.contains("the file cannot be read, so its rows are not in the replay")
            && errors.contains("history/broken.parquet"),
        "{errors}"
    );
}
