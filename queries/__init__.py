"""The end of the pipeline: parsing questions, building SQL over the pre-aggregations, the query API."""
