"""A client generated from the OpenAPI document works: openapi-python-client (from PyPI, in its own virtual
environment made by the Makefile) builds one from what ``/openapi.json`` serves, and that client reads a
simulated day's totals and timeseries, equal to what the API answers directly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import SIMULATED

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / ".cache" / "openapi-python-client-0.29.1" / "bin"
CLIENT = Path(__file__).resolve().parent / "openapi_client.py"
# literal_enums: the time-zone enum holds names (GMT+0, GMT-0, GMT0) that the generator's enum classes would
# collide on; post_hooks: the generated code is used as generated (no formatter run).
CONFIG = "package_name_override: vidpulse_client\nproject_name_override: vidpulse-client\nliteral_enums: true\npost_hooks: []\n"
METRICS = "video_view,video_impression,video_seconds_viewed,ccu,fingerprint_count"


def generate(url: str, folder: Path) -> None:
    (folder / "openapi.json").write_bytes(httpx.get(f"{url}/openapi.json", timeout=30).content)
    (folder / "config.yaml").write_text(CONFIG)
    done = subprocess.run([str(GENERATOR / "openapi-python-client"), "generate", "--path", "openapi.json",
                           "--config", "config.yaml", "--meta", "none", "--output-path", "vidpulse_client"],
                          capture_output=True, text=True, timeout=300, cwd=folder)
    assert done.returncode == 0 and (folder / "vidpulse_client" / "client.py").exists(), done.stdout + done.stderr


def test_a_generated_client_reads_what_the_api_answers(simulated, tmp_path):
    generate(simulated.url, tmp_path)
    key = simulated.auth.keys[SIMULATED]
    start, end = simulated.truth["range"]["from"], simulated.truth["range"]["to"]
    done = subprocess.run([str(GENERATOR / "python"), str(CLIENT), simulated.url, key, SIMULATED, str(start), str(end)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-4000:]
    read = json.loads(done.stdout)

    def direct(endpoint: str, **params: str) -> dict:
        response = httpx.get(f"{simulated.url}/v1/{endpoint}/accounts/{SIMULATED}", timeout=60, auth=simulated.auth,
                             params={"dimensions": "video", "from": str(start), "to": str(end), **params})
        assert response.status_code == 200, response.text
        return response.json()

    assert read["events"] == direct("events", metrics=METRICS)
    assert read["timeseries"] == direct("timeseries", metrics="video_view,ccu", bucket_duration="10m")
    by_video = {row["dimensions"]["video"]: row["totals"]["video_view"] for row in read["events"]["data"]}
    assert by_video == {video: totals["video_view"] for video, totals in simulated.truth["totals"]["by_video"].items()}
    assert "where" in read["refused"]["error"] and read["whoami"]["account"] == SIMULATED
