-- Usage per account and UTC day of receipt, for the usage report and monthly event quotas.
-- Fed from events_stream like the other summing views (each replayed block is kept or dropped
-- by this table's own deduplication window), so a replay counts nothing twice. Bots' events
-- were accepted too: they count as events (bot_events says how many) but not as sessions.
CREATE TABLE IF NOT EXISTS usage_daily (
  account LowCardinality(String),
  day Date,
  events SimpleAggregateFunction(sum, UInt64),
  bot_events SimpleAggregateFunction(sum, UInt64),
  sessions AggregateFunction(uniqCombined64, UInt64)
) ENGINE = AggregatingMergeTree
ORDER BY (account, day)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_daily_mv TO usage_daily AS
SELECT
  account,
  toDate(received_at) AS day,
  toUInt64(count()) AS events,
  toUInt64(countIf(is_bot)) AS bot_events,
  uniqCombined64StateIf(session_key, NOT is_bot) AS sessions
FROM events_stream
GROUP BY account, day;

-- What events_raw still holds (its last 32 days) is counted once, now; run with the workers stopped.
INSERT INTO usage_daily
SELECT account, toDate(received_at) AS day, toUInt64(count()), toUInt64(countIf(is_bot)),
       uniqCombined64StateIf(session_key, NOT is_bot)
FROM events_raw
GROUP BY account, day;

-- Events the tracker refused one by one (invalid, in_future, too_late, duplicate_id), from the
-- dead-letter topic: one row per message, keyed by its place in the topic, so a redelivered
-- message is the same row (counted with uniqExact over the place, exact before any merge).
CREATE TABLE IF NOT EXISTS rejected_events (
  account LowCardinality(String),
  day Date,
  reason LowCardinality(String),
  kafka_partition UInt32,
  kafka_offset UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (account, day, reason, kafka_partition, kafka_offset)
TTL day + INTERVAL 400 DAY;

-- An account's monthly quota of accepted events (0: none).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS monthly_event_quota UInt64 DEFAULT 0
