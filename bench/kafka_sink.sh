#!/usr/bin/env bash
# Kafka sink benchmark: ROWS readings replayed from a file into a 4-partition topic on a local
# Tansu (SQLite storage), beside per-zone one-minute windows written to a file. Reports wall
# time, CPU (user + system, all the engine's threads: librdkafka's included) and peak RSS, for
# this build and, with BASELINE, another build in alternating rounds (compare within one run:
# the machine is noisy, and the broker shares its cores).
#
#   bench/kafka_sink.sh [ROWS] [WORKERS] [ROUNDS]     (defaults: 500000, 2, 3)
#   BASELINE=/path/to/an/older/vibelux bench/kafka_sink.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-500000}
workers=${2:-2}
rounds=${3:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
export RUST_BACKTRACE=0
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/kafka_sink
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$bin/vibelux-bench" generate --rows "$rows" --out readings.jsonl

source "$repo/bench/tansu.sh"

builds=("this:$bin/vibelux")
[ -n "${BASELINE:-}" ] && builds+=("baseline:$BASELINE")
printf '%-9s %5s %9s %9s %9s %10s\n' build round "wall s" "CPU s" "RSS MiB" "rows/s"
for round in $(seq "$rounds"); do
  for build in "${builds[@]}"; do
    name=${build%%:*}
    engine=${build#*:}
    topic="$name-$round"
    python3 "$repo/engine/tests/peers/kafka_peer.py" "127.0.0.1:$port" create "$topic" 4
    cat > sink.sql <<SQL
CREATE SOURCE readings (sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (connector = 'file', path = 'readings.jsonl');
CREATE SINK out FROM readings
  WITH (connector = 'kafka', brokers = '127.0.0.1:$port', topic = '$topic', key = '{sensor_id}');
CREATE VIEW per_zone AS SELECT zone, window_end, count(*) AS n, avg(temp_c) AS temp_avg
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY zone, window_end;
CREATE SINK zones FROM per_zone WITH (connector = 'file', path = 'zones-$name.jsonl');
SQL
    /usr/bin/time -f '%e %U %S %M' -o time.txt \
      "$engine" run sink.sql --workers "$workers" --http off --no-state 2> "run-$name.log"
    read -r wall user system rss < time.txt
    grep -q "out: $rows written" "run-$name.log" || echo "WARNING: $name did not report $rows rows written"
    printf '%-9s %5s %9.2f %9.2f %9.0f %10.0f\n' "$name" "$round" "$wall" \
      "$(echo "$user + $system" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$(echo "$rows / $wall" | bc -l)"
  done
done
