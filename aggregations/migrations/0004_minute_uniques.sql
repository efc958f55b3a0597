-- Concurrency per minute: which sessions (and fingerprints) were active in it, as
-- mergeable distinct-count states. Writing the same session-minute twice changes
-- nothing, which is what makes the sessionizer's output safe to replay.
CREATE TABLE IF NOT EXISTS session_minutes (
  account LowCardinality(String),
  minute DateTime('UTC'),
  video String,
  country LowCardinality(String),
  continent LowCardinality(String),
  subdivision LowCardinality(String),
  device_type LowCardinality(String),
  os LowCardinality(String),
  browser LowCardinality(String),
  player LowCardinality(String),
  timezone LowCardinality(String),
  domain LowCardinality(String),
  live Bool,
  viewer LowCardinality(String),
  session_key UInt64,
  fingerprint UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS minute_uniques (
  account LowCardinality(String),
  minute DateTime('UTC'),
  video String,
  country LowCardinality(String),
  continent LowCardinality(String),
  subdivision LowCardinality(String),
  device_type LowCardinality(String),
  os LowCardinality(String),
  browser LowCardinality(String),
  player LowCardinality(String),
  timezone LowCardinality(String),
  domain LowCardinality(String),
  live Bool,
  viewer LowCardinality(String),
  sessions AggregateFunction(uniqCombined64, UInt64),
  fingerprints AggregateFunction(uniqCombined64, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer);

CREATE MATERIALIZED VIEW IF NOT EXISTS minute_uniques_mv TO minute_uniques AS
SELECT account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer,
  uniqCombined64State(session_key) AS sessions,
  uniqCombined64State(fingerprint) AS fingerprints
FROM session_minutes
GROUP BY account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer
