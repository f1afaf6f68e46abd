#!/usr/bin/env bash
# Kafka benchmark: ingest rate — messages/s from a Tansu broker on this machine (SQLite storage,
# the build scripts/test.sh installs)
# into the engine, counted by the engine's metrics; the topic has 4 partitions.
#
#   bench/kafka.sh [MESSAGES] [WORKERS]     (defaults: 1000000 messages, 2 workers)
#   SENSORS=N bench/kafka.sh …              (default 1000 sensors: 1 reading each per event-time second)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
messages=${1:-1000000}
workers=${2:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
export RUST_BACKTRACE=0
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/kafka
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"

source "$repo/bench/tansu.sh"
python3 "$repo/engine/tests/peers/kafka_peer.py" "127.0.0.1:$port" create readings 4

cat > ingest.sql <<SQL
CREATE SOURCE readings (zone TEXT, sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'kafka', brokers = '127.0.0.1:$port', topic = 'readings', allowed_lateness = '1 hour');
CREATE MATERIALIZED VIEW per_zone AS
  SELECT zone, count(*) AS n, avg(temp_c) AS temp_avg, max(rh) AS rh_max FROM readings GROUP BY zone;
SQL
"$bin/vibelux" run ingest.sql --workers "$workers" --http 127.0.0.1:0 --no-state 2> engine.log &
engine=$!
address=""
for _ in $(seq 100); do
  address=$(grep -o 'serving http://[0-9.:]*' engine.log | sed 's|serving http://||' || true)
  [ -n "$address" ] && break
  sleep 0.1
done
sleep 2
echo "== ingest: $messages messages, 1,000 sensors, 4 partitions, $workers workers, into a per-zone aggregate"
"$bin/vibelux-bench" kafka-ingest --brokers "127.0.0.1:$port" --engine "$address" --messages "$messages" ${SENSORS:+--sensors $SENSORS} || true
kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
