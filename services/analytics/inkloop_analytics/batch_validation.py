"""Validation of whole batches: what `validation.frontend_row` / `backend_row` give for each event,
computed column by column (each field read once into a list, each check run over a whole column in C,
rows zipped together), at a fraction of the cost of one call per event. Ingest, the hot path, uses
these. Only events a column check flags go through the one-event functions, to name their problem
exactly as those would.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2
from inkloop_analytics.devices import device_class
from inkloop_analytics.privacy import scrub_label, scrub_url
from inkloop_analytics.tables import Row
from inkloop_analytics.validation import (
    BACKEND_LIMITS,
    BACKEND_TYPES,
    DATETIME_SECONDS,
    FRONTEND_LIMITS,
    FRONTEND_TYPES,
    KINDS,
    LANGUAGES,
    MAX_PROMPT_HASH_CHARS,
    MAX_PROMPT_LENGTH,
    Limits,
    Rejection,
    backend_row,
    epoch_seconds,
    frontend_row,
    parse_event_id,
    utc_time,
    uuid_from_int,
)

_Value = TypeVar("_Value", bound=Hashable)
_UUID_DASHES = (8, 13, 18, 23)


def parse_event_ids(texts: Sequence[str]) -> list[uuid.UUID | Rejection]:
    """parse_event_id of each text. When every text is in the canonical form (what senders make) the
    whole batch is checked and converted at once."""
    data = _canonical_bytes(texts)
    if data is None:
        return [parse_event_id(text) for text in texts]
    halves = iter(struct.unpack(f">{len(data) // 8}Q", data))
    return [uuid_from_int(high << 64 | low) for high, low in zip(halves, halves, strict=True)]


def id_list_text(texts: Sequence[str], ids: Sequence[uuid.UUID]) -> str:
    """The ids, comma-separated, in canonical text (what ClickHouse's toUUID reads). `texts` are the
    ids as sent: when all are canonical already (the usual case) they are used as they are."""
    if _canonical_bytes(texts) is not None:
        return ",".join(texts).lower()
    return ",".join([str(event_id) for event_id in ids])


def _canonical_bytes(texts: Sequence[str]) -> bytes | None:
    """The 16 bytes of each text, if all have the canonical form: 36 characters, dashes where a UUID
    has them, hex digits (either case) elsewhere. None otherwise, or for no texts."""
    count = len(texts)
    joined = "".join(texts)
    if not (
        count > 0
        and len(joined) == 36 * count
        and joined.count("-") == 4 * count
        and all(joined[position::36] == "-" * count for position in _UUID_DASHES)
    ):
        return None
    try:
        data = bytes.fromhex(joined.replace("-", ""))
    except ValueError:
        return None
    return data if len(data) == 16 * count else None  # fromhex skips whitespace: then it falls short


def _mapped(function: Callable[[_Value], Any], values: list[_Value]) -> list[Any]:
    """function(value) for each value, computed once per distinct value (URLs, agents, labels repeat)."""
    memo = {value: function(value) for value in set(values)}
    return list(map(memo.__getitem__, values))


def _flag_long(flagged: set[int], columns: dict[str, list[str]], limits: tuple[tuple[str, int], ...]) -> None:
    for name, longest in limits:
        column = columns[name]
        if max(map(len, column), default=0) > longest:
            flagged.update(index for index, value in enumerate(column) if len(value) > longest)


def _flag_times(flagged: set[int], seconds: list[int], now: datetime, limits: Limits) -> dict[int, datetime]:
    """Flags times out of bounds; the datetimes of the others, by second."""
    now_s = epoch_seconds(now)
    low = max(now_s - limits.max_age_s, DATETIME_SECONDS.start)
    high = min(now_s + limits.max_future_s, DATETIME_SECONDS.stop - 1)
    if seconds and (min(seconds) < low or max(seconds) > high):
        flagged.update(index for index, second in enumerate(seconds) if not low <= second <= high)
    return {second: utc_time(second) for second in set(seconds) if low <= second <= high}


def _server_times(flagged: set[int], events: Sequence[analytics_pb2.FrontendEvent], now: datetime) -> list[Any]:
    """Each event's server_time (now where unset). A second no DateTime column holds flags its events:
    the one-event path names the problem."""
    seconds = [event.server_time.seconds if event.HasField("server_time") else None for event in events]
    memo: dict[int | None, datetime] = {None: now}
    for second in set(seconds):
        if second is None:
            continue
        if second in DATETIME_SECONDS:
            memo[second] = utc_time(second)
        else:
            flagged.update(index for index, other in enumerate(seconds) if other == second)
    return [memo.get(second) for second in seconds]


def _flag_falsy(flagged: set[int], values: list[Any]) -> None:
    if not all(values):
        flagged.update(index for index, value in enumerate(values) if not value)


def _flag_unknown(flagged: set[int], values: list[Any], known: dict[Any, Any]) -> None:
    if not known.keys() >= set(values):
        flagged.update(index for index, value in enumerate(values) if value not in known)


def _with_flagged(
    rows: list[Row | Rejection],
    flagged: set[int],
    ids: list[uuid.UUID | Rejection],
    one: Callable[[Any, uuid.UUID], Row | Rejection],
    events: Sequence[Any],
) -> list[Row | Rejection]:
    for index in flagged:
        event_id = ids[index]
        rows[index] = event_id if isinstance(event_id, Rejection) else one(events[index], event_id)
    return rows


_FRONTEND_STRINGS = tuple(name for name, _ in FRONTEND_LIMITS)
_BACKEND_STRINGS = tuple(name for name, _ in BACKEND_LIMITS)
_TRACK_EVENT = analytics_pb2.FRONTEND_EVENT_TYPE_TRACK_EVENT


def frontend_rows(
    events: Sequence[analytics_pb2.FrontendEvent],
    ids: list[uuid.UUID | Rejection],
    now: datetime,
    limits: Limits,
    policy: PrivacyPolicy,
) -> list[Row | Rejection]:
    """frontend_row of each event; `ids` are their parse_event_ids (a Rejection there is the event's result)."""
    text = {name: [getattr(event, name) for event in events] for name in _FRONTEND_STRINGS}
    types = [event.type for event in events]
    has_time = [event.HasField("client_time") for event in events]
    seconds = [event.client_time.seconds for event in events]
    # Events with custom variables take the one-event path: few carry any, and those are checked entry by entry.
    flagged = {index for index, event in enumerate(events) if len(event.custom_vars)}
    flagged.update(index for index, event_id in enumerate(ids) if isinstance(event_id, Rejection))
    _flag_falsy(flagged, text["tenant_id"])
    _flag_falsy(flagged, text["visitor_id"])
    _flag_unknown(flagged, types, FRONTEND_TYPES)
    category, action = text["category"], text["action"]
    if not (all(category) and all(action)):
        flagged.update(
            index
            for index, kind in enumerate(types)
            if kind == _TRACK_EVENT and not (category[index] and action[index])
        )
    _flag_falsy(flagged, has_time)
    times = _flag_times(flagged, seconds, now, limits)
    _flag_long(flagged, text, FRONTEND_LIMITS)
    server_times = _server_times(flagged, events, now)
    values = [event.value if event.HasField("value") else None for event in events]
    user_agent = text["user_agent"]
    rows: list[Row | Rejection] = list(
        zip(
            ids,
            text["tenant_id"],
            map(times.get, seconds),
            server_times,
            text["visitor_id"],
            text["session_id"],
            text["user_id"],
            _mapped(scrub_url, text["page_url"]),
            _mapped(scrub_url, text["referrer"]),
            user_agent,
            _mapped(device_class, user_agent),
            text["language"],
            text["screen"],
            map(FRONTEND_TYPES.get, types),
            category,
            action,
            _mapped(partial(scrub_label, policy=policy), text["label"]),
            values,
            text["request_id"],
            [[] for _ in events],
            [[] for _ in events],
            [now] * len(events),
            strict=True,
        )
    )
    return _with_flagged(rows, flagged, ids, partial(frontend_row, now=now, limits=limits, policy=policy), events)


def backend_rows(
    events: Sequence[analytics_pb2.BackendEvent],
    ids: list[uuid.UUID | Rejection],
    now: datetime,
    limits: Limits,
    policy: PrivacyPolicy,
) -> list[Row | Rejection]:
    """backend_row of each event; `ids` are their parse_event_ids (a Rejection there is the event's result)."""
    text = {name: [getattr(event, name) for event in events] for name in _BACKEND_STRINGS}
    types = [event.type for event in events]
    has_time = [event.HasField("time") for event in events]
    seconds = [event.time.seconds for event in events]
    kinds = [event.kind for event in events]
    latencies = [event.latency_s for event in events]
    cfg_scales = [event.true_cfg_scale for event in events]
    prompts = [event.prompt for event in events]
    languages = [prompt.language for prompt in prompts]
    hashes = [prompt.hash for prompt in prompts]
    lengths = [prompt.length for prompt in prompts]
    flagged = {index for index, event_id in enumerate(ids) if isinstance(event_id, Rejection)}
    _flag_falsy(flagged, text["tenant_id"])
    _flag_unknown(flagged, types, BACKEND_TYPES)
    _flag_falsy(flagged, has_time)
    times = _flag_times(flagged, seconds, now, limits)
    _flag_long(flagged, text, BACKEND_LIMITS)
    _flag_unknown(flagged, kinds, KINDS)
    if not (all(map(math.isfinite, latencies)) and min(latencies, default=0) >= 0):
        flagged.update(
            index for index, latency in enumerate(latencies) if not (math.isfinite(latency) and latency >= 0)
        )
    if not all(map(math.isfinite, cfg_scales)):
        flagged.update(index for index, scale in enumerate(cfg_scales) if not math.isfinite(scale))
    _flag_unknown(flagged, languages, LANGUAGES)
    if max(map(len, hashes), default=0) > MAX_PROMPT_HASH_CHARS:
        flagged.update(index for index, prompt_hash in enumerate(hashes) if len(prompt_hash) > MAX_PROMPT_HASH_CHARS)
    if max(lengths, default=0) > MAX_PROMPT_LENGTH:
        flagged.update(index for index, length in enumerate(lengths) if length > MAX_PROMPT_LENGTH)
    rows: list[Row | Rejection] = list(
        zip(
            ids,
            text["tenant_id"],
            map(times.get, seconds),
            text["user_id"],
            text["request_id"],
            text["job_id"],
            map(BACKEND_TYPES.get, types),
            text["variant"],
            map(KINDS.get, kinds),
            [event.width for event in events],
            [event.height for event in events],
            [event.steps for event in events],
            cfg_scales,
            [event.num_images for event in events],
            [event.seed for event in events],
            latencies,
            text["error_code"],
            lengths,
            map(LANGUAGES.get, languages),
            hashes,
            # Defence in depth, as in backend_row.
            _mapped(policy.scrub, [prompt.redacted for prompt in prompts]),
            text["policy"],
            [int(event.has_negative_prompt) for event in events],
            [now] * len(events),
            [prompt.signature for prompt in prompts],
            text["base_request_id"],
            text["template_id"],
            strict=True,
        )
    )
    return _with_flagged(rows, flagged, ids, partial(backend_row, now=now, limits=limits, policy=policy), events)
