"""The tracker's Prometheus metrics, on a registry the process owns (tests pass a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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

    def rejected(self, reason: str, count: int = 1) -> None:
        """Labels by the reason's code only (before the colon) so the label set stays bounded."""
        self.events_rejected.labels(reason.split(":", 1)[0]).inc(count)
