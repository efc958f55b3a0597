"""The front of the pipeline: the beacon contract, enrichment, the tracker and its producer."""
