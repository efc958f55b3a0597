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
ORDER BY key_id;

-- A database that already holds traffic keeps accepting it: every account seen in the
-- minute aggregates becomes an account (any origin, no keys yet), at the lowest version,
-- so any change made with the CLI wins. A fresh database gets none, and `vidpulse up`
-- then creates the development account.
INSERT INTO accounts (account, name, origins, active, created_at, version)
SELECT DISTINCT account, '', [], true, now64(3), 0 FROM minute_metrics
