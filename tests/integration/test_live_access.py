"""Who may watch what live: the realtime endpoint and both push transports under the query API's keys, scopes
and refusals, and streams closed when their key is revoked. The API runs in this test process on the real
ClickHouse engine (its keys and its closed-minute figures); its live window is fed by hand here (the Kafka
path is tested through the real pipeline in test_live.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import orjson
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from aggregations.accounts import active_keys, create_account, create_key, hash_key
from aggregations.clickhouse import ClickHouse, connect
from aggregations.live import LiveWindow
from aggregations.schema import migrate
from ingest.directory import Directory
from ingest.models import EnrichedBatch, EnrichedEvent
from queries.api import QueryContext, QueryMetrics, bad_request
from queries.auth import Guard
from queries.live import LiveHub, LiveMetrics
from queries.live_api import live_router
from tests.conftest import require_marker

pytestmark = [pytest.mark.clickhouse]
PAGE = "https://page.example"
LIVE = "/v1/live/accounts/1234"
REALTIME = "/v1/realtime/accounts/1234"


class LiveApi(SimpleNamespace):
    client: TestClient
    keys: Directory
    secret: str
    other: str
    public: str
    window: LiveWindow


@pytest.fixture(scope="module")
def _database(_chdb_url: str) -> Iterator[ClickHouse]:
    """One migrated database for the module (migrating takes seconds); tests that revoke use keys of their own."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    migrate(_chdb_url, database)
    db = connect(_chdb_url, database)
    for account in ("1234", "9999"):
        create_account(db, account)
    yield db
    db.command(f"DROP DATABASE IF EXISTS {database}")
    db.close()


@pytest.fixture
def clickhouse(request: pytest.FixtureRequest, _database: ClickHouse) -> ClickHouse:
    require_marker(request, "clickhouse")
    return _database


@pytest.fixture
def api(clickhouse: ClickHouse) -> Iterator[LiveApi]:
    secret = create_key(clickhouse, "1234", "secret")[1]
    other = create_key(clickhouse, "9999", "secret")[1]
    public = create_key(clickhouse, "1234", "public", videos=("5555",), metrics=("ccu",), origins=(PAGE,))[1]
    keys = Directory.fixed("keys", active_keys(clickhouse))
    window = LiveWindow(60_000)
    now = int(time.time() * 1000)
    for session, video in ((1, "5555"), (2, "5555"), (3, "7777")):
        window.add(EnrichedBatch(
            account="1234", player="web", session=f"s{session}", session_key=session, fingerprint=session, video=video,
            live=True, tz="UTC", user="", domain="", duration_s=None, country="DE", continent="EU", subdivision="",
            device_type="desktop", os="Linux", browser="Firefox", is_bot=False, received_at_ms=now,
            events=[EnrichedEvent(id="1", type="view", ts=now, event_time_ms=now)]), now)
    hub = LiveHub(clickhouse, SimpleNamespace(window=window, caught_up=True), LiveMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                  tick_s=0.2)
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, bad_request)
    app.include_router(live_router(QueryContext(clickhouse, QueryMetrics(CollectorRegistry()),
                                                Guard(keys, "100000/second")), hub))
    with TestClient(app) as client:
        yield LiveApi(client=client, keys=keys, secret=secret, other=other, public=public, window=window)


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def test_realtime_answers_every_figure_of_the_spec_for_a_secret_key(api):
    answer = api.client.get(REALTIME, headers=bearer(api.secret)).json()
    assert answer["current"] == {"viewers": 3, "plays_per_minute": 3, "watch_seconds_per_minute": 0.0}
    assert answer["trend"]["trend"] == "increasing" and answer["trend"]["viewers_change_pct"] is None
    assert answer["trend"]["peak_viewers"] == 3  # no closed minute in the database yet: the viewers now
    assert set(answer["quality"]) == {"error_rate", "rebuffer_ratio", "exit_before_start_rate", "ttff_p50_ms",
                                      "ttff_p95_ms"}
    assert answer["by_video"] == [{"video": "5555", "viewers": 2, "plays_per_minute": 2},
                                  {"video": "7777", "viewers": 1, "plays_per_minute": 1}]
    only = api.client.get(REALTIME, params={"where": "video==7777", "fields": "viewers,by_country"},
                          headers=bearer(api.secret)).json()
    assert only == {"account": "1234", "timestamp": only["timestamp"], "current": {"viewers": 1},
                    "by_country": [{"country": "DE", "viewers": 1, "plays_per_minute": 1}]}


@pytest.mark.parametrize(("params", "status", "says"), [
    ({"fields": "viewers,watchers"}, 400, "unknown field(s): watchers"),
    ({"where": "video=5555"}, 400, "malformed where clause"),
    ({"where": "planet==mars"}, 400, "unknown dimension in where"),
])
def test_bad_questions_are_400s_that_say_what_to_change(api, params, status, says):
    response = api.client.get(REALTIME, params=params, headers=bearer(api.secret))
    assert response.status_code == status and says in response.json()["error"]


