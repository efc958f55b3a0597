"""Each process alone (tracker, worker, API, as in a scale-out) exposes every metric the README lists for its part,
in a scrape that prometheus-client's parser reads."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.vidpulse_process import VidpulseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
PARTS = {"tracker": ("vidpulse_tracker_", "vidpulse_directory_"), "worker": ("vidpulse_worker_",),
         "api": ("vidpulse_api_", "vidpulse_directory_", "vidpulse_live_")}


def listed_metrics() -> set[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    operations = readme[readme.index("## Operations"):readme.index("## Limits we chose")]
    return set(re.findall(r"`(vidpulse_[a-z_]+)", operations))


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_process_alone_exposes_the_metrics_of_its_part(kafka, tmp_path, run_id, part):
    expected = {name for name in listed_metrics() if name.startswith(PARTS[part])}
    assert len(expected) >= 2
    # a data folder that does not exist yet (Faust alone made only its last level: the worker died at start)
    process = VidpulseProcess(kafka, tmp_path, run_id, command=part, data_dir=str(tmp_path / "new" / "data")).start()
    try:
        families = {family.name for family in text_string_to_metric_families(httpx.get(f"{process.url}/metrics").text)}
    finally:
        process.stop()
    missing = {name for name in expected if name not in families and name.removesuffix("_total") not in families}
    assert not missing, f"{part}: listed in the README but not exposed: {sorted(missing)}"
    others = {prefix for other, prefixes in PARTS.items() if other != part for prefix in prefixes} - set(PARTS[part])
    assert not {name for name in families if name.startswith(tuple(others))}, "a part exposes another part's metrics"


def test_a_worker_reports_the_lag_of_every_assigned_partition_even_before_it_reads_one(kafka, tmp_path, run_id):
    """A partition held but never read must show (a stall there would otherwise go unseen: no lag, no alert)."""
    process = VidpulseProcess(kafka, tmp_path, run_id, command="worker", topic_partitions="3").start()
    try:
        deadline, lags = time.monotonic() + 90, {}
        while time.monotonic() < deadline and len(lags) < 3:
            time.sleep(1)
            scrape = httpx.get(f"{process.url}/metrics").text
            lags = dict(re.findall(r'vidpulse_worker_consumer_lag_messages\{partition="(\d)"\} (\S+)', scrape))
    finally:
        process.stop()
    assert lags == {"0": "0.0", "1": "0.0", "2": "0.0"}, f"nothing read yet, every partition listed at 0: {lags}"
    assert re.search(r"^vidpulse_worker_stalled_partitions 0\.0$", scrape, re.M)
