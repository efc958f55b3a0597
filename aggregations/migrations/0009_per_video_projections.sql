-- The minute tables are sorted by (account, minute, ...): a question about one video would
-- read every video's rows of the account over its range. A second sort order, kept by
-- ClickHouse itself as a projection, lets such questions read only that video's rows,
-- so their cost follows the video's own traffic, not the account's. ClickHouse picks
-- the projection by itself when it reads less. Costs the tables' size once more.
ALTER TABLE minute_metrics MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE minute_metrics ADD PROJECTION IF NOT EXISTS by_video (SELECT * ORDER BY account, video, minute);

ALTER TABLE minute_metrics MATERIALIZE PROJECTION by_video;

ALTER TABLE minute_uniques MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE minute_uniques ADD PROJECTION IF NOT EXISTS by_video (SELECT * ORDER BY account, video, minute);

ALTER TABLE minute_uniques MATERIALIZE PROJECTION by_video
