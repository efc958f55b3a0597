"""Who sent a beacon: the client IP, the keyed fingerprint and the session key.

The raw IP and User-Agent enter here and never leave: callers keep only the
fingerprint and what enrichment derives (country, device type...).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The socket peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies.

    The header is believed only when the peer itself is a trusted proxy, so a
    client cannot spoof its address by sending the header directly.
    """
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_ip(hop):
            return peer
        if not _is_trusted(hop, trusted):
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


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(ip: str, trusted: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in trusted)
