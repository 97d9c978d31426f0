"""What every query shares: time ranges and event matchers, checked and rendered as bound SQL.

A matcher becomes a condition over fixed column names; only its values travel, as bound parameters
(`%(s0_category)s`), so no caller text ever reaches the SQL. Which conditions appear depends only on
which matcher fields are set.

Times are bound as `toDateTime(%(start)s, 'UTC')`, never as a bare string: 18.16 fails ("Value of type
String in memory is not of fixed size") when a string literal meets a `toDate(time)` sorting key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from inkloop.errors import FieldViolation, InvalidArgument

Source = Literal["frontend", "backend"]

FRONTEND_TYPES = ("page_view", "track_event")
BACKEND_TYPES = (
    "requested",
    "queued",
    "started",
    "succeeded",
    "failed",
    "cancelled",
    "cache_hit",
    "rejected_by_policy",
    "rejected",
    "downloaded",
)

# The tracker's convention for a generate click: `_trackEvent('generate', 'click', …)` with the
# request id the page also sends to the gateway. Alerts and dwell time rely on it.
GENERATE_CATEGORY = "generate"
CLICK_ACTION = "click"
EXPOSURE_ACTION = "exposure"

MAX_RANGE_DAYS = 400


@dataclass(frozen=True)
class TimeRange:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    def check(self, field: str = "range") -> None:
        if self.end <= self.start:
            raise InvalidArgument(f"{field}.end", "must be after range.start")
        if (self.end - self.start).days > MAX_RANGE_DAYS:
            raise InvalidArgument(field, f"at most {MAX_RANGE_DAYS} days")

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


@dataclass(frozen=True)
class EventMatcher:
    """Selects events of one stream; empty fields match anything."""

    source: Source | None
    name: str = ""
    frontend_type: str = ""
    category: str = ""
    action: str = ""
    label: str = ""
    backend_type: str = ""
    variant: str = ""

    def check(self, field: str, source: Source | None = None) -> None:
        """Raises InvalidArgument naming `field` (e.g. "steps[1]") when the matcher is unusable."""
        problems = []
        if self.source is None:
            problems.append(FieldViolation(f"{field}.source", "required: EVENT_SOURCE_FRONTEND or _BACKEND"))
        elif source is not None and self.source != source:
            problems.append(FieldViolation(f"{field}.source", f"must be {source} here"))
        if self.source == "frontend" and (self.backend_type or self.variant):
            problems.append(FieldViolation(f"{field}.backend_type", "back-end fields on a front-end matcher"))
        if self.source == "backend" and (self.frontend_type or self.category or self.action or self.label):
            problems.append(FieldViolation(f"{field}.category", "front-end fields on a back-end matcher"))
        for name, value in (("name", self.name), ("category", self.category), ("action", self.action)):
            if len(value) > 128:
                problems.append(FieldViolation(f"{field}.{name}", "longer than 128 characters"))
        if len(self.label) > 256 or len(self.variant) > 64:
            problems.append(FieldViolation(f"{field}.label", "label or variant too long"))
        if problems:
            raise InvalidArgument.of(problems)

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.source == "frontend":
            parts = [self.frontend_type or "event", self.category, self.action, self.label]
        else:
            parts = [self.backend_type or "any", self.variant]
        return f"{self.source}:" + "/".join(part for part in parts if part)

    def condition(self, prefix: str, params: dict[str, Any]) -> str:
        """A SQL condition over the matcher's table, adding its bound values to `params`."""
        fields: tuple[tuple[str, str], ...]
        if self.source == "frontend":
            fields = (
                ("type", self.frontend_type),
                ("category", self.category),
                ("action", self.action),
                ("label", self.label),
            )
        else:
            fields = (("type", self.backend_type), ("variant", self.variant))
        parts = []
        for column, value in fields:
            if value:
                params[f"{prefix}_{column}"] = value
                parts.append(f"{column} = %({prefix}_{column})s")
        return " AND ".join(parts) or "1"


def require_tenant(tenant_id: str) -> None:
    if not tenant_id:
        raise InvalidArgument("tenant_id", "required")
