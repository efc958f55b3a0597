"""The live figures through the real pipeline: beacons over HTTP into ``vidpulse up`` (real Kafka broker, real
ClickHouse engine), read back from /v1/realtime and the push channel and compared with an independent count of
what was sent; a second API process reading the same log gives the same numbers; 2,000 streams opened and
dropped leave nothing behind."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psutil
import pytest
import websockets

from tests.integration.beacons import DESKTOP, envelope, eventually, get, post
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
S = 1000
TIMEOUT_MS = 60 * S
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")
ACCOUNT = "live"
WINDOW_FIELDS = "viewers,plays_per_minute,watch_seconds_per_minute,viewers_change_pct,trend,by_video,by_country," \
                "by_device_type"


@pytest.fixture(scope="module")
def live_pipeline(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VidpulseProcess]:
    process = VidpulseProcess(_kafka_bootstrap, tmp_path_factory.mktemp("live"), f"l{time.time_ns() % 10**12}",
                              accounts=(ACCOUNT,), flush_interval_s="0.5", rate_limit_key="100000/second")
    process.start()
    yield process
    process.stop()


class Sent:
    """What the test sent, per session: its events (time, type, watched ms) and its video, country and device.
    The count below is the protocol's rule written again from its text, sharing no code with vidpulse."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}

    def post(self, client: httpx.Client, session: str, video: str, ip: str, country: str, device: str,
             events: list[dict[str, Any]], times: int = 1) -> None:
        entry = self.sessions.setdefault(session, {"video": video, "country": country, "device": device, "events": {}})
        for event in events:
            entry["events"][event["id"]] = (event["ts"], event["type"], event.get("watched_ms", 0))
        for _ in range(times):
            post(client, envelope(session, video, events, account=ACCOUNT),
                 ip=ip, user_agent=IPHONE if device == "mobile" else DESKTOP)

    @staticmethod
    def watching(events: list[tuple[int, str, int]], at_ms: int) -> bool:
        before = [event for event in sorted(events) if event[0] <= at_ms]
        return bool(before) and before[-1][1] not in ("impression", "stop") and at_ms < before[-1][0] + TIMEOUT_MS

    def expected(self, at_ms: int) -> dict[str, Any]:
        viewers = before = plays = watched = 0
        groups: dict[str, dict[str, list[int]]] = {"video": {}, "country": {}, "device_type": {}}
        for entry in self.sessions.values():
            events = list(entry["events"].values())
            now = self.watching(events, at_ms)
            recent = [event for event in events if at_ms - 60 * S < event[0] <= at_ms]
            session_plays = sum(event[1] == "view" for event in recent)
            viewers += now
            before += self.watching(events, at_ms - 300 * S)
            plays += session_plays
            watched += sum(event[2] for event in recent if event[1] in ("heartbeat", "stop"))
            if now or session_plays:
                for name, value in (("video", entry["video"]), ("country", entry["country"]),
                                    ("device_type", entry["device"])):
                    group = groups[name].setdefault(value, [0, 0])
                    group[0] += now
                    group[1] += session_plays
        change = None if not before else round((viewers - before) / before * 100, 1)
        trend = ("increasing" if viewers else "steady") if change is None else \
            "increasing" if change > 5 else "decreasing" if change < -5 else "steady"
        return {"current": {"viewers": viewers, "plays_per_minute": plays, "watch_seconds_per_minute": watched / 1000},
                "trend": {"viewers_change_pct": change, "trend": trend},
                **{f"by_{name}": [{name: value, "viewers": v, "plays_per_minute": p}
                                  for value, (v, p) in sorted(found.items(), key=lambda i: (-i[1][0], -i[1][1], i[0]))]
                   for name, found in groups.items()}}


