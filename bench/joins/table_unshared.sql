-- The two views of table_shared.sql, the second joining a filtered copy of the readings: a
-- relation of its own, so its join arranges the readings a second time.
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'readings.jsonl', format = 'json', batch_size = '4096');
CREATE TABLE zones (zone TEXT, name TEXT, PRIMARY KEY (zone))
  WITH (connector = 'file', path = 'zones.csv', format = 'csv');
CREATE VIEW named AS SELECT r.ts, r.temp_c, z.name FROM readings r JOIN zones z ON r.zone = z.zone;
CREATE VIEW name_minute AS SELECT name, window_start, count(*) AS n, max(temp_c) AS top
  FROM TUMBLE(named, ts, INTERVAL '1 minute') GROUP BY name, window_start;
CREATE VIEW coolest AS SELECT r.ts, r.temp_c, z.name
  FROM (SELECT * FROM readings WHERE temp_c IS NOT NULL OR temp_c IS NULL) r JOIN zones z ON r.zone = z.zone;
CREATE VIEW coolest_minute AS SELECT name, window_start, min(temp_c) AS bottom
  FROM TUMBLE(coolest, ts, INTERVAL '1 minute') GROUP BY name, window_start;
CREATE SINK out FROM name_minute WITH (connector = 'file', path = 'out/table.jsonl');
CREATE SINK coolest_out FROM coolest_minute WITH (connector = 'file', path = 'out/coolest.jsonl');
