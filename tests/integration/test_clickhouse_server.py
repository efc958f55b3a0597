"""deploy/clickhouse/clickhouse.sh: a real ClickHouse server that vidpulse's own http:// path migrates,
writes and reads, that keeps its data across a restart, and that refuses a wrong password."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregations.accounts import create_account, find_account
from aggregations.clickhouse import ClickHouseError, connect
from aggregations.metrics import WorkerMetrics
from aggregations.rows import RAW_COLUMNS, BatchRange, SinkRows
from aggregations.schema import load_migrations, migrate
from aggregations.writer import ClickHouseWriter
from tests.clickhouse_server import ClickHouseServer
from tests.unit.test_native_insert import rows as native_rows
from tests.vidpulse_process import VidpulseProcess

pytestmark = pytest.mark.clickhouse
DATABASE = "vidpulse_server_test"
QUESTION = {"dimensions": "account", "metrics": "video_view"}


@pytest.fixture
def server(tmp_path):
    server = ClickHouseServer(tmp_path / "clickhouse")
    yield server
    server.stop()


def test_vidpulse_migrates_writes_and_reads_through_http_and_the_data_outlives_a_restart(server):
    assert server.start() == server.base_url
    assert server.running()
    assert httpx.get(f"{server.base_url}/ping").text == "Ok.\n"

    applied = migrate(server.url(), DATABASE)
    assert applied == [m.version for m in load_migrations()]
    db = connect(server.url(), DATABASE)
    create_account(db, "acme", name="Acme", origins=("https://acme.example",))
    assert db.query("SELECT version()")[0][0].startswith("26.9.")
    db.close()

    server.stop()
    assert not server.running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/ping")
    pid_file = server.folder / "server.pid"
    assert not pid_file.exists()

    server.start()
    assert migrate(server.url(), DATABASE) == []  # every migration is still recorded
    db = connect(server.url(), DATABASE)
    account = find_account(db, "acme")
    db.close()
    assert account is not None and account.name == "Acme" and account.origins == ("https://acme.example",)


def test_a_wrong_password_and_the_engines_own_user_are_refused(server):
    server.start()
    migrate(server.url(), DATABASE)
    with pytest.raises(ClickHouseError) as wrong:
        connect(server.url(password="not-the-password"), DATABASE)
    assert wrong.value.code == 516  # AUTHENTICATION_FAILED
    # chdb's engine logs itself in as a passwordless `default`; it must not reach vidpulse's data.
    with pytest.raises(ClickHouseError) as engine_user:
        connect(server.url(user="default", password=""), None).query(f"SELECT count() FROM {DATABASE}.accounts")
    assert engine_user.value.code == 497  # ACCESS_DENIED


def test_start_refuses_without_a_password_and_on_a_taken_port(tmp_path):
    server = ClickHouseServer(tmp_path / "clickhouse")
    server.env["VIDPULSE_CLICKHOUSE_PASSWORD"] = ""
    refused = server.run("start")
    assert refused.returncode == 1 and "set VIDPULSE_CLICKHOUSE_PASSWORD" in refused.stderr

    server = ClickHouseServer(tmp_path / "clickhouse")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.http_port))
        taken.listen()
        refused = server.run("start")
    assert refused.returncode == 1 and "already in use" in refused.stderr
    assert not server.running()


@pytest.mark.kafka
def test_the_api_answers_503_without_internals_while_the_server_is_down_and_recovers(server, kafka, tmp_path, run_id):
    """The caller learns what to do (retry later); the database's address and the client library's exception
    text go to the log only."""
    server.start()
    api = VidpulseProcess(kafka, tmp_path / "api", run_id, command="api", accounts=("acme",),
                          clickhouse_url=server.url())
    (tmp_path / "api").mkdir()
    api.start()
    path = f"{api.url}/v1/events/accounts/acme"
    try:
        assert httpx.get(path, params=QUESTION, auth=api.auth, timeout=30).status_code == 200
        server.stop()
        down = httpx.get(path, params=QUESTION, auth=api.auth, timeout=60)
        assert down.status_code == 503
        assert down.headers["retry-after"] == "5"
        assert down.json() == {"error": "the analytics database did not answer; retry in a few seconds"}
        for inside in ("127.0.0.1", str(server.http_port), "HTTPConnectionPool", "Connection", "urllib3"):
            assert inside not in down.text
        assert str(server.http_port) in api.log_tail(20_000)  # the operator still sees where it failed

        server.start()
        assert httpx.get(path, params=QUESTION, auth=api.auth, timeout=30).status_code == 200
    finally:
        api.stop()


def test_a_raw_block_goes_compressed_to_both_tables_over_http_once_per_token(server):
    """The writer's Native block, serialized and compressed once (lz4, as clickhouse-connect's own insert
    would send it), reaches events_raw and the views behind events_stream; the same batch again counts once."""
    server.start()
    migrate(server.url(), DATABASE)
    db = connect(server.url(), DATABASE)
    block = db.encode("events_raw", RAW_COLUMNS, list(zip(*native_rows(), strict=True)))
    assert block.compression == "lz4"
    writer = ClickHouseWriter(db, WorkerMetrics(CollectorRegistry()))
    for _ in range(2):
        asyncio.run(writer.write(SinkRows(raw=native_rows()), BatchRange("g", "t", 0, 101, 104)))
    assert db.query("SELECT count(), countDistinct(toUnixTimestamp64Milli(event_time)) FROM events_raw") == [(20, 5)]
    assert db.query("SELECT sum(video_view) FROM minute_metrics") == [(4,)]
    db.close()


def test_the_session_history_of_a_batch_of_twenty_thousand_new_sessions_is_asked_in_parts(server):
    """A batch of one-event beacons brings up to flush_max_events (20,000) new sessions at once. Asked in one
    query, their keys made a parameter the server refused (longer than its http_max_field_value_size), and the
    worker retried it forever: the partition stalled. The history comes back whole, from several queries."""
    server.start()
    migrate(server.url(), DATABASE)
    db = connect(server.url(), DATABASE)
    writer = ClickHouseWriter(db, WorkerMetrics(CollectorRegistry()))
    asyncio.run(writer.write(SinkRows(raw=native_rows()), BatchRange("g", "t", 0, 101, 104)))
    written = {(row[0], row[2]) for row in native_rows()}  # (account, session_key) of the four sessions
    keys = sorted(written) + [("acct1", 10**19 + n) for n in range(20_000)]  # 20-digit keys, none written
    history = asyncio.run(writer.session_history(7, 0, keys))
    db.close()
    assert set(history) == {key for _, key in written}
    assert all(len(events) == 5 for events in history.values())
