-- Values admitted per (account, UTC day, dimension) for the client-chosen dimensions
-- (video, player, domain). Once a day holds the cap, new values are written as
-- "(other)" in every table; events_raw keeps what was folded in `folded`.
CREATE TABLE IF NOT EXISTS dimension_values (
  account LowCardinality(String),
  day Date,
  dimension LowCardinality(String),
  value String
) ENGINE = ReplacingMergeTree
ORDER BY (account, day, dimension, value)
TTL day + INTERVAL 3 DAY;

ALTER TABLE events_raw ADD COLUMN IF NOT EXISTS folded Map(LowCardinality(String), String)
