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


def test_faust_s_monitor_is_not_called_for_each_message(tmp_path: Path) -> None:
    # The Monitor timed and counted every message four times (bench/README.md): started with the app, it is no
    # longer among the sensors the consumer and the streams call.
    app = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry())).app
    dependencies = list(app.on_init_dependencies())  # what the app's start does first
    assert dependencies  # Faust's own services are still started
    assert app.monitor not in set(app.sensors)
    assert list(app.sensors) == []
