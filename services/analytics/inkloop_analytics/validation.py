"""Protobuf events in, table rows or rejections (field and reason) out.

`frontend_row` / `backend_row` take one event and are the definition of the rules. Ingest, the hot
path, uses `batch_validation` instead: the same results for a whole batch, column by column.

Privacy rules are applied here too: prompt excerpts are redacted again, prompt-like labels and URLs
are scrubbed.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2, common_pb2
from inkloop_analytics.devices import device_class
from inkloop_analytics.privacy import scrub_label, scrub_url
from inkloop_analytics.tables import Row

FRONTEND_TYPES = {
    analytics_pb2.FRONTEND_EVENT_TYPE_PAGE_VIEW: "page_view",
    analytics_pb2.FRONTEND_EVENT_TYPE_TRACK_EVENT: "track_event",
}
BACKEND_TYPES = {
    value: name.removeprefix("BACKEND_EVENT_TYPE_").lower()
    for name, value in analytics_pb2.BackendEventType.items()
    if value != analytics_pb2.BACKEND_EVENT_TYPE_UNSPECIFIED
}
LANGUAGES = {
    analytics_pb2.LANGUAGE_CLASS_UNSPECIFIED: "",
    analytics_pb2.LANGUAGE_CLASS_ZH: "zh",
    analytics_pb2.LANGUAGE_CLASS_EN: "en",
    analytics_pb2.LANGUAGE_CLASS_MIXED: "mixed",
    analytics_pb2.LANGUAGE_CLASS_OTHER: "other",
}
KINDS = {
    value: "" if value == common_pb2.GENERATION_KIND_UNSPECIFIED else name.removeprefix("GENERATION_KIND_").lower()
    for name, value in common_pb2.GenerationKind.items()
}

# Longest accepted value per string field, in characters (the proto documents the first ones).
FRONTEND_LIMITS = (
    ("tenant_id", 64),
    ("visitor_id", 128),
    ("session_id", 128),
    ("user_id", 128),
    ("page_url", 2048),
    ("referrer", 2048),
    ("user_agent", 512),
    ("language", 32),
    ("screen", 32),
    ("category", 128),
    ("action", 128),
    ("label", 256),
    ("request_id", 128),
)
BACKEND_LIMITS = (
    ("tenant_id", 64),
    ("user_id", 128),
    ("request_id", 128),
    ("job_id", 128),
    ("variant", 64),
    ("error_code", 64),
    ("policy", 64),
    ("base_request_id", 128),
    ("template_id", 64),
)
MAX_CUSTOM_VARS = 16
MAX_CUSTOM_VAR_CHARS = 256
MAX_PROMPT_HASH_CHARS = 128
MAX_PROMPT_LENGTH = 1_000_000
# What a ClickHouse DateTime column holds: seconds since 1970 in a UInt32 (to 2106-02-07 06:28:15).
# An event time outside it could only be stored wrong, or refused by the store after its ack.
DATETIME_SECONDS = range(0, 2**32)


@dataclass(frozen=True)
class Rejection:
    field: str
    reason: str


@dataclass(frozen=True)
class Limits:
    """How far event times may be from the server's clock."""

    max_future_s: int = 86_400
    max_age_s: int = 365 * 86_400


@lru_cache(maxsize=65_536)
def utc_time(seconds: int) -> datetime:
    """Event times repeat a lot within and across batches; building a datetime costs more than a lookup."""
    return datetime.fromtimestamp(seconds, UTC)


# The canonical text form (what uuid4() prints): checked by one precompiled regex, then built from its
# integer, which costs a fraction of uuid.UUID(text). Any other form uuid.UUID accepts takes the slow path.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_new_uuid = uuid.UUID.__new__
_set_int = uuid.UUID.__dict__["int"].__set__  # the slots behind UUID's immutability
_set_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def uuid_from_int(number: int) -> uuid.UUID:
    """The object uuid.UUID(int=number) builds, without its checks (the caller made a 128-bit number)."""
    parsed = _new_uuid(uuid.UUID)
    _set_int(parsed, number)
    _set_is_safe(parsed, _UNKNOWN_SAFETY)
    return parsed


