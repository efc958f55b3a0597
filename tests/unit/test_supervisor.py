"""The split ``vidpulse up``'s rules without processes: restart backoff, when it gives up, its ports, its settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.settings import Settings
from vidpulse.child import Child
from vidpulse.localserver import LocalServer
from vidpulse.supervisor import Supervisor


def supervisor(**settings: object) -> Supervisor:
    return Supervisor(Settings(clickhouse_url="chdb:///tmp/vidpulse-unit/clickhouse", **settings), "127.0.0.1:9092")


def child() -> Child:
    made = Child("worker", [], {}, lambda: True)
    made.tail.append("the last line it wrote")
    return made


def test_backoff_doubles_from_1_s_and_the_fifth_exit_within_a_minute_stops_everything(capsys):
    sup, worker = supervisor(), child()
    delays = []
    for n in range(4):
        now = 1000.0 + n
        worker.started_at = now - 0.5
        assert sup._schedule_restart(worker, 1, now)
        delays.append(worker.restart_at - now)
    assert delays == [1, 2, 4, 8]
    assert not sup._schedule_restart(worker, 1, 1004.0)
    said = capsys.readouterr().err
    assert "worker exited 5 times within 60 s" in said and "the last line it wrote" in said


def test_exits_a_minute_apart_never_stop_it_and_a_long_run_resets_the_backoff():
    sup, worker = supervisor(), child()
    for n in range(8):
        now = 1000.0 + 61 * n
        worker.started_at = now - 5
        assert sup._schedule_restart(worker, 1, now)
    assert worker.backoff_s == 30  # capped
    worker.started_at = 1000.0 + 61 * 8 - 120  # ran two minutes: a fresh failure
    assert sup._schedule_restart(worker, 1, 1000.0 + 61 * 8)
    assert worker.restart_at == 1000.0 + 61 * 8 + 1


def test_the_api_keeps_up_s_port_and_the_tracker_and_worker_take_the_next_two():
    defaults = supervisor(http_port=8080, up_tracker_port=None, up_worker_port=None)
    assert {k: v for k, v in defaults.ports.items() if k in ("api", "tracker", "worker")} == {
        "api": 8080, "tracker": 8081, "worker": 8082}
    ports = supervisor(http_port=9000, up_tracker_port=9100, up_worker_port=9200, up_clickhouse_http_port=9300).ports
    assert (ports["api"], ports["tracker"], ports["worker"], ports["clickhouse"]) == (9000, 9100, 9200, 9300)


def test_an_unknown_form_names_the_variable():
    with pytest.raises(ValidationError, match="VIDPULSE_UP_PROCESSES must be split .* or one"):
        Settings(up_processes="two")


def test_the_chdb_folder_of_the_url():
    assert Settings(clickhouse_url="chdb://./data/clickhouse").chdb_folder == Path("./data/clickhouse")
    assert Settings(clickhouse_url="http://u:p@127.0.0.1:8123").chdb_folder is None


def test_the_password_is_made_once_readable_by_its_owner_only(tmp_path):
    server = LocalServer(tmp_path / "clickhouse")
    first = server.password()
    assert server.password() == first and len(first) >= 32
    assert os.stat(server.state_dir / "password").st_mode & 0o777 == 0o600
    assert server.running_url() is None  # no server answers there
