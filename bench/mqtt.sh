#!/usr/bin/env bash
# MQTT benchmark: (1) ingest rate — messages/s from a Mosquitto broker on this machine into the
# engine (published as fast as the broker takes them, counted by the engine's metrics), at QoS 0
# and QoS 1; (2) latency from `publish` to the row reaching a materialized view, observed by a
# WebSocket subscriber of that view, at 10k msg/s (p50/p99); (3) QoS 1 ingest again with
# Mosquitto's default of 20 unacknowledged messages per client, with and without checkpoints.
#
#   bench/mqtt.sh [MESSAGES] [SECONDS]    (defaults: 500000 messages; 10 s of latency measurement)
#
# Everything shares the machine: broker, engine, publishers and subscriber.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
messages=${1:-500000}
seconds=${2:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
export RUST_BACKTRACE=0
export PATH="$PATH:/usr/sbin"
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/mqtt
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > mosquitto.conf <<CONF
user root
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 1000
CONF
mosquitto -c mosquitto.conf 2> broker.log &
broker=$!
trap 'kill $broker 2> /dev/null || true' EXIT
sleep 0.5

# Starts the engine on $1 (a pipeline file), with $2 (default: --no-state); sets $engine and
# $address.
start_engine() {
  "$bin/vibelux" run "$1" --http 127.0.0.1:0 ${2:---no-state} 2> engine.log &
  engine=$!
  address=""
  for _ in $(seq 100); do
    address=$(grep -o 'serving http://[0-9.:]*' engine.log | sed 's|serving http://||' || true)
    [ -n "$address" ] && grep -q 'mqtt subscribed' engine.log && break
    sleep 0.1
  done
}

cat > ingest.sql <<SQL
CREATE SOURCE readings (zone TEXT, sensor_id TEXT NOT NULL, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
  WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:$port', topic = 'bench/{zone}/{sensor_id}',
        qos = '1', allowed_lateness = '1 hour');
CREATE MATERIALIZED VIEW per_zone AS
  SELECT zone, count(*) AS n, avg(temp_c) AS temp_avg, max(rh) AS rh_max FROM readings GROUP BY zone;
SQL

echo "== ingest: $messages messages, 1,000 sensors, into a per-zone aggregate"
for qos in 0 1; do
  start_engine ingest.sql
  "$bin/vibelux-bench" mqtt-ingest --broker "127.0.0.1:$port" --engine "$address" \
    --messages "$messages" --qos "$qos" || true
  kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
done
# Checkpointed: every message journaled and synced before it is acknowledged.
echo "-- QoS 1, checkpointed (journal synced before each acknowledgement batch)"
rm -rf state
start_engine ingest.sql "--state state"
"$bin/vibelux-bench" mqtt-ingest --broker "127.0.0.1:$port" --engine "$address" \
  --messages "$messages" --qos 1 || true
kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
echo "   journal on disk after the run: $(du -sh state/sources 2> /dev/null | cut -f1)"

cat > latency.sql <<SQL
CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, sent_us BIGINT, WATERMARK FOR ts AS ts)
  WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:$port', topic = 'bench/{sensor_id}', qos = '1');
CREATE MATERIALIZED VIEW latest AS
  SELECT sensor_id, max(sent_us) AS sent_us, count(*) AS n FROM readings GROUP BY sensor_id;
SQL
echo "== latency: publish (QoS 1) → materialized view → WebSocket subscriber"
start_engine latency.sql
"$bin/vibelux-bench" live --address "$address" --mqtt "127.0.0.1:$port" --rate 10000 \
  --subscribers 1 --duration "${seconds}s" || true
kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true

# Mosquitto's default of 20 unacknowledged messages per client: each acknowledgement's wait
# caps the rate. (The queue is left unbounded, as above, so the broker drops nothing.)
kill "$broker" 2> /dev/null; wait "$broker" 2> /dev/null || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > mosquitto.conf <<CONF
user root
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 20
CONF
mosquitto -c mosquitto.conf 2> broker.log &
broker=$!
sleep 0.5
sed -i "s|mqtt://127.0.0.1:[0-9]*|mqtt://127.0.0.1:$port|" ingest.sql
echo "== ingest with Mosquitto's default max_inflight_messages 20: $messages messages, QoS 1"
echo "-- without checkpoints"
start_engine ingest.sql
"$bin/vibelux-bench" mqtt-ingest --broker "127.0.0.1:$port" --engine "$address" \
  --messages "$messages" --qos 1 || true
kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
echo "-- checkpointed (journal synced before each acknowledgement batch)"
rm -rf state
start_engine ingest.sql "--state state"
"$bin/vibelux-bench" mqtt-ingest --broker "127.0.0.1:$port" --engine "$address" \
  --messages "$messages" --qos 1 || true
kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
