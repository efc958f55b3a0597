"""Livepeer's own SDK, unmodified, against a real ``vidpulse up`` fed by ``vidpulse simulate``: every number it
reads equals vidpulse's own API for the same question, and what cannot map is refused in Livepeer's error shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.beacons import get
from tests.integration.conftest import SIMULATED
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
ROOT = Path(__file__).resolve().parents[2]
SDK_PYTHON = ROOT / ".cache" / "livepeer-0.3.0" / "bin" / "python"
CLIENT = Path(__file__).resolve().parent / "livepeer_client.py"
ACCOUNT = SIMULATED
QUALITY = "video_view,watch_minutes,ttff_p50_ms,rebuffer_ratio,error_rate,exit_before_start_rate"
NAMES = {"video_view": "viewCount", "watch_minutes": "playtimeMins", "ttff_p50_ms": "ttffMs",
         "rebuffer_ratio": "rebufferRatio", "error_rate": "errorRate", "exit_before_start_rate": "exitsBeforeStart"}


def total(process: VidpulseProcess, metric: str, **params: str) -> Any:
    rows = get(process, "events", ACCOUNT, dimensions="account", metrics=metric, **params)["data"]
    return rows[0]["totals"][metric] if rows else 0


@pytest.fixture(autouse=True)
def _sdk_installed() -> None:
    if not SDK_PYTHON.exists():
        pytest.fail(f"Livepeer's SDK is not installed at {SDK_PYTHON.parent.parent}: run `make install`", pytrace=False)


def read_with_the_sdk(process: VidpulseProcess, video: str) -> dict[str, Any]:
    done = subprocess.run([str(SDK_PYTHON), str(CLIENT), process.url, process.auth.keys[ACCOUNT], video],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def renamed(totals: dict[str, Any], **dimensions: Any) -> dict[str, Any]:
    """A /v1/events row in Livepeer's names (the SDK leaves out fields that are null)."""
    return {**dimensions, **{NAMES[name]: value for name, value in totals.items() if value is not None}}


def test_the_livepeer_sdk_reads_what_vidpulse_answers(simulated):
    process, video = simulated, "video-1"
    found = read_with_the_sdk(process, video)
    # no from/to: the SDK asks for vidpulse's default range (the last 32 days), and so does each check here
    account = get(process, "events", ACCOUNT, dimensions="account", metrics=QUALITY)["data"][0]["totals"]
    assert found["views"] == [renamed(account)] and account["video_view"] > 0

    by_country = get(process, "events", ACCOUNT, dimensions="country,device_type", metrics=QUALITY, limit="10000")["data"]
    expected = [renamed(row["totals"], country=row["dimensions"]["country"],
                        deviceType=row["dimensions"]["device_type"]) for row in by_country]
    def place(row: dict[str, Any]) -> tuple[str, str]:
        return row["country"], row["deviceType"]
    assert sorted(found["by_country"], key=place) == sorted(expected, key=place) and len(expected) > 1

    # daily steps per video, in UTC
    daily = get(process, "timeseries", ACCOUNT, dimensions="video", metrics="video_view,watch_minutes",
                time_step="day")
    views = {(point["timestamp"], series["dimensions"]["video"]): point["value"]
             for series in daily["video_view"]["data"] for point in series["points"] if point["value"]}
    assert {(row["timestamp"], row["playbackId"]): row["viewCount"] for row in found["by_video_daily"]} == \
        {(float(at), name): value for (at, name), value in views.items()}

    creator = get(process, "events", ACCOUNT, dimensions="account", metrics=QUALITY, where=f"video=={video}")
    assert found["creator"] == [renamed(creator["data"][0]["totals"])]
    assert found["total"] == {"playbackId": video, "viewCount": total(process, "video_view", where=f"video=={video}"),
                              "playtimeMins": total(process, "watch_minutes", where=f"video=={video}")}
    minutes = total(process, "watch_minutes")
    assert found["usage"] == {"CreatorID": ACCOUNT, "DeliveryUsageMins": minutes, "TotalUsageMins": minutes}
    now = get(process, "realtime", ACCOUNT, fields="by_video,viewers")
    assert sum(row["viewCount"] for row in found["now"]) == now["current"]["viewers"]
    assert found["refused"]["status"] == 400 and "does not record the CPU" in found["refused"]["body"]


@pytest.mark.parametrize(("path", "params", "status", "says"), [
    ("/data/views/query", {"breakdownBy[]": "viewerId"}, 400, "no per-viewer dimension"),
    ("/data/views/query", {"breakdownBy[]": "planet"}, 400, "unknown breakdownBy"),
    ("/data/views/query", {"creatorId": "someone-else"}, 403, "creatorId is the account"),
    ("/data/views/query", {"playbackId": "a", "assetId": "b"}, 400, "give one of"),
    ("/data/views/query", {"timeStep": "fortnight"}, 400, "time_step must be one of"),
    ("/data/views/query/creator", {}, 400, "assetId or streamId is required"),
    ("/data/usage/query", {"timeStep": "day"}, 400, "one total per range"),
])
def test_what_cannot_map_is_refused_in_livepeers_error_shape(simulated, path, params, status, says):
    response = httpx.get(f"{simulated.url}{path}", params=params, auth=simulated.auth, timeout=30,
                         headers={"Authorization": f"Bearer {simulated.auth.keys[ACCOUNT]}"})
    assert response.status_code == status and says in response.json()["errors"][0], response.text


def test_livepeer_paths_need_a_key(simulated):
    assert httpx.get(f"{simulated.url}/data/views/query", timeout=30).status_code == 401
    assert httpx.get(f"{simulated.url}/data/views/query/total/video-1", timeout=30).json()["errors"]
