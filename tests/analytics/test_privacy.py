"""No raw prompt and no PII in any column of any table, whatever senders put in the events."""

from __future__ import annotations

from datetime import timedelta

from inkloop.v1 import analytics_pb2 as pb
from inkloop.visitors import daily_visitor_id
from inkloop_analytics.service import Analytics
from inkloop_analytics.storage import ClickHouse

from .builders import backend, page_view, track
from .generator import T0

MARKER = "zqxMARKER9137"
EMAIL = "jane.doe@example.com"
PHONE = "13812345678"
# The marker sits past the 64 characters a redacted excerpt keeps.
PROMPT = f"a cat, mail {EMAIL} or call {PHONE}, painted in the style of an old master {MARKER}"
SECRETS = (MARKER, EMAIL, PHONE, "jane.doe", "1381234")

TABLES = ("frontend_events", "backend_events", "rejected_events", "fired_alerts")


def every_value(clickhouse: ClickHouse) -> list[str]:
    values: list[str] = []
    for table in TABLES:
        for row in clickhouse.query(f"SELECT * FROM {table}"):
            values.extend(str(value) for value in row)
    return values


async def test_no_raw_prompt_or_pii_is_stored_anywhere(analytics: Analytics, clickhouse: ClickHouse) -> None:
    # A careless sender: the raw prompt where the redacted excerpt belongs, in labels, in URLs.
    careless = pb.PromptFeatures(length=len(PROMPT), language=pb.LANGUAGE_CLASS_EN, hash="ab" * 32, redacted=PROMPT)
    front = [
        track(T0, "v1", "generate", "click", label=PROMPT, request_id="r1"),
        page_view(T0, "v1", page_url=f"https://inkloop.test/?email={EMAIL}&tel={PHONE}", referrer=f"mailto:{EMAIL}"),
        track(T0, "v1", "generate", "click", label=PROMPT, event_id="bad id"),  # rejected, payload not kept
    ]
    back = [
        backend(T0, pb.BACKEND_EVENT_TYPE_REQUESTED, "r1", prompt=careless),
        backend(T0 + timedelta(seconds=9), pb.BACKEND_EVENT_TYPE_SUCCEEDED, "r1", prompt=careless, tenant_id=""),
    ]
    result = await analytics.ingest(front, back, "")
    assert (result.count("accepted"), result.count("rejected")) == (3, 2)
    values = every_value(clickhouse)
    assert len(values) > 50
    leaks = [(secret, value) for value in values for secret in SECRETS if secret in value]
    assert leaks == []
    [(redacted, length, hash_)] = clickhouse.query(
        "SELECT prompt_redacted, prompt_length, prompt_hash FROM backend_events"
    )
    assert redacted == "a cat, mail [email] or call [phone], painted in the style of an old"[:64]
    assert (length, hash_) == (len(PROMPT), "ab" * 32)
    [(label,)] = clickhouse.query("SELECT label FROM frontend_events WHERE type = 'track_event'")
    excerpt, _, label_hash = label.rpartition("#")
    assert excerpt.startswith("a cat, mail [email] or call [phone]") and len(label_hash) == 16


async def test_policy_without_text_keeps_no_excerpt(clickhouse_url: str, make_settings, clickhouse: ClickHouse) -> None:
    from .generator import NOW

    service = Analytics(make_settings(clickhouse_url, privacy_store_text="none"), clock=lambda: NOW)
    await service.open()
    await service.connect()
    try:
        features = pb.PromptFeatures(length=5, language=pb.LANGUAGE_CLASS_EN, hash="cd" * 32, redacted=f"{MARKER} x")
        label = f"{MARKER} is a long prompt-like label"
        await service.ingest(
            [track(T0, "v1", "generate", "click", label=label)], [backend(T0, 1, "r", prompt=features)], ""
        )
    finally:
        await service.close()
    assert clickhouse.query("SELECT prompt_redacted FROM backend_events") == [("",)]
    [(stored_label,)] = clickhouse.query("SELECT label FROM frontend_events")
    assert stored_label.startswith("#") and MARKER not in stored_label


def test_daily_visitor_id_changes_every_day_and_hides_the_ip() -> None:
    day = T0.date()
    first = daily_visitor_id("203.0.113.9", "UA", "t1", day, "secret")
    assert first == daily_visitor_id("203.0.113.9", "UA", "t1", day, "secret")
    assert len(first) == 32 and "203" not in first
    others = {
        daily_visitor_id("203.0.113.9", "UA", "t1", day + timedelta(days=1), "secret"),
        daily_visitor_id("203.0.113.10", "UA", "t1", day, "secret"),
        daily_visitor_id("203.0.113.9", "UA2", "t1", day, "secret"),
        daily_visitor_id("203.0.113.9", "UA", "t2", day, "secret"),
        daily_visitor_id("203.0.113.9", "UA", "t1", day, "other secret"),
    }
    assert first not in others and len(others) == 5
