//! The Parquet warehouse end to end: pipelines write it, `vibelux query`, DuckDB and pyarrow
//! read it and agree; a crash's leftovers stay invisible; a view that gains a column keeps old
//! files readable.

use std::path::Path;
use std::process::{Command, Output};

fn vibelux(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vibelux"));
    command.current_dir(dir);
    command
}

fn ok(output: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn python(dir: &Path, script: &str) -> String {
    ok(Command::new("python3")
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs"))
}

const SOURCE: &str = "CREATE SOURCE readings (
      sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE,
      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
    WITH (connector = 'simulator', rooms = '3', zones_per_room = '2', sensors_per_zone = '4', interval = '1 minute',
          speed = 'max', start = '2026-06-01T20:00:00', duration = '6 hours', seed = '9');
    CREATE VIEW climate AS SELECT * FROM readings WHERE rh BETWEEN 0 AND 100;";

fn fill_warehouse(dir: &Path) {
    let sql = format!(
        "{SOURCE}
        CREATE VIEW zone_hour AS SELECT room, zone, window_start, avg(temp_c) AS temp_avg, max(co2_ppm) AS co2_max, count(*) AS n,
            time_weighted_avg(temp_c, ts) AS temp_twa
          FROM TUMBLE(climate, ts, INTERVAL '1 hour') GROUP BY room, zone, window_start;
        CREATE SINK climate_wh FROM climate
          WITH (connector = 'parquet', path = 'warehouse/climate', partition_by = 'date(ts), room', rollover_rows = '500');
        CREATE SINK zone_hour_wh FROM zone_hour WITH (connector = 'parquet', path = 'warehouse/zone_hour');"
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
    ok(vibelux(dir)
        .args(["run", "--http", "off", "pipeline.sql", "--workers", "2"])
        .output()
        .unwrap());
}

fn query(dir: &Path, sql: &str) -> String {
    ok(vibelux(dir)
        .args(["query", "--format", "csv", sql])
        .output()
        .unwrap())
}

#[test]
fn vibelux_duckdb_and_pyarrow_read_the_same_warehouse() {
    let dir = tempfile::tempdir().unwrap();
    fill_warehouse(dir.path());
    // 24 sensors × 360 readings, in Hive partitions by day and room.
    assert!(
        dir.path()
            .join("warehouse/climate/date=2026-06-02/room=r03")
            .is_dir()
    );
    let ours = query(
        dir.path(),
        "SELECT room, count(*) AS n FROM climate GROUP BY room ORDER BY room",
    );
    assert_eq!(ours, "room,n\nr01,2880\nr02,2880\nr03,2880\n");
    let duckdb = python(
        dir.path(),
        "import duckdb\nfor room, n in duckdb.sql(\"SELECT room, count(*) FROM read_parquet('warehouse/climate/**/*.parquet', hive_partitioning=true) GROUP BY room ORDER BY room\").fetchall(): print(f'{room},{n}')",
    );
    assert_eq!(duckdb, "r01,2880\nr02,2880\nr03,2880\n");
    // Grouped by a partition column (planned per partition value): a filter that empties a
    // group drops it, as in DuckDB; sums agree.
    let ours = query(
        dir.path(),
        "SELECT room, count(*) AS n, round(sum(temp_c), 3) AS total FROM climate WHERE room <> 'r02' AND temp_c > 22 GROUP BY room ORDER BY room",
    );
    let duckdb = python(
        dir.path(),
        "import duckdb\nfor room, n, total in duckdb.sql(\"SELECT room, count(*), round(sum(temp_c), 3) FROM read_parquet('warehouse/climate/**/*.parquet', hive_partitioning=true) WHERE room <> 'r02' AND temp_c > 22 GROUP BY room ORDER BY room\").fetchall(): print(f'{room},{n},{total}')",
    );
    assert_eq!(ours, format!("room,n,total\n{duckdb}"));
    assert_eq!(ours.lines().count(), 3, "{ours}");
    let pyarrow = python(
        dir.path(),
        "import pyarrow.dataset as ds\nt = ds.dataset('warehouse/zone_hour', format='parquet').to_table()\nf = t.schema.field\nprint(t.num_rows, sum(t.column('n').to_pylist()), f('window_start').type, f('window_start').metadata, f('temp_avg').metadata[b'unit'].decode())",
    );
    assert_eq!(
        pyarrow, "36 8640 timestamp[us] {b'time_zone': b'UTC'} °C\n",
        "timestamps in microseconds marked UTC, units carried through the average"
    );
    // The same per-hour averages, from the windowed view and recomputed from the readings.
    let windows = query(
        dir.path(),
        "SELECT round(sum(temp_avg * n) / sum(n), 6) AS mean FROM zone_hour",
    );
    let readings = query(
        dir.path(),
        "SELECT round(avg(temp_c), 6) AS mean FROM climate",
    );
    assert_eq!(windows, readings);
    // The time-weighted averages too: the view's, and the warehouse's own from the readings
    // (to a millionth: the warehouse keeps times to the microsecond).
    let windows = query(
        dir.path(),
        "SELECT room, zone, window_start, round(temp_twa, 6) AS twa FROM zone_hour ORDER BY room, zone, window_start",
    );
    let readings = query(
        dir.path(),
        "SELECT room, zone, date_bin(INTERVAL '1 hour', ts) AS window_start, round(time_weighted_avg(temp_c, ts), 6) AS twa
         FROM climate GROUP BY room, zone, date_bin(INTERVAL '1 hour', ts) ORDER BY room, zone, window_start",
    );
    assert_eq!(windows.lines().count(), 37, "{windows}");
    assert_eq!(windows, readings);
}

/// Every visible file and every committed one, as `(visible, committed, hidden, readable)`
/// where `readable` is the row count pyarrow reads from the visible files.
fn warehouse_files(dir: &Path, table: &str) -> String {
    python(
        dir,
        &format!(
            "import json, glob, os\n\
             import pyarrow.dataset as ds\n\
             root = 'warehouse/{table}'\n\
             committed = sorted(f['file'] for m in glob.glob(root + '/_manifests/epoch-*.json') for f in json.load(open(m))['files'])\n\
             visible = sorted(os.path.relpath(p, root) for p in glob.glob(root + '/**/*.parquet', recursive=True))\n\
             hidden = glob.glob(root + '/**/.*.tmp', recursive=True)\n\
             rows = ds.dataset(root, format='parquet', partitioning='hive').count_rows()\n\
             print(set(visible) <= set(committed), visible == committed, len(hidden), len(committed) > 0, rows)"
        ),
    )
}

#[test]
fn a_pipeline_killed_mid_write_leaves_only_committed_files_visible() {
    let dir = tempfile::tempdir().unwrap();
    // Two years of readings at full speed: still writing when it is killed.
    // Many small files per epoch, so a kill often lands inside a commit.
    let endless = SOURCE.replace("duration = '6 hours'", "duration = '730 days'");
    let sql = format!(
        "{endless}
        CREATE SINK climate_wh FROM climate
          WITH (connector = 'parquet', path = 'warehouse/climate', partition_by = 'date(ts), sensor_id', rollover_rows = '3000');"
    );
    std::fs::write(dir.path().join("pipeline.sql"), sql).unwrap();
    let mut child = vibelux(dir.path())
        .args(["run", "--http", "off", "pipeline.sql"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifests = dir.path().join("warehouse/climate/_manifests");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&manifests).map_or(0, |entries| entries.count()) < 5 {
        assert!(std::time::Instant::now() < deadline, "no epochs committed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pipeline stopped early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 500_000_000;
    std::thread::sleep(std::time::Duration::from_nanos(jitter.into()));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // Readers see committed files only, and every one is whole.
    let after_crash = warehouse_files(dir.path(), "climate");
    eprintln!("after the crash: {after_crash}");
    assert!(after_crash.starts_with("True "), "{after_crash}");
    let duckdb = python(
        dir.path(),
        "import duckdb\nprint(duckdb.sql(\"SELECT count(*) FROM read_parquet('warehouse/climate/**/*.parquet', hive_partitioning=true)\").fetchall()[0][0])",
    );
    assert_eq!(after_crash.split_whitespace().last(), Some(duckdb.trim()));
    // The next run of the sink finishes the interrupted commit and removes the leftovers.
    let restart = format!(
        "{SOURCE}
        CREATE SINK climate_wh FROM climate
          WITH (connector = 'parquet', path = 'warehouse/climate', partition_by = 'date(ts), sensor_id');"
    );
    std::fs::write(dir.path().join("restart.sql"), restart).unwrap();
    ok(vibelux(dir.path())
        .args(["run", "--http", "off", "restart.sql"])
        .output()
        .unwrap());
    let recovered = warehouse_files(dir.path(), "climate");
    assert!(recovered.starts_with("True True 0 True "), "{recovered}");
}

#[test]
fn a_view_that_gains_a_column_keeps_older_files_readable() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!(
        "{SOURCE} CREATE VIEW hot AS SELECT sensor_id, ts, temp_c FROM climate WHERE temp_c > 25;
         CREATE SINK hot_wh FROM hot WITH (connector = 'parquet', path = 'warehouse/hot');"
    );
    std::fs::write(dir.path().join("first.sql"), first).unwrap();
    ok(vibelux(dir.path())
        .args(["run", "--http", "off", "first.sql"])
        .output()
        .unwrap());
    let second = format!(
        "{SOURCE} CREATE VIEW hot AS SELECT sensor_id, ts, temp_c, rh FROM climate WHERE temp_c > 25;
         CREATE SINK hot_wh FROM hot WITH (connector = 'parquet', path = 'warehouse/hot');"
    );
    std::fs::write(dir.path().join("second.sql"), second).unwrap();
    ok(vibelux(dir.path())
        .args(["run", "--http", "off", "second.sql"])
        .output()
        .unwrap());
    let counts = query(
        dir.path(),
        "SELECT count(*) AS all_rows, count(rh) AS with_rh FROM hot",
    );
    let lines: Vec<&str> = counts.lines().collect();
    let values: Vec<u64> = lines[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert!(values[0] > 0 && values[0] == 2 * values[1], "{counts}");
}

#[test]
fn a_second_engine_on_the_same_warehouse_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("live.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'simulator', rooms = '1', zones_per_room = '1', sensors_per_zone = '2');
         CREATE SINK climate_wh FROM readings WITH (connector = 'parquet', path = 'warehouse/climate');",
    )
    .unwrap();
    let start = || {
        vibelux(dir.path())
            .args(["run", "--http", "off", "live.sql", "--for", "60s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let lock = dir.path().join("warehouse/climate/_manifests/.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&lock).map_or(true, |holder| holder.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first engine never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = start().wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{message}");
    assert!(
        message.contains("another process is writing this warehouse")
            && message.contains(&format!("pid {}", first.id())),
        "{message}"
    );
    // The lock goes with its process, even one killed without a chance to clean up.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = start();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        third.try_wait().unwrap().is_none(),
        "the engine started after the first was killed should be running"
    );
    Command::new("kill")
        .args(["-INT", &third.id().to_string()])
        .status()
        .unwrap();
    let output = third.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_quiet_stream_still_commits_when_its_rollover_interval_passes() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let lines: String = (0..10)
        .map(|i| format!("{{\"sensor_id\":\"s{i}\",\"ts\":{now},\"temp_c\":21.5}}\n"))
        .collect();
    std::fs::write(dir.path().join("live.jsonl"), lines).unwrap();
    std::fs::write(
        dir.path().join("quiet.sql"),
        "CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE,
           WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
         WITH (connector = 'file', path = 'live.jsonl', mode = 'tail');
         CREATE SINK wh FROM readings WITH (connector = 'parquet', path = 'warehouse/readings',
           rollover = '2 seconds');",
    )
    .unwrap();
    let mut engine = vibelux(dir.path())
        .args(["run", "--http", "off", "quiet.sql"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Nothing more arrives; the epoch must still be committed while the engine runs.
    let manifest = dir
        .path()
        .join("warehouse/readings/_manifests/epoch-000000.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !manifest.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch committed while the stream was quiet"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        engine.try_wait().unwrap().is_none(),
        "the engine is still running"
    );
    let committed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(committed["files"][0]["rows"], 10);
    engine.kill().unwrap();
    engine.wait().unwrap();
}
