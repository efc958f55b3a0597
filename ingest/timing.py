"""Event time: the device clock corrected by the batch's send time (Snowplow's derived timestamp)."""

from __future__ import annotations

FUTURE_TOLERANCE_MS = 60_000


def event_time_ms(received_at_ms: int, sent_at_ms: int | None, ts_ms: int) -> int:
    """received_at - (sent_at - ts): the device's offset cancels out when it sent both clocks."""
    return ts_ms + clock_offset(received_at_ms, sent_at_ms)


def clock_offset(received_at_ms: int, sent_at_ms: int | None) -> int:
    """What to add to a device time of the batch to get its event time (exact integers: the same as above)."""
    return 0 if sent_at_ms is None else received_at_ms - sent_at_ms


def window(received_at_ms: int, lateness_s: int) -> tuple[int, int]:
    """The earliest and latest event times (inclusive) a batch received at ``received_at_ms`` may carry."""
    return received_at_ms - lateness_s * 1000, received_at_ms + FUTURE_TOLERANCE_MS


def time_error(event_ms: int, received_at_ms: int, lateness_s: int) -> str | None:
    """The rejection reason for an event time outside what the pipeline accepts, else None."""
    earliest, latest = window(received_at_ms, lateness_s)
    if event_ms > latest:
        return "in_future: event time is more than 60 s after the tracker's clock"
    if event_ms < earliest:
        return f"too_late: event time is older than the lateness window of {lateness_s} s"
    return None
