"""The SDK's live viewers badge in headless Chromium against a real ``vidpulse up``: a public key made for the
page's origin before the process starts, beacons posted over HTTP, and the badge (the custom element and the
liveViewers() helper) showing the count within 2 s of the beacons' 202; then the server restarts on the same
port and the badge, a plain WebSocket and an EventSource get the count again by themselves. Refusals that
cannot heal (a wrong key, a video outside the key) clear the badge, warn once and are not retried."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, HERE, MediaServer
from tests.conftest import require_marker
from tests.integration.beacons import envelope, post
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.browser]
ACCOUNT, VIDEO = "badge", "live-5555"
FRESHNESS_MS = 2000  # live-api.md: from a beacon's 202 to a subscriber holding a message that counts it
SCREENSHOT = Path("/tmp/vidpulse-live-badge.png")
latencies: dict[str, float] = {}  # reported at the end of the module (pytest -s, or in a failure's output)


@pytest.fixture(scope="module")
def pages(_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """badge.html on a local HTTP server: the page's origin, other than the API's."""
    folder = tmp_path_factory.mktemp("badge-pages")
    (folder / "badge.html").write_bytes((HERE / "badge.html").read_bytes())
    server = MediaServer(folder)
    yield server
    server.close()


@pytest.fixture(scope="module")
def live(_kafka_bootstrap: str, pages: MediaServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VidpulseProcess, str]]:
    """A `vidpulse up` of this module's own, whose database got a public key for the pages' origin (video
    VIDEO, metric ccu) from the CLI before it started (chdb: one process per folder)."""
    process = VidpulseProcess(_kafka_bootstrap, tmp_path_factory.mktemp("badge"), f"b{time.time_ns() % 10**12}",
                              accounts=(ACCOUNT,), session_close_grace_s="5", flush_interval_s="0.5")
    process.provision((ACCOUNT,))
    created = subprocess.run([sys.executable, "-m", "vidpulse.cli", "keys", "create", ACCOUNT, "--public",
                              "--video", VIDEO, "--metric", "ccu", "--origin", pages.url, "--json"],
                             env=process.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    key = orjson.loads(created.stdout)["key"]
    assert key.startswith("vp_pk_")
    process.start()
    yield process, key
    process.stop()
    print("\nlive badge latencies, 202 → text shown (ms):", latencies)


class BadgePage:
    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.sockets: list[str] = []  # URLs of every WebSocket the page opened
        self.sse_statuses: list[int] = []  # HTTP statuses of the EventSource's requests
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self.warnings.append(message.text) if "[vidpulse]" in message.text else None)
        page.on("websocket", lambda socket: self.sockets.append(socket.url))
        page.on("response", lambda response: self.sse_statuses.append(response.status)
                if "/v1/live/" in response.url and "key=" in response.url else None)

    def log(self, name: str) -> list[dict[str, Any]]:
        return self.page.evaluate("(name) => window.log[name]", name)

    def text(self, selector: str) -> str:
        return self.page.evaluate("(selector) => document.querySelector(selector).textContent", selector)

    def state(self, selector: str) -> str | None:
        return self.page.evaluate("(selector) => document.querySelector(selector).getAttribute('data-state')", selector)

    def received_at(self, name: str, viewers: int, since_ms: float, timeout_s: float = 10) -> float:
        """Date.now() in the page when the plain client ``name`` (ws, sse) first got ``viewers`` at or after ``since_ms``."""
        self.page.wait_for_function(
            "([name, viewers, since]) => window.log[name].some((e) => e.at >= since && e.viewers === viewers)",
            arg=[name, viewers, since_ms], polling=20, timeout=timeout_s * 1000)
        return next(entry["at"] for entry in self.log(name) if entry["at"] >= since_ms and entry["viewers"] == viewers)

    def shown_at(self, name: str, text: str, since_ms: float, timeout_s: float = 10) -> float:
        """Date.now() in the page when the badge ``name`` first showed ``text`` at or after ``since_ms``."""
        self.page.wait_for_function(
            "([name, text, since]) => window.log[name].some((e) => e.at >= since && e.text === text)",
            arg=[name, text, since_ms], polling=20, timeout=timeout_s * 1000)
        return next(entry["at"] for entry in self.log(name) if entry["at"] >= since_ms and entry["text"] == text)


@pytest.fixture
def badge_page(request: pytest.FixtureRequest, live, pages: MediaServer, _playwright,
               _user_agent: str) -> Iterator[BadgePage]:
    require_marker(request, "browser")
    process, key = live
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        context = browser.new_context(user_agent=_user_agent, viewport={"width": 720, "height": 200})
        wrapper = BadgePage(context.new_page())
        wrapper.page.goto(f"{pages.url}/badge.html?" + urlencode(
            {"tracker": process.url, "account": ACCOUNT, "video": VIDEO, "key": key}))
        assert wrapper.page.evaluate("() => window.ready") is True
        yield wrapper
        assert wrapper.errors == [], f"errors thrown into the page: {wrapper.errors}"
    finally:
        browser.close()


def now_ms() -> int:
    return int(time.time() * 1000)


class Viewers:
    """Players watching VIDEO, as beacons over HTTP: ``start`` sends a view, ``leave`` a stop, and meanwhile a
    heartbeat every 5 s keeps each session active (the protocol's timeout is 60 s), as the SDK's would. A
    heartbeat that fails while the server is down is simply not counted (the next one goes on)."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.watching: dict[str, int] = {}  # session → its next event id
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.beats, self.missed = 0, 0
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _send(self, session: str, kind: str, **fields: Any) -> float:
        """Posts one event of ``session`` (ts = now); returns the wall-clock time of its 202, in ms."""
        with self.lock:
            if kind == "heartbeat" and session not in self.watching:
                return 0.0  # it left meanwhile
            event_id = self.watching.get(session, 1)
            self.watching[session] = event_id + 1
            post(self.client, envelope(session, VIDEO, [{"id": str(event_id), "type": kind, "ts": now_ms(), **fields}],
                                       account=ACCOUNT))
            return time.time() * 1000

    def start(self, session: str) -> float:
        return self._send(session, "view")

    def leave(self, session: str) -> float:
        accepted = self._send(session, "stop", watched_ms=1000)
        with self.lock:
            del self.watching[session]
        return accepted

    def _beat(self) -> None:
        while not self.done.wait(5):
            for session in list(self.watching):
                try:
                    self._send(session, "heartbeat", watched_ms=5000)
                    self.beats += 1
                except (httpx.HTTPError, AssertionError, KeyError):
                    self.missed += 1

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.client.close()


def test_the_badge_follows_the_viewers_and_reconnects_after_a_restart(live, badge_page):
    process, key = live
    page = badge_page
    started = time.monotonic()
    page.shown_at("element", "0 watching", 0)  # nobody watches yet; the server sends the latest message at once
    page.shown_at("helper", "0 viewers now", 0)
    assert page.state("#element") == page.state("#helper") == "live"
    page.page.evaluate("() => openPlain()")
    page.page.wait_for_function("() => log.ws.length > 0 && log.sse.length > 0", timeout=10_000)
    assert page.log("ws")[-1]["viewers"] == page.log("sse")[-1]["viewers"] == 0

    viewers = Viewers(process.url)
    try:
        sent = now_ms()
        viewers.start("badge-session-a")
        accepted = viewers.start("badge-session-b")
        latencies["0 → 2 (two views)"] = page.shown_at("element", "2 watching", sent) - accepted
        latencies["0 → 2, helper"] = page.shown_at("helper", "2 viewers now", sent) - accepted

        sent = now_ms()
        accepted = viewers.leave("badge-session-b")
        latencies["2 → 1 (a stop)"] = page.shown_at("element", "1 watching", sent) - accepted
        latencies["2 → 1, helper"] = page.shown_at("helper", "1 viewer now", sent) - accepted
        latencies["2 → 1, plain WebSocket"] = page.received_at("ws", 1, sent) - accepted
        latencies["2 → 1, EventSource"] = page.received_at("sse", 1, sent) - accepted
        assert max(latencies.values()) <= FRESHNESS_MS, latencies
        page.page.screenshot(path=str(SCREENSHOT))

        # The key never appears in a WebSocket URL (the badges send it as a subprotocol, the plain socket in
        # its first message); only the EventSource, which cannot do otherwise, has it in its query.
        assert len(page.sockets) == 3 and not any(key in url for url in page.sockets), page.sockets
        assert all(f"/v1/live/accounts/{ACCOUNT}?where=video%3D%3D{VIDEO}&fields=viewers" in url for url in page.sockets)

        # Restart on the same port. A keeps heartbeating (when the tracker is up); the new process re-reads
        # the last minutes from Kafka, so it counts A again.
        port, down = process.port, now_ms()
        process.stop()
        stopped = now_ms()  # from here on, a message can only come from the new process
        assert page.state("#element") in ("retrying", "connecting"), page.log("element")[-3:]
        assert page.text("#element") == "1 watching"  # the last value stays while the server is away
        process.start()
        up = now_ms()
        assert process.port == port

        # Everybody gets a message from the new process by themselves, with A counted.
        page.page.wait_for_function(
            "(t) => log.element.some((e) => e.at >= t && e.state === 'live') && log.helper.some((e) => e.at >= t "
            "&& e.state === 'live') && log.ws.some((e) => e.at >= t && e.viewers === 1) && log.sse.some((e) => "
            "e.at >= t && e.viewers === 1)", arg=stopped, polling=50, timeout=60_000)  # back-off: up to 30 s × 1.25
        back_s = {name: round((min(entry["at"] for entry in page.log(name) if entry["at"] >= stopped) - up) / 1000, 1)
                  for name in ("element", "helper", "ws", "sse")}
        assert page.text("#element") == "1 watching" and page.text("#helper") == "1 viewer now"
        assert page.state("#element") == page.state("#helper") == "live"
        assert [entry for entry in page.log("element") if entry["at"] >= down and entry["text"] != "1 watching"] == []
        assert any(close["at"] >= down for close in page.log("wsCloses"))
        sse_closed = [error for error in page.log("sseErrors") if error["at"] >= down and error["readyState"] == 2]
        if sse_closed:  # the browser gave up on an HTTP error (README: a limit of EventSource), never otherwise
            assert any(status >= 400 for status in page.sse_statuses), (sse_closed, page.sse_statuses)

        # And the reconnected streams are live: a third viewer shows within 2 s.
        sent = now_ms()
        accepted = viewers.start("badge-session-c")
        latencies["1 → 2 after the restart"] = page.shown_at("element", "2 watching", sent) - accepted
        latencies["1 → 2 after the restart, helper"] = page.shown_at("helper", "2 viewers now", sent) - accepted
        latencies["1 → 2 after the restart, plain WebSocket"] = page.received_at("ws", 2, sent) - accepted
        latencies["1 → 2 after the restart, EventSource"] = page.received_at("sse", 2, sent) - accepted
        page.page.screenshot(path=str(SCREENSHOT.with_name("vidpulse-live-badge-after-restart.png")))
        # A heartbeats every 5 s; on a fast run both ticks so far can fall while the server was down (missed,
        # not counted): give it one more tick, so the check below is about heartbeats, not about timing
        deadline = time.monotonic() + 12
        while viewers.beats == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        viewers.close()
    assert max(latencies.values()) <= FRESHNESS_MS, latencies
    assert viewers.beats > 0 and page.warnings == [], page.warnings
    print(f"\nserver down {(up - down) / 1000:.1f} s (stop {(stopped - down) / 1000:.1f} s); first message after the "
          f"start, s: {back_s}; EventSource gave up: {bool(sse_closed)}; test {time.monotonic() - started:.1f} s")


def test_refusals_that_cannot_heal_clear_the_badge_warn_and_are_not_retried(live, badge_page):
    process, key = live
    page = badge_page
    # both badges of the page live first: counting the sockets while the helper's is still on its way to this
    # side (a slow run) took its open for a retry of the refused ones
    page.page.wait_for_function("() => ['#element', '#helper'].every((s) => "
                                "document.querySelector(s).getAttribute('data-state') === 'live')", timeout=10_000)
    deadline = time.monotonic() + 5
    while len(page.sockets) < 2 and time.monotonic() < deadline:
        page.page.wait_for_timeout(50)
    opened = len(page.sockets)
    assert opened == 2, page.sockets
    page.page.evaluate("""([key, account]) => {
        for (const [id, badgeKey, video] of [["wrong-key", "vp_pk_000000000000_nosuchkey", "live-5555"],
                                             ["other-video", key, "not-its-video"]]) {
            const element = document.createElement("vidpulse-viewers");
            element.id = id;
            element.setAttribute("account", account);
            element.setAttribute("video", video);
            element.setAttribute("key", badgeKey);
            document.body.appendChild(element);
        }
    }""", [key, ACCOUNT])
    page.page.wait_for_function("() => ['#wrong-key', '#other-video'].every((s) => "
                                "document.querySelector(s).getAttribute('data-state') === 'refused')", timeout=10_000)
    page.page.wait_for_timeout(3000)  # a retry would have come after 1 s (±25 %)
    assert len(page.sockets) == opened + 2, page.sockets
    assert page.text("#wrong-key") == page.text("#other-video") == ""
    assert len(page.warnings) == 2, page.warnings
    assert any("refused (401)" in warning for warning in page.warnings), page.warnings
    assert any("refused (403)" in warning and "filter to its videos" in warning for warning in page.warnings)

    # Invalid arguments never throw and open nothing; a secret key is refused before it is sent anywhere.
    results = page.page.evaluate("""([key, account]) => {
        const span = document.createElement("span");
        return [vidpulse.liveViewers(null, {account, video: "v", key}), vidpulse.liveViewers(span),
                vidpulse.liveViewers(span, {account, video: "a,b", key}),
                vidpulse.liveViewers(span, {account, video: "v", key: "vp_sk_0123_secret"})].map((handle) => {
            handle.stop();
            return [handle.state, handle.viewers];
        });
    }""", [key, ACCOUNT])
    assert results == [["invalid", None]] * 4
    page.page.wait_for_timeout(300)
    assert len(page.sockets) == opened + 2
    assert len(page.warnings) == 6 and "secret key must never be put in a page" in page.warnings[-1], page.warnings

    # stop() closes the badge's socket for good; removing the element stops it too.
    shown = page.text("#helper")
    page.page.evaluate("() => { helper.stop(); window.removed = document.querySelector('#element'); removed.remove(); }")
    page.page.wait_for_timeout(1500)
    assert page.state("#helper") == "stopped" and page.text("#helper") == shown
    assert page.page.evaluate("() => [removed.getAttribute('data-state'), removed.viewers]") == ["stopped", None]
    assert len(page.sockets) == opened + 2


def test_refusals_that_can_heal_are_retried_with_back_off(live, badge_page):
    """The first two connections of a new badge are answered as a rate-limited and a still-starting server
    would (Playwright stands in for the server); the third goes through to the real one."""
    page = badge_page
    process, key = live
    attempts: list[float] = []
    refusals = iter([(4429, "rate limited: too many requests with this key; retry later"),
                     (4503, "the live view is still reading the last minutes of events from Kafka")])

    def server(socket: Any) -> None:
        attempts.append(time.monotonic())
        assert socket.protocols == ["vidpulse", key]  # the key as a subprotocol, not in the URL
        refusal = next(refusals, None)
        if refusal is None:
            socket.connect_to_server()
            return
        socket.send(orjson.dumps({"error": refusal[1], "status": refusal[0] - 4000}).decode())
        socket.close(code=refusal[0], reason=refusal[1][:100])

    page.page.wait_for_function("() => document.querySelector('#element').getAttribute('data-state') === 'live'",
                                timeout=10_000)
    page.page.route_web_socket(lambda url: "/v1/live/accounts/" in url, server)
    page.page.evaluate("""([key, account, video]) => {
        window.log.healed = [];
        const span = document.createElement("span");
        span.id = "healed";
        document.body.appendChild(span);
        new MutationObserver(() => log.healed.push({at: Date.now(), text: span.textContent,
            state: span.getAttribute("data-state")})).observe(span, {childList: true, attributes: true});
        window.healed = vidpulse.liveViewers(span, {account, video, key});
    }""", [key, ACCOUNT, VIDEO])
    page.page.wait_for_function("() => healed.state === 'live'", timeout=15_000)
    assert len(attempts) == 3, attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert 0.7 <= gaps[0] <= 1.4 and 1.4 <= gaps[1] <= 2.7, gaps  # 1 s, then 2 s, each ±25 %
    states = [entry["state"] for entry in page.log("healed")]
    assert states == ["connecting", "retrying", "connecting", "retrying", "connecting", "live"], states
    text = page.text("#healed")
    assert text.endswith(" watching") and text.split()[0].isdigit(), text
    assert page.warnings == []  # retryable refusals are not worth a warning
