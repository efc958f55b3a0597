-- Where in the content each play's playhead went: one row per (play, minute, source,
-- point 0-100) with how often it passed there (replays count again). Source 'p' is
-- the `percentiles` players report with heartbeats and stops; source 'q' is the
-- fallback for players that send none: a view reaches point 0, quartile 25 reaches
-- 1-25, 50 reaches 26-50, and so on. The retention query uses a play's 'p' rows
-- when it has any, else its 'q' rows. Grain: plays, not raw events, so a video's
-- curve over any range reads at most 101 rows per play.
CREATE TABLE IF NOT EXISTS retention_passes (
  account LowCardinality(String),
  video String,
  minute DateTime('UTC'),
  session_key UInt64,
  source LowCardinality(String),
  percentile UInt8,
  passes UInt64,
  user String,
  fingerprint UInt64,
  duration_s Float64
) ENGINE = SummingMergeTree(passes)
PARTITION BY toYYYYMM(minute)
ORDER BY (account, video, minute, session_key, source, percentile);

CREATE MATERIALIZED VIEW IF NOT EXISTS retention_passes_mv TO retention_passes AS
SELECT
  account, video, toStartOfMinute(event_time) AS minute, session_key,
  if(type IN ('heartbeat', 'stop'), 'p', 'q') AS source,
  point AS percentile,
  count() AS passes,
  any(user) AS user,
  any(fingerprint) AS fingerprint,
  max(ifNull(duration_s, 0)) AS duration_s
FROM events_raw
ARRAY JOIN multiIf(type IN ('heartbeat', 'stop'), percentiles,
                   type = 'view', [toUInt8(0)],
                   type = 'quartile', arrayMap(p -> toUInt8(p), range(toUInt32(greatest(toInt32(percent) - 24, 0)), toUInt32(percent) + 1)),
                   CAST([], 'Array(UInt8)')) AS point
WHERE NOT is_bot
GROUP BY account, video, minute, session_key, source, percentile
