"""Plausible-style visitor ids: a hash of IP and user agent with a salt that changes every day.

The collect endpoint (gateway) calls `daily_visitor_id` so no cookie is needed and no IP is stored;
the same person gets a new id the next day, so visitors cannot be followed across days.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date


def daily_salt(secret: str, day: date) -> bytes:
    """The salt of `day`, derived from a long-lived secret (nothing to rotate or store per day)."""
    return hmac.new(secret.encode(), day.isoformat().encode(), hashlib.sha256).digest()


def daily_visitor_id(ip: str, user_agent: str, tenant: str, day: date, secret: str) -> str:
    """32 hex characters; equal inputs on the same day give the same id, any other day another one."""
    message = "\0".join((tenant, ip, user_agent)).encode()
    return hmac.new(daily_salt(secret, day), message, hashlib.sha256).hexdigest()[:32]
