-- Per account, video and minute: the minute tables without the other dimensions. A question
-- that groups and filters by video only (Brightcove's own: a stream's concurrency, its peak)
-- reads at most one row per video and minute, however many sessions watched. Filled from
-- the minute tables by views; the INSERTs back-fill. Run with the workers stopped.
CREATE TABLE IF NOT EXISTS video_minute_metrics (
  account LowCardinality(String),
  video String,
  minute DateTime('UTC'),
  video_impression SimpleAggregateFunction(sum, UInt64),
  video_view SimpleAggregateFunction(sum, UInt64),
  watched_ms SimpleAggregateFunction(sum, UInt64),
  ad_start SimpleAggregateFunction(sum, UInt64),
  alive_ss_ad_start SimpleAggregateFunction(sum, UInt64),
  rebuffer_ms SimpleAggregateFunction(sum, UInt64),
  first_frames SimpleAggregateFunction(sum, UInt64),
  ttff AggregateFunction(quantilesTiming(0.5, 0.95, 0.99), UInt32),
  fatal_sessions AggregateFunction(uniqCombined64, UInt64),
  viewers AggregateFunction(uniqCombined64, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (account, video, minute)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS video_minute_uniques (
  account LowCardinality(String),
  video String,
  minute DateTime('UTC'),
  sessions AggregateFunction(uniqCombined64, UInt64),
  fingerprints AggregateFunction(uniqCombined64, UInt64),
  exits_before_start AggregateFunction(uniqCombined64, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (account, video, minute)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS video_minute_metrics_mv TO video_minute_metrics AS
SELECT account, video, minute,
  sum(video_impression) AS video_impression, sum(video_view) AS video_view, sum(watched_ms) AS watched_ms,
  sum(ad_start) AS ad_start, sum(alive_ss_ad_start) AS alive_ss_ad_start, sum(rebuffer_ms) AS rebuffer_ms,
  sum(first_frames) AS first_frames, quantilesTimingMergeState(0.5, 0.95, 0.99)(ttff) AS ttff,
  uniqCombined64MergeState(fatal_sessions) AS fatal_sessions, uniqCombined64MergeState(viewers) AS viewers
FROM minute_metrics
GROUP BY account, video, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS video_minute_uniques_mv TO video_minute_uniques AS
SELECT account, video, minute,
  uniqCombined64MergeState(sessions) AS sessions, uniqCombined64MergeState(fingerprints) AS fingerprints,
  uniqCombined64MergeState(exits_before_start) AS exits_before_start
FROM minute_uniques
GROUP BY account, video, minute;

INSERT INTO video_minute_metrics
SELECT account, video, minute,
  sum(video_impression), sum(video_view), sum(watched_ms), sum(ad_start), sum(alive_ss_ad_start), sum(rebuffer_ms),
  sum(first_frames), quantilesTimingMergeState(0.5, 0.95, 0.99)(ttff), uniqCombined64MergeState(fatal_sessions),
  uniqCombined64MergeState(viewers)
FROM minute_metrics
GROUP BY account, video, minute;

INSERT INTO video_minute_uniques
SELECT account, video, minute, uniqCombined64MergeState(sessions),
  uniqCombined64MergeState(fingerprints), uniqCombined64MergeState(exits_before_start)
FROM minute_uniques
GROUP BY account, video, minute
