"""Sends each API request with the secret key of the account its path names, as a backend would."""

from __future__ import annotations

from collections.abc import Generator, Mapping

import httpx


class AccountKeys(httpx.Auth):
    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        parts = request.url.path.split("/")
        if "accounts" in parts[:-1]:
            key = self.keys.get(parts[parts.index("accounts") + 1])
            if key:
                request.headers["Authorization"] = f"Bearer {key}"
        yield request
