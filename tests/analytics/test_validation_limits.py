"""The length limits validation checks inline (for speed) are exactly FRONTEND_LIMITS / BACKEND_LIMITS:
a field at its limit is accepted, one character more is rejected naming that field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from inkloop.prompts import PrivacyPolicy
from inkloop.v1 import analytics_pb2 as pb
from inkloop_analytics.validation import BACKEND_LIMITS, FRONTEND_LIMITS, Limits, Rejection, backend_row, frontend_row

from .builders import backend, track

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = PrivacyPolicy(salt="test-salt")


@pytest.mark.parametrize(("field", "limit"), FRONTEND_LIMITS)
def test_frontend_length_limit(field: str, limit: int) -> None:
    for length, accepted in ((limit, True), (limit + 1, False)):
        fields = {"category": "generate", "action": "click", field: "x" * length}
        event = track(NOW, "v1", **fields)
        row = frontend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
        assert (not isinstance(row, Rejection)) == accepted, (field, length, row)
        if not accepted:
            assert isinstance(row, Rejection) and row.field == field


@pytest.mark.parametrize(("field", "limit"), BACKEND_LIMITS)
def test_backend_length_limit(field: str, limit: int) -> None:
    for length, accepted in ((limit, True), (limit + 1, False)):
        fields = {"request_id": "r1", "job_id": "j1", field: "x" * length}
        event = backend(NOW, pb.BACKEND_EVENT_TYPE_REQUESTED, **fields)
        row = backend_row(event, uuid.UUID(event.event_id), NOW, Limits(), POLICY)
        assert (not isinstance(row, Rejection)) == accepted, (field, length, row)
        if not accepted:
            assert isinstance(row, Rejection) and row.field == field
