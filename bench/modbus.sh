#!/usr/bin/env bash
# Modbus polling benchmark: DEVICES simulated PLCs (in the benchmark process, each a Modbus TCP
# server on loopback) × TAGS tags, polled every second by one engine (a source per device).
# Reports tags/s sustained, the engine's CPU share, and poll-to-row latency (p50/p99): from the
# poll to the row appearing in its sink file.
#
#   bench/modbus.sh [DEVICES] [TAGS] [SECONDS]    (defaults: 100 200 20)
#
# Devices, engine and measurement share the machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
devices=${1:-100}
tags=${2:-200}
seconds=${3:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
export RUST_BACKTRACE=0
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/modbus
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
rm -rf "$work" && mkdir -p "$work"
"$bin/vibelux-bench" modbus-poll --engine "$bin/vibelux" --dir "$work" \
  --devices "$devices" --tags "$tags" --duration "${seconds}s"
