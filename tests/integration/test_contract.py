"""The API's contract, machine-checked: Schemathesis runs every check it has against a real ``vidpulse up``.

The document is the one the process serves at /openapi.json. Requests carry a key of the account fixed in
the path, so they reach the parameters' validation; a fixed seed and a bounded number of examples per
operation keep the run reproducible and within a few minutes. Left out of the run: the live push
(``/v1/live``, an endless event stream no request of Schemathesis can finish) and ``/mcp`` (JSON-RPC,
whose own test is test_mcp.py).

Re-run by hand against a running process: the command is ``contract_command`` below (and in README).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from queries.catalog import METRICS
from tests.integration.conftest import PAGE, SIMULATED

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
HOOKS = Path(__file__).resolve().parent / "contract_hooks.py"
SEED = 13
EXCLUDED = ("/v1/live/accounts/{account_id}", "/mcp")


# On the embedded engine the process's requests share one database: a slow answer holds the others up. The
# answer-size limit (queries/answers.py) keeps the largest generated query a few seconds; 20 s is ample.
def contract_command(url: str, key: str, config: Path, examples: int, *headers: str) -> list[str]:
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json",
               "--checks", "all", "--seed", str(SEED), "--max-examples", str(examples), "--workers", "1",
               "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "20",
               "--max-response-time", "30", "--no-color", "--header", f"Authorization: Bearer {key}"]
    for header in headers:
        command += ["--header", header]
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    return command


def run_contract(process, key: str, tmp_path: Path, examples: int, capsys: pytest.CaptureFixture, *headers: str) -> str:
    """Runs the check; its counts go to the terminal even in a quiet ``make test`` (the issue asks to see them)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'hooks = "{HOOKS}"\n\n[parameters]\n"path.account_id" = "{SIMULATED}"\n')
    done = subprocess.run(contract_command(process.url, key, config, examples, *headers), capture_output=True,
                          text=True, timeout=600, env=process.env, cwd=tmp_path)
    summary = done.stdout[done.stdout.rfind("SUMMARY"):]
    print(summary)
    phases = {name: mark == "✅" for mark, name in re.findall(r"(✅|⏭|❌|🚫)\s+(\w+)", summary)}
    with capsys.disabled():
        print(f"\n[contract] {counts(summary)}, phases run: {[name for name, ran in phases.items() if ran]}")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    return summary


def counts(summary: str) -> dict[str, int]:
    """Generated and passed test cases, and operations tested, as the run's summary reports them."""
    found = re.search(r"(\d+) generated, (\d+) passed", summary)
    tested = re.search(r"Tested: (\d+)", summary)
    generated, passed = (int(found.group(1)), int(found.group(2))) if found else (0, -1)
    return {"generated": generated, "passed": passed, "operations": int(tested.group(1)) if tested else 0}


def test_the_document_holds_every_served_endpoint(simulated):
    document = httpx.get(f"{simulated.url}/openapi.json", timeout=30).json()
    paths = document["paths"]
    assert {"/v1/track", "/mcp", "/v1/timeseries/accounts/{account_id}", "/v1/events/accounts/{account_id}",
            "/v1/usage/accounts/{account_id}", "/data/views/query"} <= set(paths)
    assert set(paths["/v1/track"]["post"]["responses"]) == {"202", "400", "403", "413", "415", "429", "503"}
    events = paths["/v1/events/accounts/{account_id}"]["get"]
    assert events["security"] == [{"bearer": []}]
    metrics = next(p for p in events["parameters"] if p["name"] == "metrics")
    assert "video_view" in metrics["schema"]["items"]["enum"] and metrics["required"]


def test_every_check_holds_with_a_secret_key(simulated, tmp_path, capsys):
    summary = run_contract(simulated, simulated.auth.keys[SIMULATED], tmp_path, 10, capsys)
    found = counts(summary)
    assert found["operations"] == len(httpx.get(f"{simulated.url}/openapi.json", timeout=30).json()["paths"]) - len(EXCLUDED)
    assert found["generated"] > 500 and found["passed"] == found["generated"], summary
    assert "No issues found" in summary
    assert "✅ Stateful" in summary  # whoami's links chain into the account operations


def test_scope_refusals_are_documented_answers(simulated, tmp_path, capsys):
    """A public key (video-1's views only, from its page): most questions are refused, each as the document says."""
    summary = run_contract(simulated, simulated.public_key, tmp_path, 3, capsys, f"Origin: {PAGE}")
    found = counts(summary)
    assert found["generated"] > 100 and found["passed"] == found["generated"], summary
    assert "Failures:" not in summary and "Errors:" not in summary


def test_an_answer_over_the_size_limit_is_a_422_that_says_what_to_narrow(simulated):
    """Each series is bounded before the query runs, the number of series only by the data: a month of minutes
    over the simulated day's sessions, 9 dimensions and every metric, would be hundreds of MB."""
    start = simulated.truth["range"]["from"]
    month = {"from": str(start - 16 * 86_400_000), "to": str(start + 16 * 86_400_000)}
    dimensions = "video,country,continent,subdivision,device_type,os,browser,player,timezone"
    url = f"{simulated.url}/v1/timeseries/accounts/{SIMULATED}"
    started = time.monotonic()
    refused = httpx.get(url, params={"dimensions": dimensions, "metrics": ",".join(METRICS), **month},
                        auth=simulated.auth, timeout=60)
    assert refused.status_code == 422, refused.text[:500]
    assert "at most 1,000,000" in refused.json()["error"] and "bucket_duration" in refused.json()["error"]
    assert time.monotonic() - started < 20
    hourly = httpx.get(url, params={"dimensions": dimensions, "metrics": ",".join(METRICS), "bucket_duration": "1h",
                                    **month}, auth=simulated.auth, timeout=60)
    assert hourly.status_code == 200 and len(hourly.json()["video_view"]["data"][0]["points"]) == 32 * 24 + 1
