-- PLC tags over Modbus TCP: a grow room's HVAC, dehumidifier, CO2 valve and lights, polled by
-- the tag map in examples/plc/room1.toml. Needs a Modbus TCP server on port 5020 holding that
-- map (a PLC, or a simulator). Options and the tag map: docs/modbus.md.

CREATE SOURCE plc (
  device TEXT, tag TEXT, ts TIMESTAMP, value DOUBLE, raw TEXT, unit TEXT, quality TEXT, error TEXT,
  WATERMARK FOR ts AS ts - INTERVAL '2 seconds'
) WITH (
  connector = 'modbus',
  host = '127.0.0.1',
  port = '5020',
  unit_id = '1',
  device = 'room1-plc',
  tags = 'examples/plc/room1.toml',
  timeout = '500ms',
  retries = '1'
);

-- Each tag's average per minute (good readings only).
CREATE MATERIALIZED VIEW tag_minute AS
  SELECT tag, window_start, avg(value) AS mean, min(value) AS low, max(value) AS high
  FROM TUMBLE(plc, ts, INTERVAL '1 minute')
  WHERE quality = 'good'
  GROUP BY tag, window_start, window_end;

-- Failed reads, with the reason (exception reply, timeout, connection refused).
CREATE MATERIALIZED VIEW read_errors AS
  SELECT tag, count(*) AS failures, max(ts) AS last_failure
  FROM plc WHERE quality = 'bad' GROUP BY tag;
