#!/usr/bin/env bash
# What one view added over the API costs (issue 19: a flood of posted statements once took the
# engine to 7.8 GiB with every dataflow step ~200 ms): memory and dataflow step time of a
# running simulation, before and after adding N materialized views with POST /v1/sql.
#
#   bench/api_views.sh [N] [SECONDS]      (default 100 views, 20 s per measurement)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
views=${1:-100}
seconds=${2:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/api_views
cargo build --release -q -p vibelux --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"

cat > views.sql <<'SQL'
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '10', zones_per_room = '10', sensors_per_zone = '10',
        interval = '10 seconds', speed = '10x');
CREATE MATERIALIZED VIEW rooms AS SELECT room, count(*) AS n FROM readings GROUP BY room;
SQL

"$bin/vibelux" run views.sql --http 127.0.0.1:0 --pg off --no-state --audit-log off \
  --max-api-objects $((views + 10)) 2> engine.log &
engine=$!
trap 'kill -INT $engine 2> /dev/null; wait $engine 2> /dev/null || true' EXIT
address=""
for _ in $(seq 100); do
  address=$(grep -o 'serving http://[0-9.:]*' engine.log | sed 's|serving http://||' || true)
  [ -n "$address" ] && break
  sleep 0.1
done

# Resident memory (MiB) and the mean dataflow step (ms) over the next $seconds.
measure() {
  local sum0 count0 sum1 count1
  read -r sum0 count0 < <(steps)
  sleep "$seconds"
  read -r sum1 count1 < <(steps)
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$engine/status")
  awk -v s="$((0))" -v a="$sum0" -v b="$sum1" -v c="$count0" -v d="$count1" -v r="$rss" -v what="$1" \
    'BEGIN { printf "%-28s RSS %7.1f MiB   mean step %6.2f ms over %d steps\n", what, r / 1024, (b - a) / (d - c) * 1000, d - c }' |
    tee -a measured.txt
}
steps() {
  curl -s -m 5 "http://$address/metrics" |
    awk '/^vibelux_dataflow_step_seconds_sum/ {s = $2} /^vibelux_dataflow_step_seconds_count/ {c = $2} END {print s, c}'
}

sleep 5
measure "no views added"
started=$(date +%s.%N)
for i in $(seq "$views"); do
  curl -s -m 30 -o /dev/null -w '' -H 'content-type: application/sql' "http://$address/v1/sql" --data-binary \
    "CREATE MATERIALIZED VIEW v$i AS SELECT zone, count(*) AS n, avg(temp_c) AS t FROM TUMBLE(readings, ts, INTERVAL '1 minute') WHERE temp_c > $((i % 30)) GROUP BY zone, window_start"
done
posted=$(echo "$(date +%s.%N) - $started" | bc)
echo "posted $views windowed views in ${posted} s"
measure "$views views added"
awk -v n="$views" '{ rss[NR] = $(NF - 8); step[NR] = $(NF - 4) }
  END { printf "one view added over the API: %.2f MiB and %.3f ms of every dataflow step\n", (rss[2] - rss[1]) / n, (step[2] - step[1]) / n }' measured.txt
