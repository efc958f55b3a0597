-- A partition's next owner reloads the sessions received in the last minutes, whatever their event
-- times (aggregations/writer.py, recent_sessions): a late sender's or a replay's events are old. A
-- minmax index on received_at lets that query skip the granules of older deliveries (rows are
-- inserted in arrival order, so each granule's range is narrow). Parts written before this
-- migration have no index until they merge: they are read, as before.
ALTER TABLE events_raw ADD INDEX IF NOT EXISTS received_at_minmax received_at TYPE minmax GRANULARITY 1;
