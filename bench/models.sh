#!/usr/bin/env bash
# Scoring benchmark: ONNX inference through `predict`'s code path at batch sizes 1, 64 and 1024
# (per-call latency p50/p99 = what predict adds to each event of such a batch; inferences/s),
# each online detector's throughput, and a pipeline's rows/s with and without `predict`.
#
#   bench/models.sh [ROWS]     (pipeline rows, default 1000000)
#
# Trains the IsolationForest of models/iforest/train.py once per export (cached under $BENCH_DIR). Needs
# onnxruntime, scikit-learn and skl2onnx (scripts/test.sh installs them).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/models
mkdir -p "$work"
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
for export in compact skl2onnx; do
  if [ ! -f "$work/$export/model.onnx" ]; then
    python3 "$repo/models/iforest/train.py" train --vibelux "$bin/vibelux" --out "$work/$export" \
      --export "$export" > /dev/null 2>&1
  fi
done
echo "== IsolationForest, 50 trees, compact export (one TreeEnsembleRegressor node)"
"$bin/vibelux-bench" models --model "$work/compact/model.onnx" --rows "$work/compact/training.csv"
echo
echo "== the same forest through skl2onnx's own IsolationForest converter (1,360 nodes)"
"$bin/vibelux-bench" models --model "$work/skl2onnx/model.onnx" --rows "$work/skl2onnx/training.csv" \
  --detector-rows 0

# The same pipeline scoring each reading with a sum of its columns, then with the model.
seconds=$(( rows / 200 * 10 ))
pipeline() {
  cat <<SQL
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '4', zones_per_room = '5', sensors_per_zone = '10',
        interval = '10 seconds', speed = 'max', duration = '${seconds}s', seed = '3');
CREATE MODEL iforest FROM '$work/compact/model.onnx';
CREATE VIEW scored AS SELECT room, ts, $1 AS score FROM readings;
CREATE VIEW per_room AS
  SELECT room, window_start, avg(score) AS score, count(*) AS n
  FROM TUMBLE(scored, ts, INTERVAL '1 minute') GROUP BY room, window_start;
CREATE SINK out FROM per_room WITH (connector = 'file', path = '$work/per_room.jsonl');
SQL
}
echo
echo "pipeline, $rows simulated readings (1 worker):"
for case in "temp_c + rh + co2_ppm" "predict('iforest', temp_c, rh, co2_ppm)"; do
  pipeline "$case" > "$work/pipeline.sql"
  rate=$("$bin/vibelux" run "$work/pipeline.sql" --http off --no-state 2>&1 | grep -o '([0-9]* rows/s)' | tr -d '()')
  printf '  %-42s %s\n' "$case" "$rate"
done
