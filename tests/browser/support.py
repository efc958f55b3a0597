"""What the browser tests share: generated media, a local media server, the page wrapper and a Kafka reader."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import mimetypes
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer

from ingest.models import EnrichedBatch, decode_batch

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
MISSING_TOOLS = ("the browser tests need Debian's chromium and ffmpeg ({missing} missing): run `make test`, "
                 "which installs them, or `apt-get install -y --no-install-recommends chromium ffmpeg`")


def missing_tools() -> list[str]:
    return [tool for tool, found in (("chromium", Path(CHROMIUM).exists()), ("ffmpeg", shutil.which("ffmpeg")))
            if not found]


def make_clip(path: Path, seconds: int) -> Path:
    """A real WebM/VP9 test pattern, key frame every second (fast seeks), no audio: Debian's chromium plays it."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=160x90:rate=25:duration={seconds}",
                    "-c:v", "libvpx-vp9", "-b:v", "80k", "-g", "25", "-deadline", "realtime", "-cpu-used", "8",
                    "-pix_fmt", "yuv420p", "-cues_to_front", "1", "-an", str(path)], check=True, timeout=120)
    return path


class MediaServer:
    """Serves a folder on 127.0.0.1 with byte ranges (what a media element expects). A file can be held back
    after its first N bytes until ``release`` is called, to make the player stall for real."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.holds: dict[str, tuple[int, threading.Event]] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.split("?", 1)[0].lstrip("/")
                path = server.folder / name
                if not name or "/" in name or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, end, status = 0, len(data) - 1, 200
                asked = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
                if asked and (asked[1] or asked[2]):
                    if asked[1]:
                        start, end = int(asked[1]), min(int(asked[2] or end), end)
                    else:
                        start = max(0, len(data) - int(asked[2]))
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                try:
                    hold = server.holds.get(name)
                    if hold and start < hold[0] <= end:
                        self.wfile.write(data[start:hold[0]])
                        self.wfile.flush()
                        hold[1].wait(60)
                        start = hold[0]
                    self.wfile.write(data[start:end + 1])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, name: str, after_bytes: int) -> threading.Event:
        release = threading.Event()
        self.holds[name] = (after_bytes, release)
        return release

    def close(self) -> None:
        for _, release in self.holds.values():
            release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Player:
    """One page of player.html in a fresh Chromium profile; records every beacon request and its answer."""

    def __init__(self, page: Any, tracker_url: str, media_url: str) -> None:
        self.page, self.tracker_url, self.media_url = page, tracker_url, media_url
        self.page_errors: list[str] = []
        self.warnings: list[str] = []
        self.beacons: list[Any] = []  # Playwright requests to /v1/track, in order
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", lambda message: self.warnings.append(message.text) if "[vidpulse]" in message.text else None)
        page.on("request", lambda request: self.beacons.append(request)
                if request.method == "POST" and request.url.endswith("/v1/track") else None)

    def open(self, build: str = "module") -> Player:
        self.page.goto(f"{self.media_url}/player.html?tracker={self.tracker_url}&build={build}")
        self.page.evaluate("() => window.sdkReady")
        return self

    def attach(self, src: str, video_js: str | None = None, **options: Any) -> int | None:
        """Attaches the SDK, then sets the source and waits for its metadata (or its error: returns the code).
        Options go to attach() as they are (default endpoint: the tracker); ``video_js`` is a JS function for `video`."""
        options = {"endpoint": self.tracker_url, "player": "browser-test", **options}
        return self.page.evaluate("""async ({src, options, videoJs}) => {
            const sdk = await window.sdkReady;
            if (videoJs) options.video = new Function("return " + videoJs)();
            window.handle = sdk.attach(player, options);
            player.src = src;
            await new Promise((resolve) => {
                player.addEventListener("loadedmetadata", resolve, {once: true});
                player.addEventListener("error", resolve, {once: true});
            });
            return player.error ? player.error.code : null;
        }""", {"src": f"{self.media_url}/{src}", "options": options, "videoJs": video_js})

    def play_until(self, seconds: float, timeout_s: float = 30) -> None:
        self.page.evaluate("() => player.play()")
        self.page.wait_for_function(f"() => player.currentTime >= {seconds}", polling=20, timeout=timeout_s * 1000)

    def pause(self) -> None:
        self.page.evaluate("() => player.pause()")

    def wait(self, seconds: float) -> None:
        self.page.wait_for_timeout(seconds * 1000)

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(request.post_data) for request in list(self.beacons)]

    def answers(self) -> list[tuple[int, dict[str, Any]]]:
        """(status, body) of each beacon request that got an answer."""
        found = []
        for request in list(self.beacons):
            response = request.response()
            if response is not None:
                found.append((response.status, response.json() if response.status != 204 else {}))
        return found

    def sent_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [event for body in self.bodies() for event in body["events"] if type_ in (None, event["type"])]

    def wait_for_beacon(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for body in self.bodies():
                if predicate(body):
                    return body
            self.page.wait_for_timeout(100)
        raise AssertionError(f"no beacon matched within {timeout_s} s; sent: {self.bodies()}")


def published(pipeline: Any, account: str, done: Callable[[list[dict[str, Any]]], bool],
              timeout_s: float = 30) -> list[dict[str, Any]]:
    """The enriched batches of ``account`` on the pipeline's events topic, read from the start until ``done`` holds."""
    bootstrap = pipeline.env["VIDPULSE_KAFKA_BOOTSTRAP"]
    topic = pipeline.env["VIDPULSE_TOPIC_PREFIX"] + "events"

    async def consume() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        found: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while not done(found) and time.monotonic() < deadline:
                records = await consumer.getmany(timeout_ms=300)
                found += [whole(batch) for part in records.values() for message in part
                          if (batch := decode_batch(message.value)).account == account]
        finally:
            await consumer.stop()
        return found

    # Playwright's sync API owns this thread's event loop: the consumer runs on its own thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, consume()).result()


def whole(batch: EnrichedBatch) -> dict[str, Any]:
    """A published batch with every field of its events (the message leaves out those at their default)."""
    return {**msgspec.structs.asdict(batch), "events": [msgspec.structs.asdict(event) for event in batch.events]}


def events_of(batches: list[dict[str, Any]], session: str | None = None) -> list[dict[str, Any]]:
    """Events (each with its batch's session and video) in the order the device emitted them."""
    events = [{**event, "session": batch["session"], "video": batch["video"]} for batch in batches
              for event in batch["events"] if session in (None, batch["session"])]
    return sorted(events, key=lambda event: (event["session"], int(event["id"])))


def has_stop(session: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda batches: any(event["type"] == "stop" for event in events_of(batches, session))
