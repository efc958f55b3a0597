-- Quality of experience: rebuffering, time to first frame, fatal errors, known viewers
-- per minute, and sessions that ended before their first frame. The view on events_raw
-- is replaced to fill the new columns; run this migration with the workers stopped
-- (vidpulse applies it at a worker's start-up, before it consumes), since blocks
-- written between the DROP and the CREATE would miss the view.
ALTER TABLE minute_metrics
  ADD COLUMN IF NOT EXISTS rebuffer_ms SimpleAggregateFunction(sum, UInt64),
  ADD COLUMN IF NOT EXISTS first_frames SimpleAggregateFunction(sum, UInt64),
  ADD COLUMN IF NOT EXISTS ttff AggregateFunction(quantilesTiming(0.5, 0.95, 0.99), UInt32),
  ADD COLUMN IF NOT EXISTS fatal_sessions AggregateFunction(uniqCombined64, UInt64),
  ADD COLUMN IF NOT EXISTS viewers AggregateFunction(uniqCombined64, UInt64);

DROP VIEW IF EXISTS minute_metrics_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS minute_metrics_mv TO minute_metrics AS
SELECT
  account,
  toStartOfMinute(event_time) AS minute,
  video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer,
  countIf(type = 'impression') AS video_impression,
  countIf(type = 'view') AS video_view,
  sumIf(toUInt64(watched_ms), type IN ('heartbeat', 'stop')) AS watched_ms,
  countIf(type = 'ad_start') AS ad_start,
  countIf(type = 'ad_start' AND server_side) AS alive_ss_ad_start,
  sumIf(toUInt64(rebuffer_ms), type = 'rebuffer') AS rebuffer_ms,
  countIf(type = 'first_frame') AS first_frames,
  quantilesTimingStateIf(0.5, 0.95, 0.99)(toUInt32(ifNull(startup_ms, 0)), type = 'first_frame') AS ttff,
  uniqCombined64StateIf(session_key, type = 'error' AND fatal) AS fatal_sessions,
  uniqCombined64StateIf(cityHash64(user), type = 'view' AND user != '') AS viewers
FROM events_raw
WHERE NOT is_bot
GROUP BY account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer;

ALTER TABLE session_minutes ADD COLUMN IF NOT EXISTS exit_before_start Bool DEFAULT false;

ALTER TABLE minute_uniques ADD COLUMN IF NOT EXISTS exits_before_start AggregateFunction(uniqCombined64, UInt64);

DROP VIEW IF EXISTS minute_uniques_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS minute_uniques_mv TO minute_uniques AS
SELECT account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer,
  uniqCombined64State(session_key) AS sessions,
  uniqCombined64State(fingerprint) AS fingerprints,
  uniqCombined64StateIf(session_key, exit_before_start) AS exits_before_start
FROM session_minutes
GROUP BY account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer
