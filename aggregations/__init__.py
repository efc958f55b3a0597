"""The middle of the pipeline: the Faust worker, sessionization, and the ClickHouse schema and writer."""
