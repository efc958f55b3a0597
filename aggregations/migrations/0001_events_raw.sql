-- Raw enriched events, kept for inspection, for rebuilding session state after a
-- restart, and for recognising retried events. Ordered so that one session's events
-- are one range read. kafka_partition/kafka_offset say which batch wrote a row.
-- The TTL (32 days) exceeds the lateness window (7 days) so deduplication sees
-- every event that can still arrive; aggregates below have no TTL.
CREATE TABLE IF NOT EXISTS events_raw (
  account LowCardinality(String),
  session String,
  session_key UInt64,
  fingerprint UInt64,
  event_id String,
  type LowCardinality(String),
  event_time DateTime64(3, 'UTC'),
  device_ts Int64,
  received_at DateTime64(3, 'UTC'),
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
  user String,
  duration_s Nullable(Float64),
  is_bot Bool,
  watched_ms UInt32,
  position Nullable(Float64),
  percentiles Array(UInt8),
  startup_ms Nullable(UInt32),
  percent UInt8,
  rebuffer_ms UInt32,
  server_side Bool,
  error_code String,
  error_message String,
  fatal Bool,
  kafka_partition UInt32,
  kafka_offset UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (account, session_key, event_id)
TTL toDateTime(event_time) + INTERVAL 32 DAY
SETTINGS non_replicated_deduplication_window = 10000
