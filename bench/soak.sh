#!/usr/bin/env bash
# Soak: the live greenhouse example scaled to RATE readings a second (default 50,000: 50 rooms ×
# 10 zones × 100 sensors, a reading each per second, in real time) for DURATION (default 1h),
# every reading archived to a Parquet warehouse, checkpointing as a facility runs it, with
# dashboards' subscribers attached to its live views throughout.
#
#   bench/soak.sh [DURATION] [RATE]      (e.g. bench/soak.sh 1h 50000; WORKERS=2 by default)
#
# Every 10 s it samples the engine's resident memory, CPU time, watermark lag and row counts
# (soak.csv), and at the end prints whether memory stayed flat after warm-up (the first fifth of
# the run, at least 5 minutes when the run is long enough), whether the lag stayed steady, and
# plots both (soak.png).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
duration=${1:-1h}
rate=${2:-50000}
workers=${WORKERS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/soak
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"
rooms=$(( (rate + 999) / 1000 ))

# examples/greenhouse.sql at scale and in real time; its live views bounded in time as
# docs/live-views.md advises for a run of months, and every reading kept in the warehouse.
cat > soak.sql <<SQL
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '$rooms', zones_per_room = '10', sensors_per_zone = '100',
        interval = '1 second', speed = 'realtime', seed = '7', faults = 'stuck,dropout');

CREATE VIEW climate AS
  SELECT *, temp_c * 1.8 + 32 AS temp_f,
         vpd_air(temp_c, rh) AS vpd_kpa, dew_point(temp_c, rh) AS dew_point_c
  FROM readings
  WHERE rh BETWEEN 0 AND 100;

CREATE VIEW zone_minute AS
  SELECT zone, window_start, window_end,
         avg(temp_c) AS temp_avg, avg(vpd_kpa) AS vpd_avg, max(dew_point_c) AS dew_point_max,
         max(co2_ppm) AS co2_max, count(*) AS n
  FROM TUMBLE(climate, ts, INTERVAL '1 minute')
  GROUP BY zone, window_start, window_end;

CREATE MATERIALIZED VIEW zone_recent AS
  SELECT * FROM zone_minute WHERE window_end > now() - INTERVAL '10 minutes';

CREATE VIEW scored AS
  SELECT sensor_id, zone, ts, temp_c,
         anomaly_score('auto', temp_c) OVER (PARTITION BY sensor_id) AS score
  FROM readings;

CREATE MATERIALIZED VIEW sensor_alerts AS
  SELECT sensor_id, zone, count(*) AS odd_readings, max(ts) AS last_odd
  FROM scored WHERE score >= 0.9999
  GROUP BY sensor_id, zone;

CREATE ALARM sensor_quiet ON readings PER sensor_id WHEN STALE
  SEVERITY 'medium' MESSAGE 'no reading from {sensor_id} since {ts}';

CREATE ALARM too_warm ON readings PER sensor_id
  WHEN temp_c > 28 FOR INTERVAL '5 minutes' CLEAR WHEN temp_c < 27
  SEVERITY 'high' MESSAGE '{sensor_id} in {zone} at {temp_c} °C';

CREATE SINK alarms_out FROM sensor_quiet WITH (connector = 'file', path = 'out/alarms.jsonl');
CREATE SINK zone_minute_out FROM zone_minute
  WITH (connector = 'file', path = 'out/zone_minute.jsonl', format = 'json');
CREATE SINK climate_archive FROM climate WITH (connector = 'parquet', path = 'warehouse/climate');
SQL

"$bin/vibelux" run soak.sql --workers "$workers" --http 127.0.0.1:0 --pg off --audit-log off \
  --for "$duration" 2> engine.log &
engine=$!
trap 'kill -INT $engine 2> /dev/null || true' EXIT
address=""
for _ in $(seq 300); do
  address=$(grep -o 'serving http://[0-9.:]*' engine.log | sed 's|serving http://||' || true)
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { cat engine.log; exit 1; }
echo "engine at $address: $((rooms * 1000)) sensors, a reading each per second, for $duration"

# Dashboards: five subscribers on each live view, and one on each alarm's state, all run long.
seconds=$(python3 -c "import sys, re; t = sys.argv[1]; n = float(re.match(r'[0-9.]+', t).group()); print(int(n * {'s': 1, 'm': 60, 'h': 3600}[t[-1]] if t[-1] in 'smh' else n))" "$duration")
"$bin/vibelux-bench" watch --address "$address" --view zone_recent --view sensor_alerts \
  --subscribers 5 --duration "$((seconds - 15))s" > watch.txt 2>&1 &
watcher=$!
"$bin/vibelux-bench" watch --address "$address" --view sensor_quiet_state --view too_warm_state \
  --subscribers 1 --duration "$((seconds - 15))s" > watch_alarms.txt 2>&1 &
alarm_watcher=$!

# One sample every 10 s: elapsed s, RSS MiB, CPU s, watermark lag s, rows read, rows archived.
metric() { # $1 metric name with labels, from the scrape in $metrics
  awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print "" }' <<< "$metrics"
}
ticks=$(getconf CLK_TCK)
start=$(date +%s)
echo "elapsed_s,rss_mib,cpu_s,lag_s,rows_read,rows_archived" > soak.csv
while kill -0 "$engine" 2> /dev/null; do
  sleep 10
  metrics=$(curl -sf "http://$address/metrics" || true)
  [ -n "$metrics" ] || continue
  rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$engine/status" 2> /dev/null || echo "")
  cpu_ticks=$(awk '{ print $14 + $15 }' "/proc/$engine/stat" 2> /dev/null || echo "")
  [ -n "$rss_kib" ] && [ -n "$cpu_ticks" ] || continue
  echo "$(( $(date +%s) - start )),$(echo "$rss_kib / 1024" | bc -l | xargs printf '%.1f'),$(echo "$cpu_ticks / $ticks" | bc -l | xargs printf '%.1f'),$(metric 'vibelux_watermark_lag_seconds{source="readings"}'),$(metric 'vibelux_source_rows_total{source="readings"}'),$(metric 'vibelux_sink_rows_total{sink="climate_archive"}')" >> soak.csv
done
trap - EXIT
wait "$engine" || { echo "the engine failed:"; tail -20 engine.log; exit 1; }
watch_failed=0
wait "$watcher" || watch_failed=1
wait "$alarm_watcher" || watch_failed=1
cat watch.txt watch_alarms.txt

python3 -c 'import matplotlib' 2> /dev/null || python3 -m pip install -q matplotlib
python3 "$repo/bench/soak_report.py" soak.csv soak.png
echo "warehouse: $(du -sh warehouse | cut -f1), $(find warehouse -name '*.parquet' | wc -l) files"
exit $watch_failed
