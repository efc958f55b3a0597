"""Drives a client generated from vidpulse's OpenAPI document by openapi-python-client, and prints what it read.

Run by the generator's own virtual environment (the generated package needs httpx, attrs and dateutil, which
that environment has), with the generated ``vidpulse_client`` package importable, as
``python openapi_client.py <base url> <api key> <account> <from ms> <to ms>``: prints one JSON object,
never imports vidpulse.
"""

from __future__ import annotations

import json
import sys

from vidpulse_client import AuthenticatedClient
from vidpulse_client.api.analytics import get_events, get_timeseries, whoami
from vidpulse_client.models import Events, Problem, Timeseries

METRICS = ["video_view", "video_impression", "video_seconds_viewed", "ccu", "fingerprint_count"]


def main(url: str, key: str, account: str, start: int, end: int) -> dict:
    client = AuthenticatedClient(base_url=url, token=key, timeout=60)
    totals = get_events.sync(account, client=client, dimensions=["video"], metrics=METRICS, from_=start, to=end)
    series = get_timeseries.sync(account, client=client, dimensions=["video"], metrics=["video_view", "ccu"],
                                 from_=start, to=end, bucket_duration="10m")
    refused = get_events.sync(account, client=client, dimensions=["video"], metrics=["video_view"],
                              where="country==", from_=start, to=end)
    me = whoami.sync(client=client)
    assert isinstance(totals, Events) and isinstance(series, Timeseries), (totals, series)
    assert isinstance(refused, Problem), refused
    return {"events": totals.to_dict(), "timeseries": series.to_dict(), "refused": refused.to_dict(),
            "whoami": me.to_dict()}


if __name__ == "__main__":
    url, key, account, start, end = sys.argv[1:6]
    print(json.dumps(main(url, key, account, int(start), int(end))))
