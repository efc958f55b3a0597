"""The worker's Prometheus metrics, on a registry the process owns."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.messages_consumed = Counter("vidpulse_worker_messages_consumed_total",
                                         "Kafka messages (beacon batches) consumed.", registry=registry)
        self.events_consumed = Counter("vidpulse_worker_events_consumed_total",
                                       "Events consumed, before deduplication.", registry=registry)
        self.events_duplicate = Counter("vidpulse_worker_events_duplicate_total",
                                        "Events dropped as already counted (retried batches).", registry=registry)
        self.rows_written = Counter("vidpulse_worker_rows_written_total", "Rows inserted, by table.",
                                    ["table"], registry=registry)
        self.insert_latency = Histogram("vidpulse_worker_insert_latency_seconds", "ClickHouse insert latency.",
                                        ["table"], registry=registry,
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.insert_failures = Counter("vidpulse_worker_insert_failures_total",
                                       "Failed inserts (retried until they succeed).", ["table"], registry=registry)
        self.batch_size = Histogram("vidpulse_worker_batch_messages", "Messages per flushed partition batch.",
                                    registry=registry, buckets=(1, 10, 100, 1000, 10000, 100000))
        self.open_sessions = Gauge("vidpulse_worker_open_sessions", "Sessions held in the sessionizer's cache.",
                                   registry=registry)
        self.dimension_folds = Counter("vidpulse_worker_dimension_values_folded_total",
                                       "Batches whose value was written as (other): the day's cap was reached.",
                                       ["dimension"], registry=registry)
        self.dimension_cap = Gauge("vidpulse_worker_dimension_cap_per_day",
                                   "Distinct values admitted per account, dimension and UTC day.", registry=registry)
        self.partition_stalls = Counter("vidpulse_worker_partition_stalls_total",
                                        "Assigned partitions found with messages waiting and no progress for 90 s.",
                                        registry=registry)
        self.stalled_partitions = Gauge("vidpulse_worker_stalled_partitions",
                                        "Assigned partitions stalled now (messages waiting, no progress for 90 s).",
                                        registry=registry)
        self.offset_rewinds = Counter("vidpulse_worker_offset_rewinds_total",
                                      "Messages the consumer delivered past a partition's next offset: set aside, "
                                      "and the consumer sent back (see aggregations/sequence.py).", registry=registry)
        self.sessions_evicted = Counter("vidpulse_worker_sessions_evicted_total",
                                        "Open sessions dropped from the cache at its size limit.", registry=registry)

    def watch(self, lag: Callable[[], dict[int, int]], oldest_batch_age_s: Callable[[], float]) -> None:
        """Read at scrape time: per-partition lag has labels that come and go with assignments."""
        self._registry.register(_PartitionGauge("vidpulse_worker_consumer_lag_messages",
                                                "Messages in an assigned partition not yet consumed.", lag))
        Gauge("vidpulse_worker_oldest_pending_batch_age_seconds", "Age of the oldest batch not yet written.",
              registry=self._registry).set_function(oldest_batch_age_s)


class _PartitionGauge(Collector):
    def __init__(self, name: str, documentation: str, read: Callable[[], dict[int, int]]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=["partition"])
        for partition, value in sorted(self._read().items()):
            family.add_metric([str(partition)], value)
        yield family
