-- Each reading with the same sensor's readings of the next 10 seconds (an interval join of the
-- stream with itself), the count and largest rise per sensor and minute.
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'readings.jsonl', format = 'json', batch_size = '4096');
CREATE VIEW rises AS SELECT a.sensor_id, a.ts, b.temp_c - a.temp_c AS rise
  FROM readings a JOIN readings b
  ON a.sensor_id = b.sensor_id AND b.ts BETWEEN a.ts + INTERVAL '1 millisecond' AND a.ts + INTERVAL '10 seconds';
CREATE VIEW rise_minute AS SELECT sensor_id, window_start, count(*) AS n, max(rise) AS top
  FROM TUMBLE(rises, ts, INTERVAL '1 minute') GROUP BY sensor_id, window_start;
CREATE SINK out FROM rise_minute WITH (connector = 'file', path = 'out/interval.jsonl');
