"""Drives Livepeer's own Python SDK (``livepeer`` 0.3.0, unmodified) against a vidpulse API and prints what it read.

Run by the interpreter of the SDK's own virtual environment (the SDK pins pydantic and httpx versions that
vidpulse does not use, so it cannot share vidpulse's), as
``python livepeer_client.py <base url> <api key> <video>``: prints one JSON object, never imports vidpulse.
"""

from __future__ import annotations

import json
import sys

from livepeer import Livepeer
from livepeer.models import errors


def main(url: str, key: str, video: str) -> dict:
    client = Livepeer(api_key=key, server_url=url)
    metrics = client.metrics

    def rows(answer) -> list[dict]:
        return [row.model_dump(by_alias=True, exclude_none=True) for row in answer.data or []]

    found = {
        "views": rows(metrics.get_viewership(request={})),
        "by_country": rows(metrics.get_viewership(request={"breakdown_by": ["country", "deviceType"]})),
        "by_video_daily": rows(metrics.get_viewership(request={"breakdown_by": ["playbackId"], "time_step": "day"})),
        "creator": rows(metrics.get_creator_viewership(request={"asset_id": video})),
        "total": metrics.get_public_viewership(playback_id=video).data.model_dump(by_alias=True, exclude_none=True),
        "now": rows(metrics.get_realtime_viewership(breakdown_by=["playbackId"])),
        "usage": metrics.get_usage(request={}).usage_metric.model_dump(by_alias=True, exclude_none=True),
    }
    try:
        metrics.get_viewership(request={"breakdown_by": ["cpu"]})
        found["refused"] = None
    except errors.SDKError as exc:
        found["refused"] = {"status": exc.status_code, "body": exc.body}
    return found


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
