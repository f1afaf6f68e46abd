-- Each reading with its zone's limit where it exceeds it, padded with NULLs where it does not
-- (a LEFT JOIN with a condition beside the equality), counted per zone and minute. The join
-- keeps every reading, and the readings once more by all their columns for the unmatched ones.
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'readings.jsonl', format = 'json', batch_size = '4096');
CREATE TABLE limits (zone TEXT, max_c DOUBLE, PRIMARY KEY (zone))
  WITH (connector = 'file', path = 'limits.csv', format = 'csv');
CREATE VIEW checked AS SELECT r.ts, r.zone, r.temp_c, l.max_c
  FROM readings r LEFT JOIN limits l ON r.zone = l.zone AND r.temp_c > l.max_c;
CREATE VIEW zone_minute AS SELECT zone, window_start, count(*) AS n, count(max_c) AS over
  FROM TUMBLE(checked, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE SINK out FROM zone_minute WITH (connector = 'file', path = 'out/conditional.jsonl');
