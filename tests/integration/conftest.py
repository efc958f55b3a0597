from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.vidpulse_process import VidpulseProcess


@pytest.fixture(scope="module")
def pipeline(_kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VidpulseProcess]:
    """One ``vidpulse up`` per test module (start-up takes seconds); tests keep apart by account."""
    process = VidpulseProcess(_kafka_bootstrap, tmp_path_factory.mktemp("up"), f"m{time.time_ns() % 10**12}",
                              session_close_grace_s="5", flush_interval_s="0.5")
    process.start()
    yield process
    process.stop()
