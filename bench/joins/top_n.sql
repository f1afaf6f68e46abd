-- The three sensors of each zone with the highest average so far (TOP-N over an updating
-- input: every reading moves its sensor's average, and the first three of its zone follow).
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'file', path = 'readings.jsonl', format = 'json', batch_size = '4096');
CREATE VIEW sensor_avg AS SELECT zone, sensor_id, avg(temp_c) AS temp_avg FROM readings GROUP BY zone, sensor_id;
CREATE VIEW podium AS SELECT zone, sensor_id, temp_avg, place FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY zone ORDER BY temp_avg DESC) AS place FROM sensor_avg)
  WHERE place <= 3;
CREATE SINK out FROM podium WITH (connector = 'file', path = 'out/top_n.jsonl');