def parse_event_id(text: str) -> uuid.UUID | Rejection:
    if not text:
        return Rejection("event_id", "required: a UUID made by the sender")
    if _CANONICAL_UUID.fullmatch(text) is not None:
        return uuid_from_int(int(text.replace("-", ""), 16))  # what uuid.UUID(text) would build
    try:
        return uuid.UUID(text)
    except ValueError:
        return Rejection("event_id", "not a UUID")


@lru_cache(maxsize=8)
def epoch_seconds(now: datetime) -> int:
    return int(now.timestamp())


def _check_time(field: str, seconds: int, now_s: int, limits: Limits) -> Rejection | None:
    if seconds > now_s + limits.max_future_s:
        return Rejection(field, f"more than {limits.max_future_s} s in the future")
    if seconds < now_s - limits.max_age_s:
        return Rejection(field, f"more than {limits.max_age_s} s in the past")
    return _check_storable_time(field, seconds)


def _check_storable_time(field: str, seconds: int) -> Rejection | None:
    if seconds not in DATETIME_SECONDS:
        return Rejection(field, "outside what the store holds (1970-01-01 to 2106-02-07 06:28:15 UTC)")
    return None


def _check_lengths(event: analytics_pb2.FrontendEvent | analytics_pb2.BackendEvent, limits: tuple) -> Rejection | None:
    for name, longest in limits:
        if len(getattr(event, name)) > longest:
            return Rejection(name, f"longer than {longest} characters")
    return None


def frontend_row(
    event: analytics_pb2.FrontendEvent, event_id: uuid.UUID, now: datetime, limits: Limits, policy: PrivacyPolicy
) -> Row | Rejection:
    """The frontend_events row of a valid event (event_id already parsed).

    Each protobuf field is read once; the length limits are checked in one expression and, only when
    one is exceeded, again field by field (in FRONTEND_LIMITS order) to name it."""
    tenant_id = event.tenant_id
    if not tenant_id:
        return Rejection("tenant_id", "required")
    visitor_id = event.visitor_id
    if not visitor_id:
        return Rejection("visitor_id", "required")
    event_type = FRONTEND_TYPES.get(event.type)
    if event_type is None:
        return Rejection("type", "unknown or unset front-end event type")
    category, action = event.category, event.action
    if event_type == "track_event" and not (category and action):
        return Rejection("category" if not category else "action", "required for a tracked event")
    if not event.HasField("client_time"):
        return Rejection("client_time", "required")
    client_s = event.client_time.seconds
    problem = _check_time("client_time", client_s, epoch_seconds(now), limits)
    if problem is not None:
        return problem
    session_id, user_id, page_url, referrer = event.session_id, event.user_id, event.page_url, event.referrer
    user_agent, language, screen, label = event.user_agent, event.language, event.screen, event.label
    request_id = event.request_id
    if (  # the limits of FRONTEND_LIMITS, inline
        len(tenant_id) > 64
        or len(visitor_id) > 128
        or len(session_id) > 128
        or len(user_id) > 128
        or len(page_url) > 2048
        or len(referrer) > 2048
        or len(user_agent) > 512
        or len(language) > 32
        or len(screen) > 32
        or len(category) > 128
        or len(action) > 128
        or len(label) > 256
        or len(request_id) > 128
    ):
        return _check_lengths(event, FRONTEND_LIMITS) or Rejection("", "a field is too long")
    server_time = now
    if event.HasField("server_time"):
        server_s = event.server_time.seconds
        problem = _check_storable_time("server_time", server_s)
        if problem is not None:
            return problem
        server_time = utc_time(server_s)
    names: list[str] = []
    values: list[str] = []
    custom_vars = event.custom_vars
    if len(custom_vars):
        for name, value in custom_vars.items():
            if len(name) > MAX_CUSTOM_VAR_CHARS or len(value) > MAX_CUSTOM_VAR_CHARS:
                return Rejection("custom_vars", f"a name or value is longer than {MAX_CUSTOM_VAR_CHARS} characters")
            names.append(name)
            values.append(value)
        if len(names) > MAX_CUSTOM_VARS:
            return Rejection("custom_vars", f"more than {MAX_CUSTOM_VARS} entries")
    return (
        event_id,
        tenant_id,
        utc_time(client_s),
        server_time,
        visitor_id,
        session_id,
        user_id,
        scrub_url(page_url),
        scrub_url(referrer),
        user_agent,
        device_class(user_agent),
        language,
        screen,
        event_type,
        category,
        action,
        scrub_label(label, policy),
        event.value if event.HasField("value") else None,
        request_id,
        names,
        values,
        now,
    )


