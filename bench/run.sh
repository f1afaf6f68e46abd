#!/usr/bin/env bash
# The reference pipeline benchmark: the engine with 1 and 2 workers beside the hand-written
# baseline and DuckDB's batch query, on the same ≥ 5M JSON readings, in one run (this machine is
# noisy: compare ratios).
#
#   bench/run.sh [ROWS]      (default 5000000; data is cached under $BENCH_DIR)
#
# Prints events/s, events per CPU-second and peak RSS for each, and the engine's ratios to the
# baseline and to DuckDB.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-5000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}
mkdir -p "$work/data"

cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
data=$work/data/readings.jsonl
if [ ! -f "$data" ] || [ "$(wc -l < "$data")" -ne "$rows" ]; then
  echo "generating $rows readings into $data"
  "$bin/vibelux-bench" generate --rows "$rows" --out "$data"
fi

# Runs a command, prints "<seconds> <peak RSS KiB> <CPU seconds>".
measure() {
  /usr/bin/time -f '%e %M %U %S' -o "$work/time.txt" "$@" > /dev/null 2> "$work/stderr.txt" || { cat "$work/stderr.txt"; exit 1; }
  read -r wall rss user system < "$work/time.txt"
  echo "$wall $rss $(echo "$user + $system" | bc -l)"
}

cd "$work"
printf '%-22s %12s %14s %14s %12s\n' run seconds events/s events/CPU-s "peak RSS MiB"
report() {
  local name=$1 seconds=$2 rss=$3 cpu=$4
  printf '%-22s %12.2f %14.0f %14.0f %12.1f\n' "$name" "$seconds" "$(echo "$rows / $seconds" | bc -l)" \
    "$(echo "$rows / $cpu" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}
read -r base_s base_rss base_cpu < <(measure "$bin/vibelux-bench" baseline "$data" --out-dir "$work/baseline")
report "hand-written baseline" "$base_s" "$base_rss" "$base_cpu"
# DuckDB's batch query over the same file, writing the same two files (installed as the test
# script installs it).
python3 -c 'import duckdb' 2> /dev/null || python3 -m pip install -q duckdb
mkdir -p "$work/duckdb"
read -r duck_s duck_rss duck_cpu < <(measure python3 "$repo/bench/reference_duckdb.py" "$data" "$work/duckdb")
report "duckdb (batch)" "$duck_s" "$duck_rss" "$duck_cpu"
same_windows() {
  # Same windows as the baseline? Compare the per-zone output, sorted.
  if ! diff -q <(sort "$work/baseline/zone_minute.jsonl" | sed 's/"temp_avg":[^,]*,//') \
               <(sort "$work/out/zone_minute.jsonl" | sed 's/"temp_avg":[^,]*,//') > /dev/null; then
    echo "  WARNING: zone windows differ from the baseline"
  fi
}
for workers in 1 2; do
  read -r s rss cpu < <(measure "$bin/vibelux" run "$repo/bench/reference.sql" --workers "$workers" --http off --no-state)
  report "vibelux --workers $workers" "$s" "$rss" "$cpu"
  echo "  ratio to baseline: $(echo "scale=2; $base_s / $s" | bc -l) (wall), $(echo "scale=2; $base_cpu / $cpu" | bc -l) (per CPU-second); to DuckDB per CPU-second: $(echo "scale=2; $duck_cpu / $cpu" | bc -l)"
  same_windows
  # The same run checkpointed at the default interval (a fresh state directory each time; a
  # checkpointed file sink appends, so the outputs start empty too).
  rm -rf "$work/state" "$work/out"
  read -r cs crss ccpu < <(measure "$bin/vibelux" run "$repo/bench/reference.sql" --workers "$workers" --http off --state "$work/state")
  report "  with checkpoints" "$cs" "$crss" "$ccpu"
  echo "  checkpoint overhead: $(echo "scale=1; 100 * ($cs - $s) / $s" | bc -l)% ($(ls "$work/state" | wc -l) checkpoints kept, $(du -sh "$work/state" | cut -f1))"
  same_windows
done
