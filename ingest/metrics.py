"""The tracker's Prometheus metrics, on a registry the process owns (tests pass a fresh one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class TrackerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.beacons = Counter("vidpulse_tracker_beacons_total", "Beacon requests by HTTP status.",
                               ["status"], registry=registry)
        self.events_accepted = Counter("vidpulse_tracker_events_accepted_total",
                                       "Events accepted and acknowledged by Kafka.", registry=registry)
        self.events_rejected = Counter("vidpulse_tracker_events_rejected_total",
                                       "Events rejected, by reason.", ["reason"], registry=registry)
        self.produce_latency = Histogram("vidpulse_tracker_produce_latency_seconds",
                                         "Time from send to Kafka's acknowledgement.", registry=registry,
                                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

        self.spooled = Counter("vidpulse_tracker_spooled_total",
                               "Requests written to the disk spool because Kafka did not acknowledge in time.",
                               registry=registry)
        self._spool_depth = Gauge("vidpulse_tracker_spool_depth", "Requests waiting in the disk spool.",
                                  registry=registry)
        self._spool_bytes = Gauge("vidpulse_tracker_spool_bytes", "Bytes in the disk spool.", registry=registry)
        self._spool_age = Gauge("vidpulse_tracker_spool_oldest_age_seconds", "Age of the oldest spooled request.",
                                registry=registry)
        self.rate_limited = Counter("vidpulse_tracker_rate_limited_total", "Requests refused with 429, by limit.",
                                    ["limit"], registry=registry)

    def watch_spool(self, spool: Any) -> None:
        """Read at scrape time, so the numbers are never stale."""
        self._spool_depth.set_function(spool.depth)
        self._spool_bytes.set_function(lambda: spool.bytes)
        self._spool_age.set_function(spool.oldest_age_s)

    def rejected(self, reason: str, count: int = 1) -> None:
        """Labels by the reason's code only (before the colon) so the label set stays bounded."""
        self.events_rejected.labels(reason.split(":", 1)[0]).inc(count)
