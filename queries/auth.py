"""Who may read what: an API key on every query endpoint, checked before anything else runs.

The presented key is hashed and looked up in memory (keys refresh in the
background), so an unknown key (401) and another account's key (403) cost the
same work, touch no database and tell a prober nothing. A secret key reads all
of its account; a public key, safe in a page, only its named videos and metrics,
only from its named origins, and only on the timeseries and events endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from aggregations.accounts import ApiKey, hash_key
from ingest.directory import Directory
from ingest.ratelimit import RateLimits
from queries.params import Question

PUBLIC_ENDPOINTS = frozenset({"timeseries", "events"})
_BEARER = HTTPBearer(auto_error=False, description="a secret key (backends) or a public key (pages)")


@dataclass(frozen=True)
class Caller:
    """What a request presents: its key (if any) and the page it comes from (browsers send Origin)."""

    credentials: HTTPAuthorizationCredentials | None
    origin: str | None

    @property
    def key(self) -> str:
        return self.credentials.credentials if self.credentials else ""


def _caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
            origin: Annotated[str | None, Header(include_in_schema=False)] = None) -> Caller:
    return Caller(credentials, origin)


CallerOf = Annotated[Caller, Depends(_caller)]


class AuthError(Exception):
    """A refusal before any data is read: 401, 403, 429 or 503, with the reason."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or {}


class Guard:
    def __init__(self, keys: Directory[ApiKey], default_rate: str) -> None:
        self._keys = keys
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
            _check_public_use(key, caller.origin, endpoint)
        retry_after = self._limits.retry_after_s("key", key.key_id, key.rate_limit)
        if retry_after is not None:
            raise AuthError(429, "rate limited: too many requests with this key; retry later",
                            {"Retry-After": str(retry_after)})
        return key


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
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
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
