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
        CREATE VIEW zone_hour AS SELECT room, zone, window_start, avg(temp_c) AS temp_avg, max(co2_ppm) AS co2_max, count(*) AS n
          FROM TUMBLE(climate, ts, INTERVAL '1 hour') GROUP BY room, zone, window_start;
        CREATE SINK climate_wh FROM climate
          WITH (connector = 'parquet', path = 'warehouse/climate', partition_by = 'date(ts), room', rollover_rows = '500');
        CREATE SINK zone_hour_wh FROM zone_hour WITH (connector = 'parquet', path = 'warehouse/zone_hour');"
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
    ok(vibelux(dir)
        .args(["run", "pipeline.sql", "--workers", "2"])
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
    let pyarrow = python(
        dir.path(),
        "import pyarrow.dataset as ds\nt = ds.dataset('warehouse/zone_hour', format='parquet').to_table()\nprint(t.num_rows, sum(t.column('n').to_pylist()), t.schema.field('window_start').type)",
    );
    assert_eq!(pyarrow, "36 8640 timestamp[ns]\n");
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
}

#[test]
fn a_file_left_half_written_by_a_crash_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    fill_warehouse(dir.path());
    let before = query(dir.path(), "SELECT count(*) AS n FROM climate");
    // What a crash mid-write leaves: a hidden temporary file, never renamed into place.
    let partition = dir
        .path()
        .join("warehouse/climate/date=2026-06-01/room=r01");
    std::fs::write(
        partition.join(".part-000099-0000.parquet.tmp"),
        b"PAR1 half a file",
    )
    .unwrap();
    assert_eq!(
        query(dir.path(), "SELECT count(*) AS n FROM climate"),
        before
    );
    let duckdb = python(
        dir.path(),
        "import duckdb\nprint(duckdb.sql(\"SELECT count(*) FROM read_parquet('warehouse/climate/**/*.parquet', hive_partitioning=true)\").fetchall()[0][0])",
    );
    assert_eq!(format!("n\n{duckdb}"), before);
    // Every visible file was committed by an epoch manifest, and every committed file is visible.
    let listed = python(
        dir.path(),
        "import json, glob, os\nfiles = sorted(f for m in glob.glob('warehouse/climate/_manifests/*.json') for f in (e['file'] for e in json.load(open(m))['files']))\nvisible = sorted(os.path.relpath(p, 'warehouse/climate') for p in glob.glob('warehouse/climate/**/*.parquet', recursive=True))\nprint(files == visible, len(files))",
    );
    assert!(listed.starts_with("True "), "{listed}");
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
        .args(["run", "first.sql"])
        .output()
        .unwrap());
    let second = format!(
        "{SOURCE} CREATE VIEW hot AS SELECT sensor_id, ts, temp_c, rh FROM climate WHERE temp_c > 25;
         CREATE SINK hot_wh FROM hot WITH (connector = 'parquet', path = 'warehouse/hot');"
    );
    std::fs::write(dir.path().join("second.sql"), second).unwrap();
    ok(vibelux(dir.path())
        .args(["run", "second.sql"])
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
