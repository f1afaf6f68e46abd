#!/usr/bin/env bash
# The join benchmark: a stream-table join, the same with a condition beside the equality (a
# LEFT JOIN keeping the readings no limit is exceeded by), an as-of join to a versioned table,
# an interval join of a stream with itself, and TOP-N over an updating aggregate, each windowed or kept as the
# pipelines in bench/joins/ say; the engine beside DuckDB's batch query on the same files, and
# beside a hand-written loop for the stream-table, as-of and interval joins and TOP-N; then two views joining the
# same inputs, sharing their arrangements or not. In one run (this machine is noisy: compare
# ratios).
#
#   bench/joins.sh [ROWS] [WORKERS]      (defaults 1000000 and 1; data cached under $BENCH_DIR)
#
# Prints CPU seconds, events per CPU-second and peak RSS per run, and checks that the engine's
# windows equal the hand-written loop's.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-1000000}
workers=${2:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/joins
mkdir -p "$work"

cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
python3 -c 'import duckdb' 2> /dev/null || python3 -m pip install -q duckdb
cd "$work"
if [ ! -f readings.jsonl ] || [ "$(wc -l < readings.jsonl)" -ne "$rows" ]; then
  echo "generating $rows readings"
  "$bin/vibelux-bench" generate --rows "$rows" --out readings.jsonl
fi
"$bin/vibelux-bench" join-inputs --out-dir .
cp "$repo"/bench/joins/*.sql .

# Runs a command; prints "<CPU seconds> <peak RSS KiB>".
measure() {
  /usr/bin/time -f '%U %S %M' -o time.txt "$@" > /dev/null 2> stderr.txt || { cat stderr.txt; exit 1; }
  read -r user system rss < time.txt
  echo "$(echo "$user + $system" | bc -l) $rss"
}
printf '%-34s %10s %16s %12s\n' run "CPU s" "events/CPU-s" "peak RSS MiB"
report() {
  printf '%-34s %10.2f %16.0f %12.1f\n' "$1" "$2" "$(echo "$rows / $2" | bc -l)" "$(echo "$3 / 1024" | bc -l)"
}
same() {
  # Whole numbers are written 3 by the engine and 3.0 by serde: compare them alike.
  if diff -q <(sed 's/\.0\([,}]\)/\1/g' "$1" | sort) <(sed 's/\.0\([,}]\)/\1/g' "$2" | sort) > /dev/null; then
    echo "  same windows as the hand-written loop ($(wc -l < "$1") rows)"
  else
    echo "  WARNING: the windows differ from the hand-written loop's"
  fi
}
for join in table conditional as_of interval top_n; do
  rm -rf out
  read -r cpu rss < <(measure "$bin/vibelux" run "$join.sql" --workers "$workers" --http off --no-state)
  report "vibelux $join ($workers worker)" "$cpu" "$rss"
  read -r cpu rss < <(measure python3 "$repo/bench/joins/duckdb_joins.py" "$join" .)
  report "  duckdb $join" "$cpu" "$rss"
  case $join in
    table|as_of|interval)
      kind=${join/_/-}
      read -r cpu rss < <(measure "$bin/vibelux-bench" join-baseline "$kind" readings.jsonl --inputs . --out "baseline_$join.jsonl")
      report "  hand-written $join" "$cpu" "$rss"
      same "out/$join.jsonl" "baseline_$join.jsonl"
      ;;
    top_n)
      read -r cpu rss < <(measure "$bin/vibelux-bench" join-baseline top-n readings.jsonl --inputs . --out baseline_top_n.jsonl)
      report "  hand-written top_n (final podium)" "$cpu" "$rss"
      # The engine writes every change of the podium: what it ends with is the podium.
      python3 "$repo/bench/joins/final_rows.py" out/top_n.jsonl > final_top_n.jsonl
      python3 "$repo/bench/joins/final_rows.py" baseline_top_n.jsonl > final_baseline_top_n.jsonl
      same final_top_n.jsonl final_baseline_top_n.jsonl
      ;;
  esac
done
# Two views on the same join inputs read one arrangement of each; a filtered copy of the
# readings is another relation, arranged again.
for join in table_shared table_unshared; do
  rm -rf out
  read -r cpu rss < <(measure "$bin/vibelux" run "$join.sql" --workers "$workers" --http off --no-state)
  report "vibelux $join ($workers worker)" "$cpu" "$rss"
done
