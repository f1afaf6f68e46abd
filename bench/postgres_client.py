"""The Postgres side of bench/postgres.sh, with psycopg (what a Python client would use).

  postgres_client.py subscribe DSN SECONDS   latency of SUBSCRIBE rows: now minus the row's sent_us
  postgres_client.py select DSN TIMES        SELECT * FROM latest, TIMES times: rows and time each
"""
import statistics
import sys
import time

import psycopg


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def subscribe(dsn, seconds):
    latencies = []
    conn = psycopg.connect(dsn, autocommit=True)
    end = time.time() + seconds
    # Columns: mz_timestamp, mz_diff, sensor_id, sent_us, n.
    for row in conn.cursor().stream("SUBSCRIBE latest WITH (SNAPSHOT = false)"):
        now_us = time.time_ns() // 1000
        if row[1] == 1:
            latencies.append((now_us - row[3]) / 1000.0)
        if time.time() > end:
            break
    conn.close()
    if not latencies:
        print("postgres SUBSCRIBE: no rows")
        return
    print(
        f"postgres SUBSCRIBE: {len(latencies)} updates; latency ms p50 {percentile(latencies, 0.5):.1f}"
        f" p99 {percentile(latencies, 0.99):.1f} max {max(latencies):.1f}"
    )


def select(dsn, times):
    durations, rows = [], 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(times):
            started = time.perf_counter()
            rows = len(conn.execute("SELECT * FROM latest").fetchall())
            durations.append((time.perf_counter() - started) * 1000)
    print(
        f"postgres SELECT * FROM latest: {rows} rows; ms median {statistics.median(durations):.1f}"
        f" p99 {percentile(durations, 0.99):.1f} (psycopg, {times} runs)"
    )


if __name__ == "__main__":
    mode, dsn, count = sys.argv[1], sys.argv[2], float(sys.argv[3])
    subscribe(dsn, count) if mode == "subscribe" else select(dsn, int(count))
