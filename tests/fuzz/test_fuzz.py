"""Every RPC of the three services and every gateway HTTP endpoint, fed random and mutated-valid
requests: the answer is always a status the client caused, and every service stays SERVING.

Bounded for CI (about 400 examples in all, derandomized, no example database); bench/fuzz.py runs
the same cases by the ten thousand.
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .cases import HTTP_TARGETS, Fuzzer, draw_grpc_case, draw_http_case, methods

FUZZ = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", methods(), ids=lambda method: method.full_name.removeprefix("inkloop.v1."))
@FUZZ
@given(data=st.data())
async def test_every_rpc_answers_with_a_client_status(
    fuzzer: Fuzzer, method: MethodDescriptor, data: st.DataObject
) -> None:
    case = draw_grpc_case(data, method, fuzzer.ctx)
    outcome = await fuzzer.run(case)
    assert not outcome.fault, f"{outcome.label}: {outcome.detail}\n{case}"
    assert await fuzzer.not_serving() == [], f"after {case}"


@pytest.mark.parametrize("target", sorted(HTTP_TARGETS))
@settings(FUZZ, max_examples=15)
@given(data=st.data())
async def test_every_http_endpoint_answers_below_500(fuzzer: Fuzzer, target: str, data: st.DataObject) -> None:
    case = draw_http_case(data, target, fuzzer.ctx)
    outcome = await fuzzer.run(case)
    assert not outcome.fault, f"{outcome.label}: {outcome.detail}\n{case}"
    assert await fuzzer.not_serving() == [], f"after {case}"


async def test_no_fuzzed_job_ended_with_a_server_fault(fuzzer: Fuzzer) -> None:
    """Runs after the cases above (file order): their submitted jobs all end, none INTERNAL."""
    assert await fuzzer.failed_jobs() == []


def test_every_service_of_the_protos_is_fuzzed() -> None:
    """The RPC list comes from the generated descriptors, so a new RPC cannot be left out."""
    services = {method.containing_service.full_name for method in methods()}
    assert {
        "inkloop.v1.InferenceService",
        "inkloop.v1.GatewayService",
        "inkloop.v1.AdminService",
        "inkloop.v1.AnalyticsService",
    } <= services
