-- Tenants and their read keys. Rows are versions: an update or a revocation inserts a
-- newer version of the row, and readers take the latest with FINAL, so there is no
-- UPDATE and a retried write is harmless. Keys are stored only as SHA-256 hashes of
-- the whole key (keys are 190 random bits, so a plain hash cannot be brute-forced).
CREATE TABLE IF NOT EXISTS accounts (
  account String,
  name String,
  origins Array(String),
  active Bool,
  created_at DateTime64(3, 'UTC'),
  version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY account;

CREATE TABLE IF NOT EXISTS api_keys (
  key_id String,
  account String,
  kind LowCardinality(String),
  key_hash String,
  name String,
  videos Array(String),
  metrics Array(String),
  origins Array(String),
  rate_limit String,
  created_at DateTime64(3, 'UTC'),
  revoked_at Nullable(DateTime64(3, 'UTC')),
  version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key_id
