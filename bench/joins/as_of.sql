-- Each reading with its zone's target in force when it was taken (an as-of join to a
-- versioned table), the count and largest deviation per zone and minute.
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'readings.jsonl', format = 'json', batch_size = '4096');
CREATE TABLE targets (zone TEXT, valid_from TIMESTAMP, target_c DOUBLE, PRIMARY KEY (zone),
  WATERMARK FOR valid_from AS valid_from - INTERVAL '2 minutes')
  WITH (connector = 'file', path = 'targets.jsonl', format = 'json');
CREATE VIEW deviations AS SELECT r.zone, r.ts, r.temp_c - t.target_c AS deviation
  FROM readings r JOIN targets FOR SYSTEM_TIME AS OF r.ts AS t ON r.zone = t.zone;
CREATE VIEW zone_minute AS SELECT zone, window_start, count(*) AS n, max(deviation) AS top
  FROM TUMBLE(deviations, ts, INTERVAL '1 minute') GROUP BY zone, window_start;
CREATE SINK out FROM zone_minute WITH (connector = 'file', path = 'out/as_of.jsonl');
