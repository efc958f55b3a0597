"""Nobody reads what isn't theirs: keys of account A against B, public keys outside their scope, injection
payloads in every parameter. Real keys in the real store, on the real ClickHouse engine."""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import quote

import httpx
import msgspec
import pytest

from aggregations.accounts import create_account, create_key, revoke_key, update_account
from tests.integration.inprocess import api_client
from tests.integration.test_clickhouse import BASE, M, load, make_batch

pytestmark = pytest.mark.clickhouse
PAGE = "https://a.example"
WINDOW = {"from": str(BASE - M), "to": str(BASE + 30 * M)}


def of(account: str, key: int, video: str) -> object:
    return msgspec.structs.replace(make_batch(key, video, "US", [("1", "view", BASE + 1000, {}),
                                         ("2", "stop", BASE + 9000, {"watched_ms": 8000})]), account=account)


@pytest.fixture
def tenants(clickhouse):
    """Accounts A and B, each with data and keys; A also has a public key for A1's ccu from its page."""
    for account in ("A", "B"):
        create_account(clickhouse, account)
    load(clickhouse, [of("A", 1, "A1"), of("A", 2, "A2"), of("B", 3, "B-secret-video")])
    keys = {"A": create_key(clickhouse, "A", "secret")[1], "B": create_key(clickhouse, "B", "secret")[1],
            "public": create_key(clickhouse, "A", "public", videos=("A1",), metrics=("ccu", "video_view"),
                                 origins=(PAGE,))[1]}
    return clickhouse, keys


