-- Coarser rollups of the minute tables, as aggregate projections: per (account, hour, video)
-- and (account, day, video) with the same sums and mergeable states, and per (account, video,
-- minute) and (account, minute) with the per-minute distinct counts the max-of-minutes points
-- need. A projection lives inside each part, so it is written, deduplicated (same token, same
-- block) and merged together with the part's rows: replays cannot count it twice or lose it,
-- which extra views chained on the inserts could not promise. ClickHouse reads one only when
-- a query's keys and filters are expressible from its GROUP BY keys; queries/sql.py asks the
-- whole hours and days of a range in that form. The aggregate expressions here must match
-- the queries' exactly. MATERIALIZE builds them for the parts already written.
ALTER TABLE minute_metrics ADD PROJECTION IF NOT EXISTS hours (
  SELECT account, toStartOfHour(minute), video,
    sum(video_impression), sum(video_view), sum(watched_ms), sum(ad_start), sum(alive_ss_ad_start),
    sum(rebuffer_ms), sum(first_frames), quantilesTimingMergeState(0.5, 0.95, 0.99)(ttff),
    uniqCombined64MergeState(fatal_sessions), uniqCombined64MergeState(viewers)
  GROUP BY account, toStartOfHour(minute), video);

ALTER TABLE minute_metrics ADD PROJECTION IF NOT EXISTS days (
  SELECT account, toStartOfDay(minute), video,
    sum(video_impression), sum(video_view), sum(watched_ms), sum(ad_start), sum(alive_ss_ad_start),
    sum(rebuffer_ms), sum(first_frames), quantilesTimingMergeState(0.5, 0.95, 0.99)(ttff),
    uniqCombined64MergeState(fatal_sessions), uniqCombined64MergeState(viewers)
  GROUP BY account, toStartOfDay(minute), video);

ALTER TABLE minute_metrics ADD PROJECTION IF NOT EXISTS video_minutes (
  SELECT account, video, minute, uniqCombined64Merge(viewers) GROUP BY account, video, minute);

ALTER TABLE minute_metrics ADD PROJECTION IF NOT EXISTS account_minutes (
  SELECT account, minute, uniqCombined64Merge(viewers) GROUP BY account, minute);

ALTER TABLE minute_uniques ADD PROJECTION IF NOT EXISTS hours (
  SELECT account, toStartOfHour(minute), video,
    uniqCombined64MergeState(sessions), uniqCombined64MergeState(fingerprints),
    uniqCombined64MergeState(exits_before_start)
  GROUP BY account, toStartOfHour(minute), video);

ALTER TABLE minute_uniques ADD PROJECTION IF NOT EXISTS days (
  SELECT account, toStartOfDay(minute), video,
    uniqCombined64MergeState(sessions), uniqCombined64MergeState(fingerprints),
    uniqCombined64MergeState(exits_before_start)
  GROUP BY account, toStartOfDay(minute), video);

ALTER TABLE minute_uniques ADD PROJECTION IF NOT EXISTS video_minutes (
  SELECT account, video, minute, uniqCombined64Merge(sessions), uniqCombined64Merge(fingerprints)
  GROUP BY account, video, minute);

ALTER TABLE minute_uniques ADD PROJECTION IF NOT EXISTS account_minutes (
  SELECT account, minute, uniqCombined64Merge(sessions), uniqCombined64Merge(fingerprints)
  GROUP BY account, minute);

ALTER TABLE minute_metrics MATERIALIZE PROJECTION hours SETTINGS mutations_sync = 2;

ALTER TABLE minute_metrics MATERIALIZE PROJECTION days SETTINGS mutations_sync = 2;

ALTER TABLE minute_metrics MATERIALIZE PROJECTION video_minutes SETTINGS mutations_sync = 2;

ALTER TABLE minute_metrics MATERIALIZE PROJECTION account_minutes SETTINGS mutations_sync = 2;

ALTER TABLE minute_uniques MATERIALIZE PROJECTION hours SETTINGS mutations_sync = 2;

ALTER TABLE minute_uniques MATERIALIZE PROJECTION days SETTINGS mutations_sync = 2;

ALTER TABLE minute_uniques MATERIALIZE PROJECTION video_minutes SETTINGS mutations_sync = 2;

ALTER TABLE minute_uniques MATERIALIZE PROJECTION account_minutes SETTINGS mutations_sync = 2
