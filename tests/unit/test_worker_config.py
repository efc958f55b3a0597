"""The worker's Faust app is configured from its settings (what aiokafka's consumer is built with)."""

from pathlib import Path
from types import SimpleNamespace

from faust.types import TP
from prometheus_client import CollectorRegistry

from aggregations.metrics import WorkerMetrics
from aggregations.worker import QuietMonitor, Worker
from ingest.settings import Settings


def test_the_fetch_size_per_partition_reaches_faust(tmp_path: Path) -> None:
    # Faust's aiokafka driver builds its consumer with max_partition_fetch_bytes=conf.consumer_max_fetch_size
    default = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry()))
    assert default.app.conf.consumer_max_fetch_size == 8 << 20  # not Faust's 1 MiB (bench/README.md)
    chosen = Worker(Settings(data_dir=tmp_path, consumer_fetch_bytes=3 << 20), "127.0.0.1:1", None,
                    WorkerMetrics(CollectorRegistry()))
    assert chosen.app.conf.consumer_max_fetch_size == 3 << 20


def test_faust_s_monitor_keeps_only_what_faust_reads_of_each_message(tmp_path: Path) -> None:
    # Faust's Monitor timed and counted every message four times (bench/README.md). The worker's keeps, of each
    # message, only when its partition's stream last took an event: Faust's consumer reads that to log an
    # error for a partition whose stream seems idle.
    app = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", None, WorkerMetrics(CollectorRegistry())).app
    list(app.on_init_dependencies())  # what the app's start does first: the monitor joins the sensors
    assert isinstance(app.monitor, QuietMonitor) and app.monitor in set(app.sensors)
    tp, message = TP("events", 2), SimpleNamespace(time_in=None)
    state = app.sensors.on_stream_event_in(tp, 7, SimpleNamespace(task_owner=None), SimpleNamespace())
    app.sensors.on_message_in(tp, 7, message)
    app.sensors.on_stream_event_out(tp, 7, SimpleNamespace(task_owner=None), SimpleNamespace(), state)
    app.sensors.on_message_out(tp, 7, message)
    assert tp in app.monitor.stream_inbound_time
    assert (app.monitor.events_total, app.monitor.messages_received_total, message.time_in) == (0, 0, None)
    assert not app.monitor.events_runtime
