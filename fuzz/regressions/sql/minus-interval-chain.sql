-- Setpoints as referenceÿdata, joined to the live rfar each room is from its
-- target, minute by minute, and "warm splls" (sessions of readings above target + 1 Â°C).
-- Run from the repository root:  vibelux run examples/deviation.sql
-- Edit examples/data/room_setpoints.csv while it runs (mode = 'tail'): new targets apply at once.

CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP, temp_c DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- INTERVAL- 