def backend_row(
    event: analytics_pb2.BackendEvent, event_id: uuid.UUID, now: datetime, limits: Limits, policy: PrivacyPolicy
) -> Row | Rejection:
    """The backend_events row of a valid event (event_id already parsed); fields read once, as above."""
    tenant_id = event.tenant_id
    if not tenant_id:
        return Rejection("tenant_id", "required")
    event_type = BACKEND_TYPES.get(event.type)
    if event_type is None:
        return Rejection("type", "unknown or unset back-end event type")
    if not event.HasField("time"):
        return Rejection("time", "required")
    time_s = event.time.seconds
    problem = _check_time("time", time_s, epoch_seconds(now), limits)
    if problem is not None:
        return problem
    user_id, request_id, job_id, variant = event.user_id, event.request_id, event.job_id, event.variant
    error_code, policy_name = event.error_code, event.policy
    if (  # the limits of BACKEND_LIMITS, inline
        len(tenant_id) > 64
        or len(user_id) > 128
        or len(request_id) > 128
        or len(job_id) > 128
        or len(variant) > 64
        or len(error_code) > 64
        or len(policy_name) > 64
        or len(event.base_request_id) > 128
        or len(event.template_id) > 64
    ):
        return _check_lengths(event, BACKEND_LIMITS) or Rejection("", "a field is too long")
    kind = KINDS.get(event.kind)
    if kind is None:
        return Rejection("kind", "unknown generation kind")
    latency_s = event.latency_s
    if not (math.isfinite(latency_s) and latency_s >= 0):
        return Rejection("latency_s", "must be a finite number >= 0")
    true_cfg_scale = event.true_cfg_scale
    if not math.isfinite(true_cfg_scale):
        return Rejection("true_cfg_scale", "must be finite")
    prompt = event.prompt
    language = LANGUAGES.get(prompt.language)
    if language is None:
        return Rejection("prompt.language", "unknown language class")
    prompt_hash, prompt_length = prompt.hash, prompt.length
    if len(prompt_hash) > MAX_PROMPT_HASH_CHARS:
        return Rejection("prompt.hash", f"longer than {MAX_PROMPT_HASH_CHARS} characters")
    if prompt_length > MAX_PROMPT_LENGTH:
        return Rejection("prompt.length", f"more than {MAX_PROMPT_LENGTH}")
    return (
        event_id,
        tenant_id,
        utc_time(time_s),
        user_id,
        request_id,
        job_id,
        event_type,
        variant,
        kind,
        event.width,
        event.height,
        event.steps,
        true_cfg_scale,
        event.num_images,
        event.seed,
        latency_s,
        error_code,
        prompt_length,
        language,
        prompt_hash,
        # Defence in depth: the gateway redacts and truncates already; a sender that did not (or an
        # older redaction rule) must not put PII or a whole prompt into the table.
        policy.scrub(prompt.redacted),
        policy_name,
        int(event.has_negative_prompt),
        now,
        prompt.signature,
        event.base_request_id,
        event.template_id,
    )


def rejected_row(
    stream: str, event_id: str, tenant_id: str, batch_id: str, rejection: Rejection, size_bytes: int, now: datetime
) -> Row:
    return (now, stream, event_id[:64], tenant_id[:64], batch_id[:64], rejection.field, rejection.reason, size_bytes)
