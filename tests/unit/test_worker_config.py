"""The worker's Faust app is configured from its settings (what aiokafka's consumer is built with)."""

from pathlib import Path

from prometheus_client import CollectorRegistry

from aggregations.metrics import WorkerMetrics
from aggregations.worker import Worker
from ingest.settings import Settings


def test_the_fetch_size_per_partition_reaches_faust(tmp_path: Path) -> None:
    # Faust's aiokafka driver builds its consumer with max_partition_fetch_bytes=conf.consumer_max_fetch_size
    default = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry()))
    assert default.app.conf.consumer_max_fetch_size == 8 << 20  # not Faust's 1 MiB (bench/README.md)
    chosen = Worker(Settings(data_dir=tmp_path, consumer_fetch_bytes=3 << 20), "127.0.0.1:1", None,
                    WorkerMetrics(CollectorRegistry()))
    assert chosen.app.conf.consumer_max_fetch_size == 3 << 20
