-- Fed by every block written to events_raw. The writer only writes events it has not
-- seen, and a retried block (same deduplication token) is dropped here too, so each
-- event is summed once. Bot traffic stays in events_raw and out of every metric.
CREATE MATERIALIZED VIEW IF NOT EXISTS minute_metrics_mv TO minute_metrics AS
SELECT
  account,
  toStartOfMinute(event_time) AS minute,
  video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer,
  countIf(type = 'impression') AS video_impression,
  countIf(type = 'view') AS video_view,
  sumIf(toUInt64(watched_ms), type IN ('heartbeat', 'stop')) AS watched_ms,
  countIf(type = 'ad_start') AS ad_start,
  countIf(type = 'ad_start' AND server_side) AS alive_ss_ad_start
FROM events_raw
WHERE NOT is_bot
GROUP BY account, minute, video, country, continent, subdivision, device_type, os, browser, player, timezone, domain, live, viewer
