-- Readings from sensors publishing JSON over MQTT, per-zone minute averages, and alerts
-- published back. Needs a broker: `apt-get install mosquitto`, then `mosquitto -p 1883`, and
--   mosquitto_pub -t site/r1/z1/s1 -q 1 -m '{"ts":"2026-06-01T06:00:00Z","temp_c":31.5,"rh":60}'
-- Options and delivery guarantees: docs/connectors.md.

CREATE SOURCE readings (
  room      TEXT,
  zone      TEXT,
  sensor_id TEXT NOT NULL,
  ts        TIMESTAMP,
  temp_c    DOUBLE UNIT '°C',
  rh        DOUBLE UNIT '%',
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (
  connector = 'mqtt',
  url = 'mqtt://127.0.0.1:1883',
  topic = 'site/{room}/{zone}/{sensor_id}',
  qos = '1',
  allowed_lateness = '10 minutes'
);

CREATE MATERIALIZED VIEW zone_minute AS
  SELECT zone, window_start, avg(temp_c) AS temp_avg, avg(rh) AS rh_avg, count(*) AS n
  FROM TUMBLE(readings, ts, INTERVAL '1 minute')
  GROUP BY zone, window_start;

CREATE VIEW hot AS SELECT room, sensor_id, ts, temp_c FROM readings WHERE temp_c > 30;

CREATE SINK hot_alerts FROM hot WITH (
  connector = 'mqtt', url = 'mqtt://127.0.0.1:1883',
  topic = 'alerts/{room}/{sensor_id}', qos = '1', retain = 'true');

CREATE SINK mqtt_errors FROM readings_errors WITH (connector = 'file', path = 'out/mqtt-errors.jsonl');
