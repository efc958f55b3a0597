"""Who may read what: an API key on every query endpoint, checked before anything else runs.

The presented key is hashed and looked up in memory (keys refresh in the
background), so an unknown key (401) and another account's key (403) cost the
same work, touch no database and tell a prober nothing. A secret key reads all
of its account; a public key, safe in a page, only its named videos and metrics,
only from its named origins, and only on the timeseries and events endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from aggregations.accounts import ApiKey, hash_key
from ingest.directory import Directory
from ingest.http import allow_origin
from ingest.identity import Network, client_ip
from ingest.ratelimit import RateLimits
from queries.params import Question

PUBLIC_ENDPOINTS = frozenset({"timeseries", "events", "realtime", "live", "whoami", "livepeer"})
_BEARER = HTTPBearer(auto_error=False, description="a secret key (backends) or a public key (pages)")


@dataclass(frozen=True)
class Caller:
    """What a request presents: its key (if any), the page it comes from and where it comes from."""

    credentials: HTTPAuthorizationCredentials | None
    origin: str | None       # the Origin header: browsers send it on cross-origin requests
    referer: str | None      # a same-origin GET carries no Origin, but the page's address here
    peer: str
    forwarded_for: str | None

    @property
    def key(self) -> str:
        return self.credentials.credentials if self.credentials else ""

    @property
    def page(self) -> str | None:
        """The origin of the page that sent the request, if a browser said."""
        if self.origin:
            return self.origin
        parts = urlsplit(self.referer or "")
        return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme in ("http", "https") and parts.netloc else None


def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> Caller:
    headers = request.headers
    return Caller(credentials, headers.get("origin"), headers.get("referer"),
                  request.client.host if request.client else "", headers.get("x-forwarded-for"))


CallerOf = Annotated[Caller, Depends(_caller)]


class AuthError(Exception):
    """A refusal before any data is read: 401, 403, 429 or 503, with the reason."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or {}


class Guard:
    """Admits a request for an account at an endpoint, or says why not. A public key's rate applies per
    client address (every viewer of a page shares the key); a secret key's to the key as a whole."""

    def __init__(self, keys: Directory[ApiKey], default_rate: str, trusted_proxies: Sequence[Network] = ()) -> None:
        self._keys, self._trusted = keys, trusted_proxies
        self._limits = RateLimits({"key": default_rate})

    def admit(self, caller: Caller, account: str, endpoint: str) -> ApiKey:
        """The key that opens ``account`` at ``endpoint``, or the AuthError that says why not."""
        if not self._keys.loaded:
            raise AuthError(503, "the API has not loaded its keys yet: the analytics database did not answer",
                            {"Retry-After": "5"})
        key = self._keys.get(hash_key(caller.key))
        if key is None:
            raise AuthError(401, "a valid API key is required: send `Authorization: Bearer <key>`",
                            {"WWW-Authenticate": 'Bearer realm="vidpulse"'})
        if key.account != account:
            raise AuthError(403, f"this key does not open account {account}")
        if key.public:
            _check_public_use(key, caller.page, endpoint)
        bucket = f"{key.key_id}@{client_ip(caller.peer, caller.forwarded_for, self._trusted)}" if key.public else key.key_id
        retry_after = self._limits.retry_after_s("key", bucket, key.rate_limit)
        if retry_after is not None:
            raise AuthError(429, "rate limited: too many requests with this key; retry later",
                            {"Retry-After": str(retry_after)})
        return key

    def account_of(self, caller: Caller) -> str:
        """The account of the presented key ("" for none): what ``admit`` is then asked to open."""
        key = self._keys.get(hash_key(caller.key))
        return key.account if key is not None else ""

    def still_open(self, key: ApiKey) -> bool:
        """Whether an admitted key is still valid (not revoked, its account not deleted), as last loaded."""
        return self._keys.get(key.key_hash) is not None


def check_scope(key: ApiKey, question: Question) -> None:
    """A public key's question names only its metrics and is filtered to its videos."""
    if not key.public:
        return
    outside = [metric for metric in question.metrics if metric not in key.metrics]
    if outside:
        raise AuthError(403, f"this public key may not read {', '.join(outside)}; it may read "
                             f"{', '.join(key.metrics)}")
    videos = [f.values for f in question.filters if f.dimension == "video"]
    if not videos or any(value not in key.videos for values in videos for value in values):
        raise AuthError(403, "a public key's question must filter to its videos with where=video==...; "
                             f"it may read {', '.join(key.videos)}")


def cors(response: Response, origin: str | None, key: ApiKey | None) -> Response:
    """Pages may read what a public key opened, and every refusal (so they can show why); a secret key's
    answers are never readable by a page."""
    response.headers["Vary"] = "Origin"
    if origin and (key is None or (key.public and origin in key.origins)):
        allow_origin(response, origin)
    return response


def preflight(origin: str | None) -> Response:
    """A preflight carries no key: answered for any origin; the GET's answer carries the key's decision."""
    response = Response(status_code=204, headers={"Access-Control-Allow-Methods": "GET, OPTIONS",
                                                  "Access-Control-Allow-Headers": "Authorization",
                                                  "Access-Control-Max-Age": "86400"})
    return cors(response, origin, None)


def _check_public_use(key: ApiKey, origin: str | None, endpoint: str) -> None:
    if endpoint not in PUBLIC_ENDPOINTS:
        raise AuthError(403, f"a public key cannot use the {endpoint} endpoint: use a secret key from a backend")
    if origin not in key.origins:
        raise AuthError(403, f"a public key is used from its pages only ({', '.join(key.origins)}), "
                             f"not from {origin or 'a request without an Origin'}")
