#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust (see README).
#
# Installs, idempotently, what the tests need (procps, curl, Chromium and its WebDriver, the
# Mosquitto broker and its clients, openssl (certificates for the TLS test) from Debian; DuckDB, pyarrow, Selenium, Eclipse Paho and pymodbus from
# PyPI, ONNX Runtime, scikit-learn and skl2onnx, moto, and pysparkplug in a virtual environment), then runs every test of the workspace: unit tests, doc examples, the SQL corpus
# (queries/tests/slt) and the end-to-end CLI, warehouse, live-view, dashboard (headless
# Chromium), MQTT and Sparkplug B (Mosquitto), Modbus (pymodbus), ONNX model (ONNX Runtime, scikit-learn), checkpoints in object storage (moto) and Kafka (Tansu, built once with cargo) tests. Tests start their
# own brokers on loopback and stop them.
# The build goes to $CARGO_TARGET_DIR (default ~/.cache/vibelux-target, outside the clone) so
# later runs reuse it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vibelux-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# System packages the tests use: `kill` (procps) signals the engine in the Ctrl-C test, curl
# calls the HTTP API, Chromium and chromedriver open the dashboard, psql queries the Postgres port.
missing=()
command -v kill > /dev/null || missing+=(procps)
command -v curl > /dev/null || missing+=(curl)
command -v chromium > /dev/null || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
command -v mosquitto > /dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub > /dev/null || missing+=(mosquitto-clients)
command -v openssl > /dev/null || missing+=(openssl)
command -v psql > /dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -q && apt-get install -y -q "${missing[@]}"; else sudo apt-get update -q && sudo apt-get install -y -q "${missing[@]}"; fi
fi

# Python readers the warehouse tests compare against (DuckDB, pyarrow); Selenium drives Chromium;
# Paho publishes to the MQTT source; confluent-kafka produces to and consumes from Kafka.
# pymodbus serves the Modbus tests' register maps. ONNX Runtime's wheel carries the shared
# library `CREATE MODEL` loads; scikit-learn, skl2onnx and onnx train and export the test model.
# moto's server mode is the S3-compatible object storage checkpoints are written to. psycopg
# is a Postgres driver the Postgres port is tested with (beside psql); PyJWT signs the JWTs
# the JWKS test accepts and refuses. PyYAML reads deploy/'s compose file, chart values and
# Prometheus configuration, which a test checks against the binary.
if ! python3 -c "import duckdb, pyarrow, selenium, paho.mqtt, confluent_kafka, pymodbus, onnxruntime, sklearn, skl2onnx, onnx, moto.server, psycopg, jwt, yaml" 2> /dev/null; then
  python3 -m pip install --quiet duckdb pyarrow selenium paho-mqtt confluent-kafka "pymodbus>=3.16,<4" \
    "onnxruntime==1.31.1" scikit-learn skl2onnx onnx "moto[server]>=5,<6" "psycopg[binary]>=3.2,<4" "pyjwt[crypto]>=2.8,<3" "pyyaml>=6,<7"
fi

# pysparkplug (a Sparkplug B edge node's payloads, generated from the published
# sparkplug_b.proto) needs Paho 1.x, so it gets a virtual environment of its own.
tools=${VIBELUX_TOOLS:-$HOME/.cache/vibelux-tools}
export VIBELUX_SPARKPLUG_PYTHON=$tools/sparkplug-venv/bin/python
if ! "$VIBELUX_SPARKPLUG_PYTHON" -c "import pysparkplug" 2> /dev/null; then
  python3 -m venv "$tools/sparkplug-venv"
  "$VIBELUX_SPARKPLUG_PYTHON" -m pip install --quiet "pysparkplug==0.6.1"
fi

command -v cargo > /dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }

# Tansu, a Kafka-compatible broker, built once (~30 min) into a cache outside the clone, with
# its SQLite storage so a test can restart it without losing topics or committed offsets.
export VIBELUX_TANSU=$tools/tansu-libsql/bin/tansu
if [ ! -x "$VIBELUX_TANSU" ]; then
  echo "building the Tansu Kafka broker for the Kafka tests (once; cached in $tools)"
  CARGO_TARGET_DIR=$tools/tansu-libsql-target cargo install tansu --locked --features libsql \
    --root "$tools/tansu-libsql" --quiet
  rm -rf "$tools/tansu-libsql-target"
fi
# Debian installs the broker in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"

# Incremental-compilation caches pile up, gigabytes for every path a clone was built at (CI
# builds a fresh clone each time), and old test binaries with them: keep the disk from filling.
for cache in "$CARGO_TARGET_DIR"/*/incremental; do
  [ -d "$cache" ] && find "$cache" -mindepth 1 -maxdepth 1 -mtime +0 -exec rm -rf {} + 2> /dev/null
done
free_kb=$(df -Pk "$HOME" | awk 'NR == 2 {print $4}')
if [ "${free_kb:-0}" -lt $((20 * 1024 * 1024)) ] && [ -d "$CARGO_TARGET_DIR" ]; then
  echo "less than 20 GiB free: clearing incremental caches and build outputs older than 2 days"
  rm -rf "$CARGO_TARGET_DIR"/*/incremental
  find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -type f -mtime +1 -delete 2> /dev/null || true
fi

cargo test --workspace --locked "$@"
