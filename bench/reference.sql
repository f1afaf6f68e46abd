-- The reference pipeline of the benchmark (bench/run.sh): readings → derived columns →
-- 1-minute tumbling windows per sensor and per zone → JSON-lines files.
-- Run from a folder holding data/readings.jsonl (bench/run.sh does).

CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'data/readings.jsonl', format = 'json', batch_size = '4096');

CREATE VIEW climate AS
  SELECT sensor_id, zone, ts, temp_c, rh, temp_c * 1.8 + 32 AS temp_f
  FROM readings WHERE rh BETWEEN 0 AND 100;

CREATE VIEW sensor_minute AS
  SELECT sensor_id, window_start, window_end,
         avg(temp_c) AS temp_avg, max(temp_f) AS temp_f_max, min(rh) AS rh_min, count(*) AS n
  FROM TUMBLE(climate, ts, INTERVAL '1 minute')
  GROUP BY sensor_id, window_start, window_end;

CREATE VIEW zone_minute AS
  SELECT zone, window_start, window_end,
         avg(temp_c) AS temp_avg, max(temp_f) AS temp_f_max, min(rh) AS rh_min, count(*) AS n
  FROM TUMBLE(climate, ts, INTERVAL '1 minute')
  GROUP BY zone, window_start, window_end;

CREATE SINK sensor_minute_out FROM sensor_minute
  WITH (connector = 'file', path = 'out/sensor_minute.jsonl', format = 'json');
CREATE SINK zone_minute_out FROM zone_minute
  WITH (connector = 'file', path = 'out/zone_minute.jsonl', format = 'json');
