#!/usr/bin/env bash
# Postgres port benchmark, beside the WebSocket's (bench/live.sh's setup): (1) SUBSCRIBE latency
# from a row entering the engine to a psycopg client receiving it, measured in the same run as a
# WebSocket subscriber's; (2) SELECT * of a 10,000-row view; with and without tokens and TLS.
#
#   bench/postgres.sh [SECONDS]      (default 10 s of measurement per run)
#
# The engine tails a file the benchmark client appends to (10,000 rows/s over 10,000 sensors);
# each row carries the wall-clock time it was written, and the view keeps the latest per sensor.
# The Python client's own time per row is in its numbers: it is what a psycopg user sees.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/postgres
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
python3 -c "import psycopg" 2> /dev/null || python3 -m pip install --quiet "psycopg[binary]>=3.2,<4"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

cat > live.sql <<'SQL'
CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, sent_us BIGINT, WATERMARK FOR ts AS ts)
  WITH (connector = 'file', path = 'readings.jsonl', format = 'json', mode = 'tail');
CREATE MATERIALIZED VIEW latest AS
  SELECT sensor_id, max(sent_us) AS sent_us, count(*) AS n FROM readings GROUP BY sensor_id;
SQL
bash "$repo/bench/certificates.sh"

# One engine per case: $1 = "plain", "auth" (tokens) or "tls" (tokens and TLS).
measure() {
  : > readings.jsonl
  local guard=() token=() password="" ssl="sslmode=disable"
  if [ "$1" != plain ]; then
    rm -f tokens.toml
    password=$("$bin/vibelux" auth token --name bench --role viewer --file tokens.toml 2> /dev/null)
    token=(--token "$password")
    guard=(--auth tokens.toml --audit-log off)
  fi
  if [ "$1" = tls ]; then
    guard+=(--tls-cert server.pem --tls-key server.key)
    ssl="sslmode=verify-full sslrootcert=ca.pem"
  fi
  "$bin/vibelux" run live.sql --http 127.0.0.1:0 --pg 127.0.0.1:0 --no-state "${guard[@]}" 2> engine.log &
  local engine=$!
  local http="" pg=""
  for _ in $(seq 100); do
    http=$(grep -o 'serving https*://[0-9.:]*' engine.log | sed 's|serving https*://||' || true)
    pg=$(grep -o 'serving postgres://[0-9.:]*' engine.log | sed 's|serving postgres://||' || true)
    [ -n "$http" ] && [ -n "$pg" ] && break
    sleep 0.1
  done
  local dsn="host=127.0.0.1 port=${pg##*:} user=bench dbname=vibelux $ssl"
  [ -n "$password" ] && dsn="$dsn password=$password"
  echo "== $1"
  python3 "$repo/bench/postgres_client.py" subscribe "$dsn" "$seconds" &
  local subscriber=$!
  sleep 1
  local websockets=(--address "$http" --subscribers 1)
  [ "$1" = tls ] && websockets+=(--ca ca.pem)
  "$bin/vibelux-bench" live "${websockets[@]}" --file readings.jsonl --rate 10000 --sensors 10000 \
    --duration "${seconds}s" "${token[@]}" || true
  wait "$subscriber" || true
  python3 "$repo/bench/postgres_client.py" select "$dsn" 20
  kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
}

measure plain
measure auth
measure tls
