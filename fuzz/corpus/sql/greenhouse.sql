-- The reference pipeline: a simulated facility of 4 rooms × 5 zones × 10 sensors.
-- Run it with:  vibelux run examples/greenhouse.sql
--
-- Simulated time runs 60× faster than the clock (speed = '60x'), so a 1-minute window closes
-- every second; use speed = 'realtime' for a live facility, or 'max' with a duration to replay.

CREATE SOURCE readings (
  sensor_id TEXT NOT NULL,
  room      TEXT,
  zone      TEXT,
  ts        TIMESTAMP,
  temp_c    DOUBLE,
  rh        DOUBLE,
  co2_ppm   DOUBLE,
  ppfd      DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (
  connector = 'simulator',
  rooms = '4', zones_per_room = '5', sensors_per_zone = '10',
  interval = '10 seconds',
  speed = '60x',
  seed = '7',
  faults = 'stuck,dropout'    -- one sensor gets stuck, one goes quiet, a few simulated minutes in
);

-- Plausible readings only, with Fahrenheit for the US growers, and what growers steer by:
-- air VPD (kPa) and dew point (°C).
CREATE VIEW climate AS
  SELECT *, temp_c * 1.8 + 32 AS temp_f,
         vpd_air(temp_c, rh) AS vpd_kpa, dew_point(temp_c, rh) AS dew_point_c
  FROM readings
  WHERE rh BETWEEN 0 AND 100;

-- Per-zone climate, minute by minute. Updated live as readings arrive; final once the
-- watermark passes the end of the minute.
CREATE MATERIALIZED VIEW zone_minute AS
  SELECT zone, window_start, window_end,
         avg(temp_c) AS temp_avg, avg(vpd_kpa) AS vpd_avg, max(dew_point_c) AS dew_point_max,
         max(co2_ppm) AS co2_max, count(*) AS n
  FROM TUMBLE(climate, ts, INTERVAL '1 minute')
  GROUP BY zone, window_start, window_end;

-- Sensors behaving oddly: every reading scored against its own sensor's history by the `auto`
-- detector (stuck values, dropouts, drift, unusual readings for the time of day), and the
-- sensors with readings beyond 99.99 % of their usual. docs/anomalies.md.
CREATE VIEW scored AS
  SELECT sensor_id, zone, ts, temp_c,
         anomaly_score('auto', temp_c) OVER (PARTITION BY sensor_id) AS score
  FROM readings;

CREATE MATERIALIZED VIEW sensor_alerts AS
  SELECT sensor_id, zone, count(*) AS odd_readings, max(ts) AS last_odd
  FROM scored WHERE score >= 0.9999
  GROUP BY sensor_id, zone;

-- Alarms (docs/alarms.md): a sensor gone quiet for 3 × its usual interval, and a sensor
-- reading above 28 °C for 5 minutes (cleared below 27 °C). Transitions go to a file; each
-- alarm's current state is the live view <alarm>_state on the dashboard.
CREATE ALARM sensor_quiet ON readings PER sensor_id WHEN STALE
  SEVERITY 'medium' MESSAGE 'no reading from {sensor_id} since {ts}';

CREATE ALARM too_warm ON readings PER sensor_id
  WHEN temp_c > 28 FOR INTERVAL '5 minutes' CLEAR WHEN temp_c < 27
  SEVERITY 'high' MESSAGE '{sensor_id} in {zone} at {temp_c} °C';

CREATE SINK alarms_out FROM sensor_quiet
  WITH (connector = 'file', path = 'out/alarms.jsonl');

-- Each closed minute, once, as JSON lines.
CREATE SINK zone_minute_out FROM zone_minute
  WITH (connector = 'file', path = 'out/zone_minute.jsonl', format = 'json');

-- Room 1's PLC over Modbus TCP: a simulated one, started in-process and polled like a real
-- device by the tag map in examples/plc/room1.toml (HVAC supply temperature and setpoint, CO2,
-- lights, dehumidifier). Its readings are timed by the wall clock. docs/modbus.md.
CREATE SOURCE plc (
  device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, unit TEXT, quality TEXT,
  WATERMARK FOR ts AS ts - INTERVAL '2 seconds'
) WITH (
  connector = 'modbus',
  simulate = 'true',
  device = 'room1-plc',
  tags = 'examples/plc/room1.toml'
);

-- The PLC's tags beside the sensors: each tag's latest reading, live on the dashboard.
CREATE MATERIALIZED VIEW plc_tags AS
  SELECT tag, max(ts) AS last_poll, count(*) AS polls, min(value) AS low, max(value) AS high
  FROM plc WHERE quality = 'good'
  GROUP BY tag;
