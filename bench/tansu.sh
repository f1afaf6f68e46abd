# Sourced by the Kafka benchmarks: starts Tansu, the SQLite build scripts/test.sh installs, on a
# free loopback port with its database in ./broker, and stops it when the script exits. Sets
# $port.
tansu=${VIBELUX_TANSU:-$HOME/.cache/vibelux-tools/tansu-libsql/bin/tansu}
mkdir -p broker
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd broker && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db > broker.log 2>&1) &
broker=$!
trap 'kill $broker 2> /dev/null || true' EXIT
sleep 1
