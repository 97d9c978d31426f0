"""Device class from a user agent, for funnel breakdowns: bot, tablet, mobile, desktop or unknown."""

from __future__ import annotations

import re
from functools import lru_cache

_BOT = re.compile(r"bot|crawl|spider|slurp|headless|python-requests|curl/|wget/", re.IGNORECASE)
# iPad before mobile: its agent may also say "Mobile"; Android tablets omit "Mobile".
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|android(?!.*mobile)", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android|windows phone|micromessenger", re.IGNORECASE)


@lru_cache(maxsize=4096)  # a site sees few distinct agents; the regexes cost more than the lookup
def device_class(user_agent: str) -> str:
    if not user_agent:
        return "unknown"
    if _BOT.search(user_agent):
        return "bot"
    if _TABLET.search(user_agent):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    return "desktop"
