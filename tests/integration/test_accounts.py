"""Accounts and keys from the operator's side: the CLI on the real store, then a real ``vidpulse up`` that
honours what it made; and the development account a fresh ``up`` creates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.beacons import DESKTOP, envelope
from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
PAGE = "https://shop.example"


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDPULSE_CLICKHOUSE_URL": f"chdb://{workdir / 'clickhouse'}"}
    return subprocess.run([sys.executable, "-m", "vidpulse.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def beacon(url: str, account: str, origin: str | None = None) -> httpx.Response:
    body = envelope("acctsession01", "v1", account=account, events=[{"id": "1", "type": "view", "ts": int(time.time() * 1000)}])
    headers = {"User-Agent": DESKTOP, **({"Origin": origin} if origin else {})}
    return httpx.post(f"{url}/v1/track", json=body, headers=headers, timeout=30)


def events(url: str, account: str, key: str, origin: str | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"Origin": origin} if origin else {})}
    return httpx.get(f"{url}/v1/events/accounts/{account}", headers=headers, timeout=30,
                     params={"dimensions": "video", "metrics": "video_view", **params})


def test_the_cli_manages_accounts_and_keys_and_a_running_pipeline_honours_them(kafka, tmp_path, run_id):
    assert cli(tmp_path, "accounts", "create", "shop", "--origin", PAGE).returncode == 0
    assert cli(tmp_path, "accounts", "create", "other").returncode == 0
    duplicate = cli(tmp_path, "accounts", "create", "shop")
    assert duplicate.returncode == 2 and "exists already" in duplicate.stderr
    secret = orjson.loads(cli(tmp_path, "keys", "create", "shop", "--secret", "--json").stdout)
    doomed = orjson.loads(cli(tmp_path, "keys", "create", "shop", "--secret", "--json").stdout)
    unscoped = cli(tmp_path, "keys", "create", "shop", "--public", "--metric", "ccu")
    assert unscoped.returncode == 2 and "must name its videos" in unscoped.stderr
    public = cli(tmp_path, "keys", "create", "shop", "--public", "--video", "v1", "--metric", "ccu", "--origin", PAGE)
    assert public.returncode == 0 and re.search(r"^vp_pk_\w+", public.stdout, re.M)
    assert cli(tmp_path, "keys", "revoke", doomed["key_id"]).returncode == 0
    listed = orjson.loads(cli(tmp_path, "keys", "list", "shop", "--json").stdout)
    assert {(k["key_id"], k["revoked"]) for k in listed if k["kind"] == "secret"} == {
        (secret["key_id"], False), (doomed["key_id"], True)}
    assert secret["key"] not in str(listed) and secret["key"].startswith(f"vp_sk_{secret['key_id']}_")
    accounts = orjson.loads(cli(tmp_path, "accounts", "list", "--json").stdout)
    assert [(a["account"], a["origins"]) for a in accounts] == [("other", []), ("shop", [PAGE])]

    process = VidpulseProcess(kafka, tmp_path, run_id, accounts=()).start()
    try:
        assert "development account" not in process.log_tail(20_000)  # accounts exist: none is made
        busy = cli(tmp_path, "accounts", "list")
        assert busy.returncode == 1 and "stop that first" in busy.stderr
        assert beacon(process.url, "shop", PAGE).status_code == 202
        assert beacon(process.url, "other", "https://anywhere.example").status_code == 202
        refused = beacon(process.url, "shop", "https://evil.example")
        assert refused.status_code == 403 and "not allowed" in refused.json()["error"]
        unknown = beacon(process.url, "nobody")
        assert unknown.status_code == 403 and "does not exist" in unknown.json()["error"]
        assert events(process.url, "shop", secret["key"]).status_code == 200
        assert events(process.url, "shop", doomed["key"]).status_code == 401
        assert events(process.url, "other", secret["key"]).status_code == 403
    finally:
        process.stop()


def test_a_fresh_up_creates_the_development_account_and_prints_its_keys(kafka, tmp_path, run_id):
    process = VidpulseProcess(kafka, tmp_path, run_id, accounts=()).start()
    try:
        printed = process.log_tail(50_000)
        secret = re.search(r"secret key .*: (vp_sk_\S+)", printed)
        public = re.search(r"public key .*: (vp_pk_\S+)", printed)
        assert secret and public, printed
        assert beacon(process.url, "1234").status_code == 202
        assert events(process.url, "1234", secret.group(1)).status_code == 200
        page = f"http://127.0.0.1:{process.port}"
        viewers = events(process.url, "1234", public.group(1), page, metrics="ccu", where="video==5555")
        assert viewers.status_code == 200 and viewers.headers["Access-Control-Allow-Origin"] == page
        assert events(process.url, "1234", public.group(1), page).status_code == 403  # video_view: not its metric
    finally:
        process.stop()
    again = VidpulseProcess(kafka, tmp_path, run_id, accounts=()).start()
    try:
        assert again.log_tail(50_000).count("created the development account") == 1  # once per database
    finally:
        again.stop()
