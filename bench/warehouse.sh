#!/usr/bin/env bash
# Warehouse benchmark: Parquet sink write throughput, then three analyst queries timed with
# `vibelux query` and with DuckDB on the same files, in one run (compare ratios: noisy machine).
#
#   bench/warehouse.sh [DAYS]     (default 30 days × 1,200 sensors × 1 reading / 50 s ≈ 62M rows)
#   QUERIES_ONLY=1 bench/warehouse.sh   (time the queries over the warehouse written last time)
#   WORKERS=1 bench/warehouse.sh 3      (the write with another worker count; default 2, each
#                                        worker encoding its own files)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
days=${1:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/warehouse
python3 -c "import duckdb" 2> /dev/null || python3 -m pip install --quiet duckdb
cargo build --release -q -p vibelux --manifest-path "$repo/Cargo.toml"
vibelux=$CARGO_TARGET_DIR/release/vibelux
if [ -n "${QUERIES_ONLY:-}" ]; then
  cd "$work"
else
rm -rf "$work" && mkdir -p "$work" && cd "$work"

cat > write.sql <<SQL
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '6', zones_per_room = '10', sensors_per_zone = '20',
        interval = '50 seconds', speed = 'max', start = '2026-06-01T00:00:00', duration = '${days} days',
        seed = '3', batch_size = '8192');
CREATE SINK climate_wh FROM readings WITH (
  connector = 'parquet', path = 'warehouse/climate', partition_by = 'date(ts), room', rollover_rows = '5000000');
SQL
# The same readings made and dropped (a file sink that no row reaches): what the sink's rows
# cost to make, taken from the write's CPU time to give the sink's own rate.
sed -e "s|^CREATE SINK climate_wh FROM readings WITH (|CREATE VIEW none AS SELECT * FROM readings WHERE temp_c < -1000;\\nCREATE SINK nothing FROM none WITH (connector = 'file', path = 'nothing.jsonl');|" \
    -e "/connector = 'parquet'/d" write.sql > source_only.sql
/usr/bin/time -f '%U %S' -o source_cpu.txt "$vibelux" run source_only.sql --workers "${WORKERS:-2}" --http off --no-state 2> source_only.log
read -r source_user source_system < source_cpu.txt
start=$(date +%s.%N)
/usr/bin/time -f '%M %U %S' -o rss.txt "$vibelux" run write.sql --workers "${WORKERS:-2}" --http off --no-state 2> write.log
seconds=$(echo "$(date +%s.%N) - $start" | bc -l)
read -r rss user system < rss.txt
rows=$("$vibelux" query --warehouse warehouse --format csv "SELECT count(*) AS n FROM climate" | tail -1)
bytes=$(du -sb warehouse | cut -f1)
# Per CPU-second (user + system) as well as per second: the machine is noisy, and the
# simulator that makes the rows is in both.
printf 'write: %d rows in %.1f s = %.0f rows/s, %.0f rows per CPU-second (%.1f CPU s), %.1f MB/s of Parquet (%.0f MB), peak RSS %.0f MiB\n' \
  "$rows" "$seconds" "$(echo "$rows / $seconds" | bc -l)" "$(echo "$rows / ($user + $system)" | bc -l)" \
  "$(echo "$user + $system" | bc -l)" "$(echo "$bytes / 1048576 / $seconds" | bc -l)" \
  "$(echo "$bytes / 1048576" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
sink_cpu=$(echo "$user + $system - $source_user - $source_system" | bc -l)
printf '  the sink alone: %.1f CPU s (the readings made and dropped: %.1f CPU s) = %.0f rows per CPU-second\n' \
  "$sink_cpu" "$(echo "$source_user + $source_system" | bc -l)" "$(echo "$rows / $sink_cpu" | bc -l)"
fi

last_day=$(date -u -d "2026-06-01 + $((days - 1)) days" +%F)
declare -A queries=(
  [day_zone_averages]="SELECT zone, avg(temp_c) AS temp_avg, avg(rh) AS rh_avg FROM climate WHERE date = '$last_day' GROUP BY zone ORDER BY zone"
  [sensor_last_hour]="SELECT ts, temp_c, rh, co2_ppm FROM climate WHERE room = 'r03' AND sensor_id = 'r03-z05-s07' AND ts >= TIMESTAMP '$last_day 23:00:00' ORDER BY ts"
  [month_max_co2_per_room]="SELECT room, max(co2_ppm) AS co2_max FROM climate GROUP BY room ORDER BY room"
)
printf '%-24s %12s %12s %8s\n' query "vibelux s" "duckdb s" ratio
for name in day_zone_averages sensor_last_hour month_max_co2_per_room; do
  sql=${queries[$name]}
  best_ours=999
  for _ in 1 2 3; do
    s=$( { /usr/bin/time -f '%e' "$vibelux" query --warehouse warehouse --format csv "$sql" > ours.csv; } 2>&1 | tail -1)
    best_ours=$(echo "if ($s < $best_ours) $s else $best_ours" | bc -l)
  done
  duck_sql=${sql//FROM climate/FROM read_parquet(\'warehouse\/climate\/**\/*.parquet\', hive_partitioning=true)}
  best_duck=$(python3 - "$duck_sql" <<'PY'
import sys, time, duckdb
sql = sys.argv[1]
best = 1e9
for _ in range(3):
    start = time.perf_counter()
    con = duckdb.connect()          # a fresh process-like start each time, as the CLI has
    con.sql(sql).fetchall()
    best = min(best, time.perf_counter() - start)
print(f"{best:.3f}")
PY
)
  printf '%-24s %12.3f %12.3f %8.2f\n' "$name" "$best_ours" "$best_duck" "$(echo "$best_ours / $best_duck" | bc -l)"
done
