"""Who sent a beacon: the client IP, the keyed fingerprint and the session key.

The raw IP and User-Agent enter here and never leave: callers keep only the
fingerprint and what enrichment derives (country, device type...).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
from collections.abc import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The socket peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies.

    The header is believed only when the peer itself is a trusted proxy, so a
    client cannot spoof its address by sending the header directly.
    """
    return _pick(peer, forwarded_for, lambda address: _trust(address, trusted))


class ClientAddress:
    """``client_ip`` for one tracker, remembering each address's verdict (parsing an address took 3 % of a busy
    tracker, and the proxy's own address comes with every request). Forgets all at ``limit`` addresses."""

    def __init__(self, trusted: Sequence[Network], limit: int = 100_000) -> None:
        self._trusted, self._limit = tuple(trusted), limit
        self._ipv4 = tuple((int(network.network_address), int(network.netmask)) for network in self._trusted
                           if network.version == 4)
        self._verdicts: dict[str, bool | None] = {}

    def __call__(self, peer: str, forwarded_for: str | None) -> str:
        return _pick(peer, forwarded_for, self._verdict)

    def _verdict(self, address: str) -> bool | None:
        try:
            return self._verdicts[address]
        except KeyError:
            if len(self._verdicts) >= self._limit:
                self._verdicts.clear()
            verdict = self._verdicts[address] = self._judge(address)
            return verdict

    def _judge(self, address: str) -> bool | None:
        """``_trust``'s verdict. A client's address is new more often than not (the cache mostly saves the
        proxy's): an IPv4 address is read by ``inet_pton`` and matched as integers, a sixth of ``ipaddress``'s
        cost; anything else (IPv6, not an address) is ``_trust``'s to judge."""
        try:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
        except (OSError, ValueError):
            return _trust(address, self._trusted)
        return any(value & mask == network for network, mask in self._ipv4)


def _pick(peer: str, forwarded_for: str | None, trust: Callable[[str], bool | None]) -> str:
    if not forwarded_for or not trust(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        verdict = trust(hop)
        if verdict is None:  # not an address: the header is not to be believed
            return peer
        if not verdict:
            return hop
    return hops[0] if hops else peer


def fingerprint(salt: bytes, account: str, ip: str, user_agent: str, player: str) -> int:
    """64-bit keyed BLAKE2b of (account, IP, User-Agent, player): stable, not reversible without the salt."""
    digest = hashlib.blake2b(key=salt[:64], digest_size=8)
    for part in (account, ip, user_agent, player):
        digest.update(part.encode("utf-8", "replace"))
        digest.update(b"\x00")
    return int.from_bytes(digest.digest(), "big")


def daily_salt(secret: str, rotate: bool, today: dt.date) -> bytes:
    """The salt for today's fingerprints; with rotation, uniques stop matching across UTC days."""
    return f"{secret}|{today.isoformat()}".encode() if rotate else secret.encode()


def session_key(account: str, fingerprint_value: int, session: str) -> int:
    """The spec's session identity (account, fingerprint, session) as one 64-bit number."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{account}\x00{fingerprint_value}\x00{session}".encode())
    return int.from_bytes(digest.digest(), "big")


def _trust(address: str, trusted: Sequence[Network]) -> bool | None:
    """Whether ``address`` is a trusted proxy's; None when it is no IP address at all."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    return any(parsed in network for network in trusted)