def epoch_ms(timestamp: str) -> int:
    return int(dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


def window_part(answer: dict[str, Any]) -> dict[str, Any]:
    trend = {name: answer["trend"][name] for name in ("viewers_change_pct", "trend")}
    return {"current": answer["current"], "trend": trend,
            **{name: answer[name] for name in ("by_video", "by_country", "by_device_type")}}


def matches(answer: dict[str, Any], sent: Sent) -> bool:
    """The answer equals the count at its own instant (stamped to the millisecond)."""
    return window_part(answer) == sent.expected(epoch_ms(answer["timestamp"]))


def realtime(process: VidpulseProcess, **params: str) -> dict[str, Any]:
    return get(process, "realtime", ACCOUNT, **params)


def agreed(fetch: Any, sent: Sent, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    answer = fetch()
    while not matches(answer, sent) and time.monotonic() < deadline:
        time.sleep(0.3)
        answer = fetch()
    return answer


def hb(event_id: str, ts: int, watched_ms: int = 30 * S) -> dict[str, Any]:
    return {"id": event_id, "type": "heartbeat", "ts": ts, "watched_ms": watched_ms}


def test_viewers_trend_and_breakdowns_equal_an_independent_count_at_several_instants(live_pipeline):
    sent, base = Sent(), int(time.time() * 1000)
    with httpx.Client(base_url=live_pipeline.url, timeout=30) as client:
        # watching now and five minutes ago: a view, then heartbeats every 30 s
        sent.post(client, "s-steady-001", "A", "8.8.8.8", "US", "desktop",
                  [{"id": "1", "type": "view", "ts": base - 330 * S},
                   *(hb(str(n + 2), base - 300 * S + n * 30 * S) for n in range(11))])
        # watched five minutes ago, stopped since
        sent.post(client, "s-stopped-02", "A", "81.2.69.142", "GB", "desktop",
                  [{"id": "1", "type": "view", "ts": base - 320 * S}, hb("2", base - 290 * S),
                   {"id": "3", "type": "stop", "ts": base - 200 * S, "watched_ms": 4 * S}])
        sent.post(client, "s-stopped-03", "B", "81.2.69.142", "GB", "desktop",
                  [{"id": "1", "type": "view", "ts": base - 310 * S},
                   {"id": "2", "type": "stop", "ts": base - 250 * S, "watched_ms": 9 * S}])
        # silent past the timeout: watching a minute and a half ago, no more
        sent.post(client, "s-silent-004", "B", "8.8.8.8", "US", "mobile",
                  [{"id": "1", "type": "view", "ts": base - 95 * S}, hb("2", base - 75 * S, 20 * S)])
        # started 20 s ago, and retried twice by its client: counted once
        sent.post(client, "s-fresh-0005", "B", "81.2.69.142", "GB", "mobile",
                  [{"id": "1", "type": "view", "ts": base - 20 * S},
                   {"id": "2", "type": "first_frame", "ts": base - 19 * S, "startup_ms": 800}, hb("3", base - 5 * S, 14 * S)],
                  times=3)
        # an impression is no activity
        sent.post(client, "s-impress-06", "C", "8.8.8.8", "US", "desktop",
                  [{"id": "1", "type": "impression", "ts": base - 10 * S}])

        first = agreed(lambda: realtime(live_pipeline), sent)
        assert matches(first, sent), (first, sent.expected(epoch_ms(first["timestamp"])))
        assert first["current"]["viewers"] == 2 and first["trend"]["trend"] == "decreasing"

        # a stream subscribed now follows the next changes
        async def follow() -> dict[str, Any]:
            url = live_pipeline.url.replace("http", "ws") + f"/v1/live/accounts/{ACCOUNT}?fields={WINDOW_FIELDS}"
            async with websockets.connect(url, subprotocols=["vidpulse", live_pipeline.auth.keys[ACCOUNT]]) as socket:
                first_message = orjson.loads(await socket.recv())
                assert first_message["current"]["viewers"] == 2
                now = int(time.time() * 1000)
                await asyncio.to_thread(sent.post, client, "s-steady-001", "A", "8.8.8.8", "US", "desktop",
                                        [{"id": "13", "type": "stop", "ts": now, "watched_ms": 3 * S}])
                await asyncio.to_thread(sent.post, client, "s-newbie-007", "C", "195.154.1.1", "FR", "desktop",
                                        [{"id": "1", "type": "view", "ts": now}])
                await asyncio.to_thread(sent.post, client, "s-newbie-008", "C", "195.154.1.1", "FR", "desktop",
                                        [{"id": "1", "type": "view", "ts": now}, hb("2", now, 1 * S)])
                posted_at = int(time.time() * 1000)
                deadline = time.monotonic() + 20
                message = first_message
                while not (epoch_ms(message["timestamp"]) >= posted_at and matches(message, sent)) \
                        and time.monotonic() < deadline:
                    message = orjson.loads(await asyncio.wait_for(socket.recv(), 15))
                return message

        pushed = asyncio.run(follow())
        assert matches(pushed, sent), (pushed, sent.expected(epoch_ms(pushed["timestamp"])))
        assert pushed["current"]["viewers"] == 3
        assert [group["video"] for group in pushed["by_video"]] == ["C", "B"]
        second = agreed(lambda: realtime(live_pipeline), sent)
        assert matches(second, sent)


def test_the_closed_minute_figures_equal_the_historical_api(live_pipeline):
    answer = realtime(live_pipeline, fields="peak_viewers,peak_at,error_rate,rebuffer_ratio,exit_before_start_rate,"
                                            "ttff_p50_ms,ttff_p95_ms,viewers")

    def historical() -> tuple[Any, ...]:
        now = realtime(live_pipeline, fields="peak_viewers,peak_at,ttff_p50_ms,error_rate,viewers")
        minute = epoch_ms(now["timestamp"]) // 60_000 * 60_000
        points = get(live_pipeline, "timeseries", ACCOUNT, dimensions="account", metrics="ccu", bucket_duration="1m",
                     **{"from": str(minute - 29 * 60_000), "to": str(minute)})["ccu"]["data"][0]["points"]
        peak = max(max(point["value"] for point in points), now["current"]["viewers"])
        quality = get(live_pipeline, "events", ACCOUNT, dimensions="account", metrics="ttff_p50_ms,error_rate",
                      **{"from": str(minute - 4 * 60_000), "to": str(minute)})["data"][0]["totals"]
        return (now["trend"]["peak_viewers"], now["quality"]["ttff_p50_ms"], now["quality"]["error_rate"]), \
            (peak, quality["ttff_p50_ms"], quality["error_rate"])

    deadline, (live, expected) = time.monotonic() + 30, historical()
    while live != expected and time.monotonic() < deadline:  # the closed-minute figures refresh every 5 s
        time.sleep(1)
        live, expected = historical()
    assert live == expected
    assert live[0] >= 2 and live[1] == 800  # the steady sessions overlapped; the one first frame took 800 ms
    assert answer["trend"]["peak_at"].endswith(":00Z")


def test_a_second_api_process_reading_the_same_log_gives_the_same_numbers(live_pipeline, tmp_path):
    other = VidpulseProcess(live_pipeline.env["VIDPULSE_KAFKA_BOOTSTRAP"], tmp_path, "unused", command="api",
                            accounts=(ACCOUNT,))
    other.env["VIDPULSE_TOPIC_PREFIX"] = live_pipeline.env["VIDPULSE_TOPIC_PREFIX"]
    other.start()
    try:
        ready = eventually(lambda: httpx.get(f"{other.url}/v1/realtime/accounts/{ACCOUNT}", auth=other.auth,
                                             timeout=10).status_code, 200, timeout_s=30)
        assert ready == 200  # 503 until it has read the window from Kafka
        answers = []
        for _ in range(20):  # both asked within a few ms; a second boundary between them is asked again
            ours, theirs = realtime(live_pipeline, fields=WINDOW_FIELDS), realtime(other, fields=WINDOW_FIELDS)
            answers.append((ours, theirs))
            if ours["timestamp"] == theirs["timestamp"]:
                break
        ours, theirs = answers[-1]
        assert window_part(ours) == window_part(theirs) and ours["current"]["viewers"] >= 1
    finally:
        other.stop()


def test_two_thousand_streams_opened_and_dropped_leave_nothing_behind(live_pipeline):
    key = live_pipeline.auth.keys[ACCOUNT]
    url = live_pipeline.url.replace("http", "ws") + f"/v1/live/accounts/{ACCOUNT}?fields=viewers"
    process = psutil.Process(live_pipeline.proc.pid)
    rss_before = process.memory_info().rss

    async def churn() -> int:
        received = 0

        async def one(number: int) -> None:
            nonlocal received
            socket = await websockets.connect(f"{url}&where=video=={'ABC'[number % 3]}",
                                              subprotocols=["vidpulse", key], open_timeout=30)
            if number % 2:
                message = await asyncio.wait_for(socket.recv(), 30)
                received += bool(message)
            socket.transport.abort()  # dropped, not closed: no close handshake

        async def server_sent(client: httpx.AsyncClient) -> None:
            nonlocal received
            async with client.stream("GET", f"/v1/live/accounts/{ACCOUNT}", params={"fields": "viewers", "key": key},
                                     headers={"Accept": "text/event-stream"}) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        received += 1
                        return  # leaving the block drops the connection

        for start in range(0, 2000, 200):
            await asyncio.gather(*(one(number) for number in range(start, start + 200)))
        async with httpx.AsyncClient(base_url=live_pipeline.url, timeout=30) as client:
            await asyncio.gather(*(server_sent(client) for _ in range(100)))
        return received

    assert asyncio.run(churn()) == 1000 + 100  # every other WebSocket read a message; every event stream did

    def gauges() -> tuple[float, float]:
        scrape = httpx.get(f"{live_pipeline.url}/metrics", timeout=10).text
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in scrape.splitlines()
                  if line.startswith(("vidpulse_live_subscribers{", "vidpulse_live_channels "))}
        return sum(value for name, value in values.items() if "subscribers" in name), values["vidpulse_live_channels"]

    assert eventually(gauges, (0.0, 0.0), timeout_s=20) == (0.0, 0.0)
    assert process.memory_info().rss - rss_before < 64 * 2**20
    assert realtime(live_pipeline, fields="viewers")["current"]["viewers"] >= 0


def test_a_client_that_never_reads_does_not_hold_up_the_others(live_pipeline):
    """A raw connection completes the handshake and never reads; a normal subscriber keeps getting its messages."""
    import base64
    import os
    import socket as sockets

    host, port = "127.0.0.1", live_pipeline.port
    stuck = sockets.socket()
    stuck.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 1024)
    stuck.connect((host, port))
    stuck.sendall((f"GET /v1/live/accounts/{ACCOUNT}?fields=viewers,watch_seconds_per_minute&key="
                   f"{live_pipeline.auth.keys[ACCOUNT]} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    try:
        async def reader() -> int:
            url = live_pipeline.url.replace("http", "ws") + f"/v1/live/accounts/{ACCOUNT}?fields=viewers,watch_seconds_per_minute"
            count = 0
            async with websockets.connect(url, subprotocols=["vidpulse", live_pipeline.auth.keys[ACCOUNT]]) as socket:
                deadline = time.monotonic() + 12
                while time.monotonic() < deadline:
                    await asyncio.wait_for(socket.recv(), 11)  # keep-alives at least every 10 s
                    count += 1
            return count
        assert asyncio.run(reader()) >= 2
    finally:
        stuck.close()


def test_an_open_event_stream_does_not_hold_up_a_shutdown(live_pipeline):
    """Last in the module: it stops the pipeline. uvicorn drains connections before the app hears of the
    shutdown; an endless event stream must end at once, not hold the drain for its 30 s."""
    import threading

    lines: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{live_pipeline.url}/v1/live/accounts/{ACCOUNT}", timeout=60,
                          params={"fields": "viewers", "key": live_pipeline.auth.keys[ACCOUNT]},
                          headers={"Accept": "text/event-stream"}) as stream:
            for line in stream.iter_lines():
                lines.append(line)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 15
    while not any(line.startswith("data: ") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(line.startswith("data: ") for line in lines)
    started = time.monotonic()
    live_pipeline.stop()
    assert time.monotonic() - started < 10 and live_pipeline.proc.returncode == 0
    listener.join(5)
    assert not listener.is_alive()  # the stream ended (the browser's EventSource reconnects after retry)
