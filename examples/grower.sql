-- A grower's view of five simulated rooms, on the site's own clock (Europe/Amsterdam):
--   * the daily light integral per zone for each local day, midnight to midnight (23 or 25
--     hours on the days the clocks change), and from lights-on at 06:00;
--   * the last hour per zone, a live view whose readings age out as the hour moves on;
--   * each sensor's step from its previous reading, and its 10-minute running mean;
--   * readings with their room's setpoint where the table has one (a LEFT join keeps the rest).
-- Run it with:  vibelux run examples/grower.sql   (the dashboard shows `zone_last_hour`)

CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE, ppfd DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (
  connector = 'simulator', rooms = '5', zones_per_room = '2', sensors_per_zone = '3',
  interval = '10 seconds', speed = '600x', seed = '3'
);

-- Room setpoints (r05 is not listed), followed as the file is edited.
CREATE TABLE setpoints (room TEXT, target_c DOUBLE, crop TEXT, PRIMARY KEY (room))
  WITH (connector = 'file', path = 'examples/data/room_setpoints.csv', mode = 'tail');

-- Light per local day, in mol/m²/day (at 600× a local day passes every 2.4 minutes).
CREATE VIEW zone_dli AS
  SELECT zone, window_start AS day_start, dli(ppfd, ts) AS dli
  FROM TUMBLE(readings, ts, INTERVAL '1 day', 'Europe/Amsterdam')
  GROUP BY zone, window_start;

-- The same from lights-on at 06:00 local time.
CREATE VIEW zone_photoperiod_dli AS
  SELECT zone, window_start AS lights_on, dli(ppfd, ts) AS dli
  FROM TUMBLE(readings, ts, INTERVAL '1 day', INTERVAL '6 hours', 'Europe/Amsterdam')
  GROUP BY zone, window_start;

-- The last hour per zone: rows leave as the watermark passes them by an hour.
CREATE MATERIALIZED VIEW zone_last_hour AS
  SELECT zone, avg(temp_c) AS temp_avg, max(co2_ppm) AS co2_max,
         median(rh) AS rh_median, count(*) AS readings
  FROM readings WHERE ts > now() - INTERVAL '1 hour'
  GROUP BY zone;

-- Steps between a sensor's readings and its running mean, in event-time order.
CREATE VIEW steps AS
  SELECT sensor_id, zone, ts, temp_c,
         temp_c - LAG(temp_c) OVER (PARTITION BY sensor_id ORDER BY ts) AS step,
         avg(temp_c) OVER (PARTITION BY sensor_id ORDER BY ts
                           RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS temp_recent
  FROM readings;

-- Readings against their room's setpoint; rooms the table does not list keep their readings
-- (with NULLs), and gain a setpoint as soon as the file lists them.
CREATE VIEW against_setpoint AS
  SELECT r.sensor_id, r.room, r.ts, r.temp_c, s.target_c, r.temp_c - s.target_c AS deviation
  FROM readings r LEFT JOIN setpoints s ON r.room = s.room;

CREATE SINK daily_light FROM zone_dli
  WITH (connector = 'file', path = 'out/zone_dli.jsonl');
CREATE SINK jumps FROM steps
  WITH (connector = 'file', path = 'out/steps.jsonl');
CREATE SINK deviations FROM against_setpoint
  WITH (connector = 'file', path = 'out/against_setpoint.jsonl', format = 'json');
