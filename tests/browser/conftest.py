"""The player SDK in a real headless Chromium (Debian's package, driven by Playwright) against ``vidpulse up``.

Browser tests carry ``@pytest.mark.browser`` besides ``kafka`` and ``clickhouse`` (they use the pipeline).
A missing chromium or ffmpeg fails them with the command that installs it; it never skips them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, HERE, MISSING_TOOLS, MediaServer, Player, make_clip, missing_tools
from tests.conftest import require_marker
from tests.integration.conftest import pipeline  # noqa: F401 - the same `vidpulse up` per module


@pytest.fixture(scope="session")
def _tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.fail(MISSING_TOOLS.format(missing=" and ".join(missing)), pytrace=False)


@pytest.fixture(scope="session")
def media(_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """player.html and generated clips (40 s and 12 s, VP9 WebM) on a local HTTP server of their own origin."""
    folder = tmp_path_factory.mktemp("media")
    (folder / "player.html").write_bytes((HERE / "player.html").read_bytes())
    make_clip(folder / "clip40.webm", 40)
    make_clip(folder / "clip12.webm", 12)
    (folder / "stall12.webm").write_bytes((folder / "clip12.webm").read_bytes())  # held back by a test
    (folder / "broken.webm").write_bytes(b"this is not a video" * 100)
    server = MediaServer(folder)
    yield server
    server.close()


@pytest.fixture(scope="module")
def _playwright(_tools: None) -> Iterator[object]:
    """Per module, not per session: Playwright's sync API keeps an event loop running on the main thread
    while it is started, and tests elsewhere in the suite call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def _user_agent(_playwright) -> str:
    """Chromium's own User-Agent without "Headless": the tracker rightly counts HeadlessChrome as a bot
    and leaves it out of every metric, while these tests stand for a real viewer's browser."""
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        return browser.new_page().evaluate("() => navigator.userAgent").replace("HeadlessChrome", "Chrome")
    finally:
        browser.close()


@pytest.fixture
def player(request: pytest.FixtureRequest, _playwright, _user_agent: str, media: MediaServer,
           pipeline) -> Iterator[Player]:  # noqa: F811
    """A fresh Chromium profile with player.html open (SDK not attached yet). Fails the test on any page error."""
    require_marker(request, "browser")
    with tempfile.TemporaryDirectory(prefix="vidpulse-chromium-") as profile:
        context = _playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, user_agent=_user_agent)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            wrapper = Player(page, pipeline.url, media.url)
            yield wrapper
            assert wrapper.page_errors == [], f"errors thrown into the page: {wrapper.page_errors}"
        finally:
            context.close()