def call(db, path: str, key: str | None = None, origin: str | None = None, method: str = "GET", key_rate: str = "100000/second",
         **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if origin:
        headers["Origin"] = origin

    async def run() -> httpx.Response:
        async with api_client(db, auth=httpx.Auth(), key_rate=key_rate) as client:
            return await client.request(method, path, params=params, headers=headers)
    return asyncio.run(run())


ENDPOINTS = [
    ("/v1/events/accounts/{a}", {"dimensions": "video", "metrics": "video_view"}),
    ("/v1/timeseries/accounts/{a}", {"dimensions": "video", "metrics": "video_view", "bucket_limit": "1"}),
    ("/v1/retention/accounts/{a}/videos/A1", {}),
    ("/v1/events/accounts/{a}/videos/A1/export", {"format": "csv"}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_every_endpoint_needs_a_key_of_its_own_account(tenants, path, params):
    db, keys = tenants
    params = {**params, **WINDOW}
    assert call(db, path.format(a="A"), keys["A"], **params).status_code == 200
    missing = call(db, path.format(a="A"), **params)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in missing.json()["error"]
    assert call(db, path.format(a="A"), "vp_sk_000000000000_made-up", **params).status_code == 401
    other = call(db, path.format(a="A"), keys["B"], **params)
    assert other.status_code == 403 and "does not open account A" in other.json()["error"]
    assert "A1" not in other.text and "B-secret" not in other.text
    assert call(db, path.format(a="nosuch"), keys["A"], **params).status_code == 403


def test_a_revoked_key_and_a_deleted_accounts_key_open_nothing(tenants):
    db, _ = tenants
    stored, key = create_key(db, "A", "secret")
    path, params = ENDPOINTS[0]
    assert call(db, path.format(a="A"), key, **params).status_code == 200
    revoke_key(db, stored.key_id)
    assert call(db, path.format(a="A"), key, **params).status_code == 401
    _, key_b = create_key(db, "B", "secret")
    update_account(db, "B", active=False)
    assert call(db, path.format(a="B"), key_b, **params).status_code == 401


def test_a_public_key_reads_its_videos_and_metrics_from_its_pages_only(tenants):
    db, keys = tenants
    public = keys["public"]
    path = "/v1/events/accounts/A"
    ok = call(db, path, public, PAGE, dimensions="video", metrics="ccu", where="video==A1", **WINDOW)
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"] == [{"dimensions": {"account": "A", "video": "A1"}, "totals": {"ccu": 1}}]
    assert ok.headers["Access-Control-Allow-Origin"] == PAGE
    series = call(db, "/v1/timeseries/accounts/A", public, PAGE, dimensions="video", metrics="ccu",
                  where="video==A1", bucket_limit="1", **WINDOW)
    assert series.status_code == 200 and series.json()["ccu"]["data"][0]["points"][0]["value"] == 1
    refusals = {
        "another metric": call(db, path, public, PAGE, dimensions="video", metrics="video_seconds_viewed",
                               where="video==A1"),
        "no video filter": call(db, path, public, PAGE, dimensions="video", metrics="ccu"),
        "another video": call(db, path, public, PAGE, dimensions="video", metrics="ccu", where="video==A1,A2"),
        "another page": call(db, path, public, "https://evil.example", dimensions="video", metrics="ccu",
                             where="video==A1"),
        "no page": call(db, path, public, dimensions="video", metrics="ccu", where="video==A1"),
        "retention": call(db, "/v1/retention/accounts/A/videos/A1", public, PAGE),
        "export": call(db, "/v1/events/accounts/A/videos/A1/export", public, PAGE),
        "another account": call(db, "/v1/events/accounts/B", public, PAGE, dimensions="video", metrics="ccu",
                                where="video==A1"),
    }
    for why, response in refusals.items():
        assert response.status_code == 403, (why, response.text)
        assert "A2" not in response.text and '"totals"' not in response.text, why


def test_a_secret_keys_answers_are_not_readable_by_a_page_and_preflights_name_the_header(tenants):
    db, keys = tenants
    answer = call(db, "/v1/events/accounts/A", keys["A"], "https://evil.example", dimensions="video", metrics="ccu")
    assert answer.status_code == 200 and "Access-Control-Allow-Origin" not in answer.headers
    refused = call(db, "/v1/events/accounts/A", None, PAGE, dimensions="video", metrics="ccu")
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == PAGE
    preflight = call(db, "/v1/events/accounts/A", None, PAGE, method="OPTIONS")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization"
    assert preflight.headers["Access-Control-Allow-Origin"] == PAGE


def test_per_key_rate_limits_answer_429_and_a_key_may_carry_its_own_rate(tenants):
    db, keys = tenants
    _, generous = create_key(db, "A", "secret", rate_limit="100/minute")
    path, params = ENDPOINTS[0]

    async def burst(key: str) -> list[httpx.Response]:
        async with api_client(db, auth=httpx.Auth(), key_rate="3/minute") as client:
            return [await client.get(path.format(a="A"), params=params, headers={"Authorization": f"Bearer {key}"})
                    for _ in range(5)]

    limited = asyncio.run(burst(keys["A"]))
    assert [r.status_code for r in limited] == [200, 200, 200, 429, 429]
    assert 1 <= int(limited[-1].headers["Retry-After"]) <= 60
    assert [r.status_code for r in asyncio.run(burst(generous))] == [200] * 5


def test_a_wrong_key_and_another_accounts_key_take_the_same_time(tenants):
    """Both are decided from the key's hash in memory, before any database work: no timing tells a prober
    whether a key exists. Medians of interleaved runs, so a busy machine slows both alike."""
    db, keys = tenants
    path, params = ENDPOINTS[0]

    async def timed() -> dict[int, list[float]]:
        durations: dict[int, list[float]] = {401: [], 403: []}
        async with api_client(db, auth=httpx.Auth()) as client:
            for i in range(400):
                key = keys["B"] if i % 2 else "vp_sk_" + "x" * 40
                started = time.perf_counter()
                response = await client.get(path.format(a="A"), params=params,
                                            headers={"Authorization": f"Bearer {key}"})
                durations[response.status_code].append(time.perf_counter() - started)
        return durations

    durations = asyncio.run(timed())
    assert len(durations[401]) == len(durations[403]) == 200
    wrong, other = statistics.median(durations[401]), statistics.median(durations[403])
    assert 0.7 < wrong / other < 1.4, (wrong, other)
    allowed = [call(db, path.format(a="A"), keys["A"], **params) for _ in range(3)]
    assert all(r.status_code == 200 for r in allowed)


INJECTIONS = ["' OR '1'='1", "1; DROP TABLE events_raw; --", "A') UNION ALL SELECT * FROM system.tables --",
              "{account:String}", "\\' OR 1=1 --", "video) OR (1=1", "B-secret-video' OR account='B",
              "\u00b2", "9" * 4301]
STRUCTURED = ["dimensions", "metrics", "from", "to", "bucket_duration", "bucket_limit", "time_step", "tz", "sort",
              "limit", "offset"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_in_every_parameter_are_a_400_or_match_nothing_never_a_500(tenants, payload):
    """Parameters with a syntax (names, times, numbers) refuse a payload with a 400. A ``where`` value or a
    video id is free text by the protocol (any printable characters): there the payload is a bound value
    that matches no data. Either way nothing of B's and nothing else of A's comes back, and no table is hurt."""
    db, keys = tenants
    base = {"dimensions": "video", "metrics": "video_view"}
    for name in STRUCTURED:
        endpoint = "timeseries" if name in ("bucket_duration", "bucket_limit", "time_step", "tz") else "events"
        response = call(db, f"/v1/{endpoint}/accounts/A", keys["A"], **{**base, name: payload})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] and set(response.json()) <= {"error", "valid", "detail"}, name
    answered = [call(db, "/v1/events/accounts/A", keys["A"], where=f"video=={payload}", **base, **WINDOW),
                call(db, "/v1/events/accounts/A", keys["A"], where=f"country=={payload}", **base, **WINDOW)]
    for response in answered:
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json()["data"] == []
    assert call(db, f"/v1/events/accounts/{quote(payload, safe='')}", keys["A"], **base).status_code == 403
    retention = call(db, "/v1/retention/accounts/A/videos/A1", keys["A"], viewer=payload, **WINDOW)
    assert retention.status_code in (200, 400), retention.text
    if retention.status_code == 200:
        assert all(point["viewers"] == 0 for point in retention.json()["points"])
    export = call(db, f"/v1/events/accounts/A/videos/{quote(payload, safe='')}/export", keys["A"], format="csv",
                  **WINDOW)
    assert export.status_code in (200, 400), export.text
    assert "A1" not in export.text.replace(payload, "") and "B-secret" not in export.text.replace(payload, "")
    assert call(db, "/v1/events/accounts/A/videos/A1/export", keys["A"], format=payload).status_code == 400
    assert db.query("SELECT count() FROM events_raw") == [(6,)]
    assert db.query("SELECT count() FROM api_keys") == [(3,)]


def test_the_migration_makes_an_account_of_every_account_that_already_has_traffic(clickhouse):
    """An upgrade must not start refusing the beacons of accounts that existed before accounts did."""
    from aggregations.accounts import active_origins, find_account
    from aggregations.schema import load_migrations

    load(clickhouse, [of("old-tenant", 1, "v")])
    seed = next(m for m in load_migrations() if m.name == "accounts_and_keys").statements[-1]
    assert seed.lstrip().splitlines()[-2].startswith("INSERT INTO accounts")
    clickhouse.command(seed)
    clickhouse.command(seed)  # a migration interrupted and run again
    assert active_origins(clickhouse) == {"old-tenant": ()}
    update_account(clickhouse, "old-tenant", origins=("https://old.example",))
    assert find_account(clickhouse, "old-tenant").origins == ("https://old.example",)


def test_a_public_key_works_from_a_same_origin_page_and_its_rate_is_per_viewer(tenants):
    """A same-origin GET carries no Origin, only the page's Referer; and every viewer of a page shares its
    public key, so one viewer's burst must not throttle the others."""
    from tests.integration.inprocess import api_app

    db, keys = tenants
    app = api_app(db, key_rate="2/minute")
    params = {"dimensions": "video", "metrics": "ccu", "where": "video==A1"}

    async def viewer(ip: str, count: int, headers: dict[str, str]) -> list[int]:
        transport = httpx.ASGITransport(app=app, client=(ip, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/v1/events/accounts/A", params=params, headers={
                "Authorization": f"Bearer {keys['public']}", **headers})).status_code for _ in range(count)]

    same_origin = {"Referer": f"{PAGE}/live/watch?v=1"}
    assert asyncio.run(viewer("198.51.100.1", 3, same_origin)) == [200, 200, 429]
    assert asyncio.run(viewer("198.51.100.2", 2, {"Origin": PAGE})) == [200, 200]
    assert asyncio.run(viewer("198.51.100.3", 1, {"Referer": "https://evil.example/a"})) == [403]
