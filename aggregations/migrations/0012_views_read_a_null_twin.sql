-- The views that sum events (minute_metrics, retention_passes) read from events_stream, a
-- Null-engine twin of events_raw that the worker writes the same block to, with the same
-- deduplication token. Why: a view's part is committed after its source's part, not with
-- it. A worker killed between the two left events_raw holding the block and the view
-- without it; on replay ClickHouse dropped the block as a duplicate of events_raw's and
-- pushed nothing to the view, so those rows were lost for good. A Null table holds
-- nothing to be a duplicate of: every replay reaches the views, and each view's target
-- keeps or drops the block by its own token (non_replicated_deduplication_window).
-- Run with the workers stopped (they apply migrations at start-up, before consuming):
-- blocks written between a DROP and its CREATE would miss that view.
-- A column added to events_raw later must be added to events_stream too.
CREATE TABLE IF NOT EXISTS events_stream AS events_raw ENGINE = Null;

-- retention_passes sums passes, so it must drop a block it already holds, like minute_metrics:
-- without a deduplication window every replayed block was counted again.
ALTER TABLE retention_passes MODIFY SETTING non_replicated_deduplication_window = 10000;

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
FROM events_stream
WHERE NOT is_bot
GROUP BY account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer;

DROP VIEW IF EXISTS retention_passes_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS retention_passes_mv TO retention_passes AS
SELECT
  account, video, toStartOfMinute(event_time) AS minute, session_key,
  if(type IN ('heartbeat', 'stop'), 'p', 'q') AS source,
  point AS percentile,
  count() AS passes,
  any(user) AS user,
  any(fingerprint) AS fingerprint,
  max(ifNull(duration_s, 0)) AS duration_s
FROM events_stream
ARRAY JOIN multiIf(type IN ('heartbeat', 'stop'), percentiles,
                   type = 'view', [toUInt8(0)],
                   type = 'quartile', arrayMap(p -> toUInt8(p), range(toUInt32(greatest(toInt32(percent) - 24, 0)), toUInt32(percent) + 1)),
                   CAST([], 'Array(UInt8)')) AS point
WHERE NOT is_bot
GROUP BY account, video, minute, session_key, source, percentile
