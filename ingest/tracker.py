"""``POST /v1/track``: validate, enrich, publish, and answer 202 only once Kafka acknowledged.

The endpoint is a bare ASGI app (``Tracker.__call__``), not a Starlette request handler: the beacon is
the one hot route, and Starlette's request, response and exception layers around it took about a tenth
of a busy tracker's CPU. It reads the scope's headers and the body itself and answers with one start
and one body message, as Starlette's ``Response`` would (same headers, ``content-length`` included).
"""

from __future__ import annotations

import calendar
import logging
import time
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ingest import fastpath, jsonio
from ingest.directory import Directory
from ingest.enrich import Rejection, Sender, salt_for, validation_reason
from ingest.geo import Locator
from ingest.http import cors_headers
from ingest.identity import ClientAddress
from ingest.metrics import TrackerMetrics
from ingest.models import Envelope
from ingest.producer import EventProducer, PublishError
from ingest.ratelimit import RateLimits
from ingest.sdk import sdk_routes
from ingest.settings import DEFAULT_SALT, Settings

log = logging.getLogger(__name__)

ACCEPTED_TYPES = ("application/json", "text/plain")
RETRY_AFTER_S = "5"


class BeaconError(Exception):
    """A request-level refusal; the one place mapping to an HTTP answer is ``_error_content``."""

    def __init__(self, status: int, error: str, detail: list[Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


class Tracker:
    """The beacon endpoint; shares nothing between requests but the producer, the rate limits and the
    directory of accounts (account → the origins it allows, empty for any)."""

    def __init__(self, settings: Settings, producer: EventProducer, metrics: TrackerMetrics,
                 accounts: Directory[tuple[str, ...]], quotas: Directory[tuple[int, int]] | None = None) -> None:
        """``quotas``: account → (monthly event quota, events accepted this month as last loaded), for the
        accounts that have a quota."""
        if settings.fingerprint_salt.get_secret_value() == DEFAULT_SALT:
            log.warning("VIDPULSE_FINGERPRINT_SALT is the public development default: anyone can recompute "
                        "fingerprints; set a secret before real traffic")
        self._settings = settings
        self._producer = producer
        self._metrics = metrics
        self._accounts = accounts
        self._quotas = quotas
        self._accepted_since_load: dict[str, int] = {}  # what this tracker accepted since the quotas' last load
        self._quotas_loaded_at: float | None = None
        self._limits = RateLimits({"ip": settings.rate_limit_ip, "account": settings.rate_limit_account})
        self._locator = Locator(settings.geoip_city_db)
        self._beacon_counters: dict[int, Any] = {}
        self._client_ip = ClientAddress(settings.trusted_networks)

    def routes(self) -> list[Route]:
        return [Route("/v1/track", self, methods=["POST", "OPTIONS"]), *sdk_routes()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: ``POST`` and ``OPTIONS /v1/track`` (the caller routes; ``Route`` or ``Process.asgi_app``)."""
        headers = _headers(scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS":
            await _respond(send, 204, None, _preflight_headers(origin))
            return
        received_at_ms = int(time.time() * 1000)
        account = None
        try:
            sender = self._sender(scope, headers, received_at_ms)
            self._check_rate("ip", sender.ip)
            body = await self._read_body(headers, receive)
            payload = _parse_json(body)
            account = _account_of(payload)
            status, content, extra = 202, await self._accept(payload, sender, origin), {}
        except BeaconError as exc:
            status, content, extra = exc.status, _error_content(exc), exc.headers
        self._count_beacon(status)
        await _respond(send, status, orjson.dumps(content), self._cors(extra, origin, account))

    def _count_beacon(self, status: int) -> None:
        child = self._beacon_counters.get(status)
        if child is None:
            child = self._beacon_counters[status] = self._metrics.beacons.labels(str(status))
        child.inc()

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in ACCEPTED_TYPES:
            raise BeaconError(415, f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)}, not {media_type!r}")
        limit = self._settings.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BeaconError(413, f"body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BeaconError(400, "client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BeaconError(413, f"body is larger than {limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _sender(self, scope: Scope, headers: dict[str, str], received_at_ms: int) -> Sender:
        client = scope.get("client")
        peer = client[0] if client else ""
        ip = self._client_ip(peer, headers.get("x-forwarded-for"))
        return Sender(received_at_ms, ip, headers.get("user-agent", ""))

    def _check_rate(self, kind: str, key: str) -> None:
        retry_after = self._limits.retry_after_s(kind, key)
        if retry_after is not None:
            self._metrics.rate_limited.labels(kind).inc()
            raise BeaconError(429, f"rate limited: too many requests for this {kind}; retry the same batch later",
                              headers={"Retry-After": str(retry_after)})

    async def _accept(self, payload: Any, sender: Sender, origin: str | None) -> dict[str, Any]:
        envelope = await self._envelope(payload, sender)
        self._check_account(envelope.account, origin)
        self._check_rate("account", envelope.account)
        self._check_quota(envelope.account)
        if len(envelope.events) > self._settings.max_events_per_batch:
            raise BeaconError(413, f"at most {self._settings.max_events_per_batch} events per batch")
        # plain dicts, not a pydantic object per event; rejections and their reasons still come from the models
        accepted, rejected = fastpath.check_events(envelope, sender.received_at_ms, self._settings.lateness_s)
        salt = salt_for(self._settings.fingerprint_salt.get_secret_value(),
                        self._settings.fingerprint_salt_rotation, sender.received_at_ms)
        batch = fastpath.enrich(envelope, accepted, sender, salt, self._locator)
        letters = [_dead_letter(rejection, envelope, sender) for rejection in rejected]
        await self._publish(batch, letters)
        self._metrics.events_accepted.inc(len(accepted))
        if self._quotas is not None and self._quotas.get(envelope.account) is not None:
            self._accepted_since_load[envelope.account] = self._accepted_since_load.get(envelope.account, 0) + len(accepted)
        for rejection in rejected:
            self._metrics.rejected(rejection.error)
        return {"accepted": len(accepted), "rejected": len(rejected),
                "errors": [{"index": r.index, "error": r.error} for r in rejected]}

    def _check_quota(self, account: str) -> None:
        """Refuses the account's beacons once its month's accepted events reach its quota: the store's count
        (refreshed every few seconds) plus what this tracker accepted since. A batch that starts below the
        quota is accepted whole, so an account may end a month a batch or a refresh's traffic above it."""
        if self._quotas is None or (found := self._quotas.get(account)) is None:
            return
        if self._quotas.loaded_at != self._quotas_loaded_at:
            self._quotas_loaded_at, self._accepted_since_load = self._quotas.loaded_at, {}
        quota, used = found
        if used + self._accepted_since_load.get(account, 0) >= quota:
            self._metrics.rate_limited.labels("quota").inc()
            raise BeaconError(429, f"account {account} has used its monthly quota of {quota} accepted events; it renews "
                                   "on the 1st (UTC), or raise it with `vidpulse accounts update "
                                   f"{account} --quota N`", headers={"Retry-After": str(_seconds_to_next_month())})

    def _check_account(self, account: str, origin: str | None) -> None:
        if not self._accounts.loaded:
            raise BeaconError(503, "cannot accept now: this tracker has not loaded its accounts yet; retry the same batch",
                              headers={"Retry-After": RETRY_AFTER_S})
        allowed = self._accounts.get(account)
        if allowed is None:
            raise BeaconError(403, f"account {account} does not exist here: create it with `vidpulse accounts create`")
        if origin and not _opens(allowed, origin):
            raise BeaconError(403, f"origin {origin} is not allowed for account {account}")

    async def _envelope(self, payload: Any, sender: Sender) -> Envelope | fastpath.PlainEnvelope:
        """A plainly valid envelope checked by hand (``fastpath.plain_envelope``); every other one, and every
        refusal and its reason, by the model."""
        plain = fastpath.plain_envelope(payload)
        if plain is not None:
            return plain
        try:
            return Envelope.model_validate(payload)
        except ValidationError as exc:
            reason = validation_reason(exc, "envelope")
            self._metrics.rejected(reason, _event_count(payload))
            if self._accounts.get(_account_of(payload) or "") is not None:  # no account, no dead letter: no flood
                await self._dead_letter_quietly({"reason": reason, "received_at_ms": sender.received_at_ms,
                                                 "body": payload})
            detail = [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors(include_url=False)]
            raise BeaconError(400, f"invalid envelope: {reason}", detail) from exc

    async def _publish(self, batch: Any, letters: list[dict[str, Any]]) -> None:
        try:
            await self._producer.publish(batch, letters)
        except PublishError as exc:
            raise BeaconError(503, "cannot accept now: the event log did not acknowledge; retry the same batch",
                              headers={"Retry-After": RETRY_AFTER_S}) from exc

    async def _dead_letter_quietly(self, letter: dict[str, Any]) -> None:
        """A 400 is the answer whether or not the dead-letter copy lands; the client gets its reason either way."""
        try:
            await self._producer.dead_letter(letter)
        except PublishError:
            pass

    def _cors(self, headers: dict[str, str], origin: str | None, account: str | None) -> dict[str, str]:
        """Every answer is readable by the page (a refusal included, so the SDK sees its status and
        Retry-After), except where the account names its origins and this is not one of them."""
        if origin and _opens(self._accounts.get(account or "") or (), origin):
            return {**headers, **cors_headers(origin)}
        return headers


_PREFLIGHT_HEADERS = {"Access-Control-Allow-Methods": "POST, OPTIONS",
                      "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "86400"}


def _preflight_headers(origin: str | None) -> dict[str, str]:
    """A preflight carries no body, hence no account, and accounts not configured allow any origin:
    it is answered for every origin. The POST's answer then carries the account's own decision."""
    if not origin:
        return _PREFLIGHT_HEADERS
    return {**_PREFLIGHT_HEADERS, "Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; the first of repeated ones, as Starlette's ``Headers.get``."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in found:
            found[key] = value.decode("latin-1")
    return found


async def _respond(send: Send, status: int, body: bytes | None, headers: dict[str, str]) -> None:
    """What Starlette's ``Response`` sends: the given headers, then ``content-length`` and ``content-type`` when
    there is a body."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    if body is not None:
        raw += [(b"content-length", str(len(body)).encode("ascii")), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body or b""})


def _opens(allowed: tuple[str, ...], origin: str) -> bool:
    """An account that has set no origins allows any (the protocol's default)."""
    return not allowed or origin in allowed


def _parse_json(body: bytes) -> Any:
    try:
        return jsonio.loads(body)
    except jsonio.NotJSON as exc:
        raise BeaconError(400, f"body is not JSON: {exc}") from exc


def _account_of(payload: Any) -> str | None:
    account = payload.get("account") if isinstance(payload, dict) else None
    return account.strip() if isinstance(account, str) else None


def _seconds_to_next_month() -> int:
    now = time.gmtime()
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return max(1, int(calendar.timegm((year, month, 1, 0, 0, 0)) - time.time()))


def _event_count(payload: Any) -> int:
    events = payload.get("events") if isinstance(payload, dict) else None
    return len(events) if isinstance(events, list) and events else 1


def _dead_letter(rejection: Rejection, envelope: Envelope | fastpath.PlainEnvelope, sender: Sender) -> dict[str, Any]:
    return {"reason": rejection.error, "received_at_ms": sender.received_at_ms, "account": envelope.account,
            "session": envelope.session, "video": envelope.video, "index": rejection.index, "event": rejection.event}


def _error_content(exc: BeaconError) -> dict[str, Any]:
    content: dict[str, Any] = {"error": exc.error}
    if exc.detail is not None:
        content["detail"] = exc.detail
    return content
