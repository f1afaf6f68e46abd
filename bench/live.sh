#!/usr/bin/env bash
# Live-view benchmark: (1) latency from a row entering the engine to a subscribed WebSocket
# client receiving its update, at 10k and 50k rows/s; (2) fan-out: 1,000 and 10,000 concurrent
# subscribers to one view — time until all have their snapshot, and update latency.
#
#   bench/live.sh [SECONDS]      (default 10 s of measurement per run)
#
# The engine tails a file the benchmark client appends to; each row carries the wall-clock time
# it was written, and the view keeps the latest per sensor, so every update says how old it is.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/live
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work" && cd "$work"
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)"

cat > live.sql <<'SQL'
CREATE SOURCE readings (sensor_id TEXT NOT NULL, ts TIMESTAMP, sent_us BIGINT, WATERMARK FOR ts AS ts)
  WITH (connector = 'file', path = 'readings.jsonl', format = 'json', mode = 'tail');
CREATE MATERIALIZED VIEW latest AS
  SELECT sensor_id, max(sent_us) AS sent_us, count(*) AS n FROM readings GROUP BY sensor_id;
SQL

bash "$repo/bench/certificates.sh"

# Runs one engine for the measurement ($1 = rows/s, $2 = subscribers, $3 = "auth" to require
# tokens, as `vibelux run --auth` does, with the subscribers presenting one; "tls" for tokens
# and HTTPS, the subscribers on wss:// trusting the certificate).
measure() {
  : > readings.jsonl
  local guard=() token=()
  if [ -n "${3:-}" ]; then
    rm -f tokens.toml
    token=(--token "$("$bin/vibelux" auth token --name bench --role viewer --file tokens.toml 2> /dev/null)")
    guard=(--auth tokens.toml --audit-log off)
  fi
  if [ "${3:-}" = tls ]; then
    guard+=(--tls-cert server.pem --tls-key server.key)
    token+=(--ca ca.pem)
  fi
  # Thousands of subscribers from one client: lift the per-token bound (100 by default).
  "$bin/vibelux" run live.sql --http 127.0.0.1:0 --no-state --max-subscribers 20000 \
    "${guard[@]}" 2> engine.log &
  local engine=$!
  local address=""
  for _ in $(seq 100); do
    address=$(grep -o 'serving https*://[0-9.:]*' engine.log | sed 's|serving https*://||' || true)
    [ -n "$address" ] && break
    sleep 0.1
  done
  "$bin/vibelux-bench" live --address "$address" --file readings.jsonl --rate "$1" \
    --subscribers "$2" --duration "${seconds}s" "${token[@]}" || true
  kill -INT "$engine" 2> /dev/null; wait "$engine" 2> /dev/null || true
}

echo "== latency, one subscriber"
measure 10000 1
measure 50000 1
echo "== latency with tokens (--auth), one subscriber"
measure 10000 1 auth
measure 50000 1 auth
echo "== latency with tokens and TLS (wss://), one subscriber"
measure 10000 1 tls
measure 50000 1 tls
echo "== fan-out (100 rows/s into the view)"
measure 100 1000
measure 100 1000 auth
measure 100 1000 tls
measure 100 10000
