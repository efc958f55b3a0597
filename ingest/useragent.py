"""User-Agent to (device_type, os, browser, is_bot) with maintained rules: ua-parser and CrawlerDetect.

ua-parser names device, OS and browser families but has no device class, so
the class comes from those families by the small rule table below.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from crawlerdetect import CrawlerDetect
from ua_parser import parse

DEVICE_TYPES = ("desktop", "mobile", "tablet", "tv", "console", "other")
_TV_MARKERS = ("smart-tv", "smarttv", "appletv", "apple tv", "roku", "googletv", "android tv", "crkey", "aftb", "aftt",
               "aftm", "afts", "bravia", "hbbtv", "netcast", "web0s", "webos", "tizen", "viera", " tv ")
_CONSOLE_MARKERS = ("playstation", "xbox", "nintendo")
_TABLET_MARKERS = ("ipad", "tablet", "kindle", "silk", "playbook", "sm-t", "nexus 7", "nexus 9", "nexus 10")
_MOBILE_OS = ("ios", "android", "windows phone", "blackberry os", "kaios", "harmonyos")
_DESKTOP_OS = ("windows", "mac os x", "macos", "linux", "ubuntu", "fedora", "chrome os", "chromeos", "freebsd")


class UserAgentInfo(NamedTuple):
    device_type: str
    os: str
    browser: str
    is_bot: bool


@lru_cache(maxsize=8192)
def classify(user_agent: str) -> UserAgentInfo:
    """Cached: a player fleet sends few distinct User-Agents, so parsing once each is enough."""
    if not user_agent:
        return UserAgentInfo("other", "", "", False)
    result = parse(user_agent)
    device_family = result.device.family if result.device else "Other"
    os_family = result.os.family if result.os else ""
    browser = result.user_agent.family if result.user_agent else ""
    is_bot = device_family == "Spider" or _crawlers().isCrawler(user_agent)
    return UserAgentInfo(_device_type(user_agent.lower(), device_family, os_family), _known(os_family),
                         _known(browser), is_bot)


@lru_cache(maxsize=1)
def _crawlers() -> CrawlerDetect:
    """CrawlerDetect's maintained patterns catch what ua-parser's spider rules miss (HTTP libraries, headless tools)."""
    return CrawlerDetect()


def _device_type(ua: str, device_family: str, os_family: str) -> str:
    haystack = f" {ua} {device_family.lower()} {os_family.lower()} "
    if any(marker in haystack for marker in _CONSOLE_MARKERS):
        return "console"
    if any(marker in haystack for marker in _TV_MARKERS) or os_family.lower() == "tvos":
        return "tv"
    if any(marker in haystack for marker in _TABLET_MARKERS):
        return "tablet"
    os_name = os_family.lower()
    if os_name == "android":
        return "mobile" if "mobile" in ua else "tablet"
    if os_name in _MOBILE_OS or "mobile" in ua:
        return "mobile"
    if os_name in _DESKTOP_OS:
        return "desktop"
    return "other"


def _known(family: str) -> str:
    return "" if family in ("Other", "") else family
