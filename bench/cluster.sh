#!/usr/bin/env bash
# The reference pipeline (bench/reference.sql) as one process with 2 workers and as a cluster
# of 2 processes with 1 worker each, on loopback, over the same readings as bench/run.sh: what
# the network between workers costs per event.
#
#   bench/cluster.sh [ROWS]      (default 2000000; data is cached under $BENCH_DIR)
#
# Then both again checkpointed at the default interval (10 s; a fresh state directory each),
# for what agreeing on cuts across processes and sending parts to process 0 costs.
#
# Then, where valgrind is installed, the instructions of both layouts (cachegrind), which a
# noisy machine does not blur.
#
# Prints wall seconds, CPU seconds (user + system, all processes) and events per CPU-second.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-2000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
work=${BENCH_DIR:-$HOME/.cache/vibelux-bench}/cluster
mkdir -p "$work/data"
cargo build --release -q -p vibelux -p vibelux-bench --manifest-path "$repo/Cargo.toml"
bin=$CARGO_TARGET_DIR/release
data=$work/data/readings.jsonl
if [ ! -f "$data" ] || [ "$(wc -l < "$data")" -ne "$rows" ]; then
  "$bin/vibelux-bench" generate --rows "$rows" --out "$data"
fi
cd "$work"

# Runs "$@" under /usr/bin/time; appends "<wall> <user> <system>" to times.txt.
timed() {
  /usr/bin/time -f '%e %U %S' -a -o times.txt "$@" > /dev/null 2>> engine.log
}

report() {
  local name=$1
  # Wall: the longest process; CPU: all of them.
  read -r wall cpu < <(awk '{ if ($1 > w) w = $1; c += $2 + $3 } END { print w, c }' times.txt)
  printf '%-26s %8.2f s wall %8.2f s CPU %12.0f events/CPU-s %12.0f events/s\n' "$name" "$wall" "$cpu" \
    "$(echo "$rows / $cpu" | bc -l)" "$(echo "$rows / $wall" | bc -l)"
}

rm -rf out times.txt engine.log
timed "$bin/vibelux" run "$repo/bench/reference.sql" --workers 2 --http off --no-state
report "1 process × 2 workers"
sort out/zone_minute.jsonl > one.txt

rm -rf out times.txt
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(port)" "$(port)" > hosts
for process in 0 1; do
  timed "$bin/vibelux" run "$repo/bench/reference.sql" --workers 1 --http off --no-state \
    --hosts hosts --process "$process" &
done
wait
report "2 processes × 1 worker"
# The same windows? An average's last digits depend on the order its sum was taken in, which
# differs with the workers' arrangement; everything else must match.
strip() { sed 's/"temp_avg":[^,]*,//' "$@"; }
if ! diff -q <(strip one.txt) <(sort out/zone_minute.jsonl | strip) > /dev/null; then
  echo "  WARNING: the cluster's zone windows differ from one process's"
fi

rm -rf out times.txt state
timed "$bin/vibelux" run "$repo/bench/reference.sql" --workers 2 --http off --state state
report "1 process × 2, checkpointed"
echo "  $(ls state | grep -c checkpoint) checkpoints kept, $(du -sh state | cut -f1)"

rm -rf out times.txt state
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(port)" "$(port)" > hosts
for process in 0 1; do
  timed "$bin/vibelux" run "$repo/bench/reference.sql" --workers 1 --http off --state state \
    --hosts hosts --process "$process" &
done
wait
report "2 × 1, checkpointed"
echo "  $(ls state | grep -c checkpoint) checkpoints kept, $(du -sh state | cut -f1)"
if ! diff -q <(strip one.txt) <(sort out/zone_minute.jsonl | strip) > /dev/null; then
  echo "  WARNING: the checkpointed cluster's zone windows differ from one process's"
fi

# CPU seconds on a shared virtual machine vary by ±20 % from run to run, more than the
# difference being measured. Instructions do not: where valgrind is installed, count them
# (cachegrind, no cache simulation) for both layouts over the first 400,000 readings.
if ! command -v valgrind > /dev/null; then
  echo "(valgrind is not installed: no instruction counts)"
  exit 0
fi
mkdir -p counted/data
head -400000 "$data" > counted/data/readings.jsonl
cd counted
instructions() {
  grep -h "I *refs" "$@" | awk '{ gsub(",", "", $NF); total += $NF } END { printf "%.3f", total / 1e9 }'
}
count() { valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" > /dev/null; }
rm -rf out
count "$bin/vibelux" run "$repo/bench/reference.sql" --workers 2 --http off --no-state 2> one.vg
one=$(instructions one.vg)
rm -rf out
printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$(port)" "$(port)" > hosts
for process in 0 1; do
  count "$bin/vibelux" run "$repo/bench/reference.sql" --workers 1 --http off --no-state \
    --hosts hosts --process "$process" 2> "cluster$process.vg" &
done
wait
two=$(instructions cluster0.vg cluster1.vg)
printf '%-26s %8s G instructions (400,000 readings)\n' "1 process × 2 workers" "$one" \
  "2 processes × 1 worker" "$two"
echo "  the cluster costs $(echo "($two / $one - 1) * 100" | bc -l | xargs printf '%+.1f') % per event"
