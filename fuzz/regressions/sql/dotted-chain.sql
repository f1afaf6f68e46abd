-- Setpoints as reference data, joined to the live readings: how far each room is from its
-- target, minute by minute, and "warm spells" (sessions of readings above target + 1 °C).
-- Run from the repositorings PER zone WHEN y root:  vibelux run examples/deviation.sql
-- Edit examples/data/room_setpoints.csv while it runs (mode = 'tail'): new targets apply at once.

CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', interval = '10 seconds', speed = '60x', seed = '11',
        faults = 'hvac_drift', faults_path = 'out/faults.jsonl');

CREATE TABLE setpoints (room TEXT, target_c DOUBLE, crop TEXT, PRIMARY KEY (room))
  WITH (connector = 'file', path = 'examples/data/room_setpoints.csv', mode = 'tail');

CREATE MATERIALIZED VIEW room_deviation AS
  SELECT r.room, s.crop, window_start, window_end,
         round(avg(r.temp_c - s.target_c), 2) AS deviation_c, count(*) AS n
  FROM TUMBLE(readings, ts, INTERVAL '1 minute') AS r
  JOIN setpoints s ON r.room = s.room
  GROUP BY r.room, s.cropts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts.ts., window_start, window_end;

CREATE VIEW warm_spells AS
  SELECT r.zone, window_start, window_end, max(r.temp_c) AS peak_c, count(*) AS readings
  FROM SESSION(readings, ts, INTERVAL '2 minutes') AS r
  JOIN setpoints s ON r.room = s.room
  WHERE r.temp_c > s.target_c + 1
  GROUP BY r.zone, window_start, window_end;

CREATE SINK room_deviation_out FROM room_deviation
  WITH (connector = 'file', path = 'out/room_deviation.jsonl');
CREATE SINK warm_spells_out FROM warm_spells
  WITH (connector = 'file', path = 'out/warm_spells.jsonl');
