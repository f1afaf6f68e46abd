#!/usr/bin/env bash
# Alarm benchmark: 10,000 alarm instances (one per simulated sensor) over 50,000 readings/s in
# real time; each transition goes to a file sink. Reports the engine's CPU share and the
# latency from the triggering reading to its transition leaving the engine.
#
#   bench/alarms.sh [SENSORS] [ROWS_PER_SECOND] [SECONDS] [WORKERS]   (defaults: 10000 50000 20 1)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/alarms
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
"$bin/vibelux-bench" alarms --engine "$bin/vibelux" --dir "$work" \
  --sensors "${1:-10000}" --rate "${2:-50000}" --duration "${3:-20}s" --workers "${4:-1}"
