-- Vibelux as a Sparkplug B host application: every metric of every edge node in the group
-- `greenhouse` as a row, per-metric minute averages, and a live view of when each series last
-- went stale (its node or device died). Needs a broker (`mosquitto -p 1883`) and edge nodes
-- publishing spBv1.0/greenhouse/…; engine/tests/peers/sparkplug_node.py is one you can drive.
-- Options, rebirth and staleness: docs/connectors.md.

CREATE SOURCE plant (
  group_id TEXT, edge_node TEXT, device TEXT, metric TEXT,
  value DOUBLE, value_text TEXT, datatype TEXT, ts TIMESTAMP, quality TEXT,
  historical BOOLEAN, message_type TEXT,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (
  connector = 'sparkplug',
  url = 'mqtt://127.0.0.1:1883',
  group = 'greenhouse',
  host_id = 'vibelux',
  allowed_lateness = '1 hour'
);

CREATE MATERIALIZED VIEW metric_minute AS
  SELECT edge_node, device, metric, window_start, avg(value) AS mean, count(*) AS n
  FROM TUMBLE(plant, ts, INTERVAL '1 minute')
  WHERE quality = 'good'
  GROUP BY edge_node, device, metric, window_start, window_end;

CREATE MATERIALIZED VIEW stale_series AS
  SELECT edge_node, device, metric, max(ts) AS last_stale
  FROM plant WHERE quality = 'stale'
  GROUP BY edge_node, device, metric;

CREATE SINK plant_errors_out FROM plant_errors
  WITH (connector = 'file', path = 'out/sparkplug_errors.jsonl');
