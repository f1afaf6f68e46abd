"""The join benchmark's queries in DuckDB, over the same files as the engine (bench/joins.sh).

Usage: python3 duckdb_joins.py NAME FOLDER. Loads the inputs into tables, runs one query as a
batch over them and prints how many rows it gave; the script's CPU time is what the benchmark
compares.
"""
import sys

import duckdb

READINGS = """CREATE TABLE readings AS SELECT * FROM read_json('{folder}/readings.jsonl',
  format='newline_delimited', columns={{
  'sensor_id': 'VARCHAR', 'room': 'VARCHAR', 'zone': 'VARCHAR', 'ts': 'TIMESTAMP',
  'temp_c': 'DOUBLE', 'rh': 'DOUBLE', 'co2_ppm': 'DOUBLE', 'ppfd': 'DOUBLE'}})"""
TARGETS = """CREATE TABLE targets AS SELECT * FROM read_json('{folder}/targets.jsonl',
  format='newline_delimited', columns={{
  'zone': 'VARCHAR', 'valid_from': 'TIMESTAMP', 'target_c': 'DOUBLE'}})"""
ZONES = "CREATE TABLE zones AS SELECT * FROM read_csv('{folder}/zones.csv', header=true)"
LIMITS = "CREATE TABLE limits AS SELECT * FROM read_csv('{folder}/limits.csv', header=true)"

QUERIES = {
    "table": """SELECT z.name, time_bucket(INTERVAL '1 minute', r.ts) AS window_start,
        count(*) AS n, max(r.temp_c) AS top
      FROM readings r JOIN zones z ON r.zone = z.zone GROUP BY ALL""",
    "as_of": """SELECT r.zone, time_bucket(INTERVAL '1 minute', r.ts) AS window_start,
        count(*) AS n, max(r.temp_c - t.target_c) AS top
      FROM readings r ASOF JOIN targets t ON r.zone = t.zone AND r.ts >= t.valid_from
      GROUP BY ALL""",
    "interval": """SELECT a.sensor_id, time_bucket(INTERVAL '1 minute', a.ts) AS window_start,
        count(*) AS n, max(b.temp_c - a.temp_c) AS top
      FROM readings a JOIN readings b ON a.sensor_id = b.sensor_id
        AND b.ts BETWEEN a.ts + INTERVAL '1 millisecond' AND a.ts + INTERVAL '10 seconds'
      GROUP BY ALL""",
    "conditional": """SELECT r.zone, time_bucket(INTERVAL '1 minute', r.ts) AS window_start,
        count(*) AS n, count(l.max_c) AS over
      FROM readings r LEFT JOIN limits l ON r.zone = l.zone AND r.temp_c > l.max_c
      GROUP BY ALL""",
    "top_n": """SELECT zone, sensor_id, temp_avg, place FROM (
        SELECT zone, sensor_id, avg(temp_c) AS temp_avg,
          row_number() OVER (PARTITION BY zone ORDER BY avg(temp_c) DESC) AS place
        FROM readings GROUP BY zone, sensor_id)
      WHERE place <= 3""",
}

name, folder = sys.argv[1], sys.argv[2]
db = duckdb.connect()
# Each input parsed once into a table (reading the JSON inside the join made DuckDB's ASOF
# JOIN 100 times slower), then the query; both count.
for table in (READINGS, TARGETS, ZONES, LIMITS):
    db.execute(table.format(folder=folder))
rows = db.execute(QUERIES[name]).fetchall()
print(len(rows))
