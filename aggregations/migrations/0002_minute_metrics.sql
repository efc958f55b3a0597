-- Additive metrics per minute and per combination of every dimension. Summed by
-- merges, so any range and any subset of dimensions is a GROUP BY over this table.
CREATE TABLE IF NOT EXISTS minute_metrics (
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
  video_impression SimpleAggregateFunction(sum, UInt64),
  video_view SimpleAggregateFunction(sum, UInt64),
  watched_ms SimpleAggregateFunction(sum, UInt64),
  ad_start SimpleAggregateFunction(sum, UInt64),
  alive_ss_ad_start SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer)
SETTINGS non_replicated_deduplication_window = 10000
