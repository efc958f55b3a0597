-- The worker's write-ahead note: before writing a partition's batch it records the
-- batch's offset range here. A worker that replays from the same committed offset
-- after a crash cuts exactly the same batch, so its deduplication token matches.
CREATE TABLE IF NOT EXISTS sink_batches (
  consumer_group String,
  topic String,
  partition UInt32,
  first_offset UInt64,
  last_offset UInt64,
  written_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(written_at)
ORDER BY (consumer_group, topic, partition, first_offset)
TTL toDateTime(written_at) + INTERVAL 32 DAY
