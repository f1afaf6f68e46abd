#!/usr/bin/env bash
# One-minute windows per sensor (count and sum) on our aggregate operator against
# differential-dataflow's `reduce`, over the same readings made in memory (no decoding, no
# sink), one worker, each run a process of its own. In one run (this machine is noisy: compare
# ratios).
#
#   bench/reduce.sh [ROWS] [SENSORS]      (defaults 2000000 and 1000)
#
# Prints CPU seconds, events per CPU-second (the time to make the readings subtracted) and
# peak RSS per run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-2000000}
sensors=${2:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
cargo build --release -q -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bench=$CARGO_TARGET_DIR/release/vibelux-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs one engine; prints "<CPU seconds> <peak RSS KiB>".
measure() {
  /usr/bin/time -f '%U %S %M' -o "$work/time.txt" "$bench" reduce "$1" --rows "$rows" --sensors "$sensors" 2> "$work/stderr.txt" \
    || { cat "$work/stderr.txt"; exit 1; }
  read -r user system rss < "$work/time.txt"
  echo "$(echo "$user + $system" | bc -l) $rss"
}
read -r base base_rss < <(measure none)
printf '%-14s %10s %16s %12s  %s\n' engine "CPU s" "events/CPU-s" "peak RSS MiB" "rows out"
for engine in ours ours-changes differential; do
  read -r cpu rss < <(measure "$engine")
  net=$(echo "$cpu - $base" | bc -l)
  printf '%-14s %10.2f %16.0f %12.1f  %s\n' "$engine" "$cpu" "$(echo "$rows / $net" | bc -l)" \
    "$(echo "$rss / 1024" | bc -l)" "$(grep -o '[0-9]* window rows' "$work/stderr.txt")"
done
echo "(making the readings alone: $base CPU s, $(echo "$base_rss / 1024" | bc -l | cut -c1-5) MiB)"