def test_keys_open_only_their_account_and_a_public_key_only_its_scope(api):
    assert api.client.get(REALTIME).status_code == 401
    assert api.client.get(REALTIME, headers=bearer("vp_sk_nothing_here")).status_code == 401
    assert api.client.get(REALTIME, headers=bearer(api.other)).status_code == 403
    page = {"Origin": PAGE}
    scoped = {"where": "video==5555", "fields": "viewers"}
    allowed = api.client.get(REALTIME, params=scoped, headers=bearer(api.public, **page))
    assert allowed.status_code == 200 and allowed.json()["current"] == {"viewers": 2}
    assert allowed.headers["access-control-allow-origin"] == PAGE
    for params, headers in (({"where": "video==7777", "fields": "viewers"}, page),     # another video
                            ({"fields": "viewers"}, page),                               # the whole account
                            ({"where": "video==5555", "fields": "plays_per_minute"}, page),  # another metric
                            (scoped, {"Origin": "https://elsewhere.example"})):         # another page
        assert api.client.get(REALTIME, params=params, headers=bearer(api.public, **headers)).status_code == 403


def test_a_websocket_takes_its_key_from_the_query_a_subprotocol_or_its_first_message(api):
    with api.client.websocket_connect(f"{LIVE}?fields=viewers&key={api.secret}") as socket:
        assert orjson.loads(socket.receive_text())["current"] == {"viewers": 3}
    with api.client.websocket_connect(f"{LIVE}?fields=viewers", subprotocols=["vidpulse", api.secret]) as socket:
        assert socket.accepted_subprotocol == "vidpulse"
        assert orjson.loads(socket.receive_text())["current"] == {"viewers": 3}
    with api.client.websocket_connect(f"{LIVE}?fields=viewers&where=video==5555") as socket:
        socket.send_text(orjson.dumps({"key": api.secret}).decode())
        assert orjson.loads(socket.receive_text())["current"] == {"viewers": 2}


@pytest.mark.parametrize(("query", "key", "origin", "code"), [
    ("fields=viewers", "vp_sk_unknown", None, 4401),
    ("fields=viewers", "other", None, 4403),
    ("fields=viewers", "public", PAGE, 4403),                          # a public key must filter to its videos
    ("fields=plays_per_minute&where=video==5555", "public", PAGE, 4403),
    ("fields=viewers&where=video==5555", "public", "https://elsewhere.example", 4403),
    ("fields=nothing", "secret", None, 4400),
])
def test_websocket_refusals_say_why_and_close_with_the_status(api, query, key, origin, code):
    key = getattr(api, key, key)
    headers = {"origin": origin} if origin else {}
    with api.client.websocket_connect(f"{LIVE}?{query}&key={key}", headers=headers) as socket:
        refusal = orjson.loads(socket.receive_text())
        assert refusal["status"] == code - 4000 and refusal["error"]
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_text()
    assert closed.value.code == code


def test_a_public_key_subscribes_from_its_page_to_its_videos(api):
    with api.client.websocket_connect(f"{LIVE}?fields=viewers&where=video==5555", headers={"origin": PAGE},
                                      subprotocols=["vidpulse", api.public]) as socket:
        assert orjson.loads(socket.receive_text())["current"] == {"viewers": 2}


def test_a_revoked_keys_websocket_and_event_stream_are_closed(api):
    entries = api.keys._entries
    with api.client.websocket_connect(f"{LIVE}?fields=viewers&key={api.secret}") as socket:
        assert orjson.loads(socket.receive_text())["current"] == {"viewers": 3}
        entries.pop(hash_key(api.secret))
        refusal = orjson.loads(socket.receive_text())
        assert refusal == {"error": "this key was revoked", "status": 401}
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_text()
        assert closed.value.code == 4401
    assert api.client.get(REALTIME, headers=bearer(api.secret)).status_code == 401


def test_server_sent_events_carry_snapshots_with_ids_and_end_when_the_key_is_revoked(api):
    entries = api.keys._entries
    stored = entries[hash_key(api.secret)]
    with api.client.stream("GET", f"{LIVE}?fields=viewers&key={api.secret}",
                           headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        assert next(lines) == ""
        assert next(lines) == "id: 1" and next(lines) == "event: snapshot"
        assert orjson.loads(next(lines).removeprefix("data: "))["current"] == {"viewers": 3}
        entries.pop(hash_key(api.secret))
        rest = "\n".join(lines)
    assert 'event: error\ndata: {"error":"this key was revoked","status":401}' in rest
    entries[hash_key(api.secret)] = stored  # the key opens again: a plain GET is refused for its Accept only
    plain = api.client.get(f"{LIVE}?fields=viewers", headers=bearer(api.secret))
    assert plain.status_code == 406 and "text/event-stream" in plain.json()["error"]
