"""The reference pipeline as DuckDB's batch query (bench/run.sh): the same two files of
1-minute windows per sensor and per zone, from the same JSON readings.

Usage: python3 reference_duckdb.py READINGS OUT_DIR

The readings are parsed once into a table both windowings read.
"""
import sys

import duckdb

readings, out = sys.argv[1], sys.argv[2]
db = duckdb.connect()
db.execute(f"""CREATE TABLE climate AS
  SELECT sensor_id, zone, ts, temp_c, rh, temp_c * 1.8 + 32 AS temp_f
  FROM read_json('{readings}', format='newline_delimited', columns={{
    'sensor_id': 'VARCHAR', 'room': 'VARCHAR', 'zone': 'VARCHAR', 'ts': 'TIMESTAMP',
    'temp_c': 'DOUBLE', 'rh': 'DOUBLE', 'co2_ppm': 'DOUBLE', 'ppfd': 'DOUBLE'}})
  WHERE rh BETWEEN 0 AND 100""")
for key in ("sensor_id", "zone"):
    db.execute(f"""COPY (
      SELECT {key}, time_bucket(INTERVAL '1 minute', ts) AS window_start,
        time_bucket(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end,
        avg(temp_c) AS temp_avg, max(temp_f) AS temp_f_max, min(rh) AS rh_min, count(*) AS n
      FROM climate GROUP BY ALL
    ) TO '{out}/{key}_minute.json' (FORMAT json)""")
