#!/usr/bin/env bash
# Memory at scale: 100,000 simulated sensors (100 rooms × 10 zones × 100 sensors) through
# 1-minute windows per sensor, with 2 workers; peak resident memory and CPU of each pipeline,
# checkpointing (the default) and with --no-state.
#
#   bench/memory.sh [ROOMS]      (default 100: 1,000 sensors a room)
#
# 1. windows to a file sink, 30 simulated minutes (a reading every 10 s);
# 2. the same with `anomaly_score('auto', temp_c)` per sensor: for 30 minutes the detectors have
#    not learnt yet (their calibration fills from the third day), so then
# 3. the same for 8 simulated days with a reading every 15 minutes: every detector has learnt
#    its day and holds a full calibration, the steady state;
# 4. the windows as a materialized (live) view bounded by a temporal filter on window_end
#    (the last 10 minutes), 30 simulated minutes.
# Then the detectors' state alone: resident bytes per series of each detector, fed 4 days
# (vibelux-bench detector-state, one process per detector).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rooms=${1:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/memory
rm -rf "$work" && mkdir -p "$work"
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
cd "$work"

source_sql() { # $1 interval, $2 duration
  cat <<SQL
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
  co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '$rooms', zones_per_room = '10',
        sensors_per_zone = '100', interval = '$1', speed = 'max', duration = '$2', seed = '5');
SQL
}
windows_sql() {
  cat <<SQL
CREATE VIEW sensor_minute AS
  SELECT sensor_id, window_start, window_end, avg(temp_c) AS temp_avg, max(rh) AS rh_max,
         count(*) AS n
  FROM TUMBLE(readings, ts, INTERVAL '1 minute')
  GROUP BY sensor_id, window_start, window_end;
SQL
}
sink_sql() { # $1 view
  echo "CREATE SINK ${1}_out FROM $1 WITH (connector = 'file', path = 'out/$1.jsonl', format = 'json');"
}
scored_sql() {
  cat <<SQL
CREATE VIEW scored AS
  SELECT sensor_id, ts, anomaly_score('auto', temp_c) OVER (PARTITION BY sensor_id) AS score
  FROM readings;
CREATE VIEW odd AS SELECT sensor_id, ts, score FROM scored WHERE score >= 0.9999;
SQL
}

{ source_sql '10 seconds' '30m'; windows_sql; sink_sql sensor_minute; } > windows.sql
{ source_sql '10 seconds' '30m'; windows_sql; sink_sql sensor_minute; scored_sql; sink_sql odd; } > scored.sql
{ source_sql '15 minutes' '8d'; windows_sql; sink_sql sensor_minute; scored_sql; sink_sql odd; } > scored_8d.sql
{ source_sql '10 seconds' '30m'; windows_sql; cat <<SQL
CREATE MATERIALIZED VIEW recent_minutes AS
  SELECT * FROM sensor_minute WHERE window_end > now() - INTERVAL '10 minutes';
SQL
} > live.sql

sensors=$((rooms * 1000))
printf '%-16s %-12s %10s %10s %10s %14s\n' "pipeline" checkpoints readings "CPU s" "peak MiB" "readings/CPU-s"
for run in windows:on windows:off scored:on scored:off scored_8d:on scored_8d:off live:on; do
  pipeline=${run%:*} checkpoints=${run#*:}
  rm -rf out ./*.state && mkdir out
  flags=() && [ "$checkpoints" = off ] && flags=(--no-state)
  /usr/bin/time -f '%e %U %S %M' -o time.txt \
    "$bin/vibelux" run "$pipeline.sql" --workers 2 --http off "${flags[@]}" > run.log 2>&1
  read -r _wall user system peak_kib < time.txt
  case $pipeline in
    scored_8d) readings=$((sensors * 8 * 96)) ;;
    *) readings=$((sensors * 180)) ;;
  esac
  cpu=$(echo "$user + $system" | bc)
  printf '%-16s %-12s %10d %10.1f %10d %14.0f\n' "$pipeline" "$checkpoints" "$readings" "$cpu" \
    $((peak_kib / 1024)) "$(echo "$readings / $cpu" | bc -l)"
done

echo
for detector in auto zscore ewma robust seasonal drift flatline gap hst mahalanobis change; do
  # Half-Space Trees hold 25 trees of 2,047 nodes per place (1.2 MB): fewer places.
  series=20000 && [ "$detector" = hst ] && series=500
  "$bin/vibelux-bench" detector-state --series "$series" --detectors "$detector"
done | awk 'NR <= 2 || ($1 != "detector" && $2 !~ /series/)'
