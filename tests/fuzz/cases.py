"""Fuzz cases against a running stack: drawn with hypothesis, run over gRPC or HTTP, judged.

A case is drawn first (`draw_grpc_case`, `draw_http_case`: pure, synchronous) and run afterwards
(`Fuzzer.run`), so bench/fuzz.py can draw thousands and run them concurrently, while the tests run
each as it is drawn and let hypothesis shrink a failure.

The property: every answer is a status the client caused (OK, INVALID_ARGUMENT, NOT_FOUND, …), never
INTERNAL, UNKNOWN or UNAVAILABLE; no job fails INTERNAL; HTTP never answers 5xx; every service is
still SERVING afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import grpc
import yarl
from google.protobuf import json_format, text_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st

from inkloop.v1 import analytics_pb2, gateway_pb2, gateway_pb2_grpc, inference_pb2

from .messages import cheapen, messages, mutations, strings
from .valid import TENANT, Context, valid_request, valid_variants

#: Statuses a caller can cause by what it sends. UNAVAILABLE is not one: every back end is up.
CLIENT_STATUSES = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
    }
)
#: How a job may end in a stream without a server fault (a fuzzed CancelJob may cancel it).
JOB_FAILURE_CODES = CLIENT_STATUSES | {"CANCELLED"}

#: Which server each proto file's services run in.
SERVERS = {"inkloop/v1/inference.proto": "inference", "inkloop/v1/analytics.proto": "analytics"}
PROTO_MODULES = (inference_pb2, gateway_pb2, analytics_pb2)

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def methods() -> list[MethodDescriptor]:
    """Every RPC of every service in the generated stubs."""
    return [
        method
        for module in PROTO_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def server_of(method: MethodDescriptor) -> str:
    return SERVERS.get(method.containing_service.file.name, "gateway")


# ---- drawing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcCase:
    method: MethodDescriptor
    requests: tuple[Message, ...]
    metadata: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        # Text format, not JSON: it prints what JSON refuses (timestamps out of range, NaN).
        bodies = " | ".join(text_format.MessageToString(r, as_one_line=True)[:400] for r in self.requests)
        return f"{self.method.full_name} metadata={list(self.metadata)} request={bodies}"


@dataclass(frozen=True)
class HttpCase:
    target: str
    verb: str
    path: str  # already percent-encoded, with its query
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def __str__(self) -> str:
        body = None if self.body is None else self.body[:400]
        return f"{self.target}: {self.verb} {self.path} headers={list(self.headers)} body={body!r}"


def _request(data: st.DataObject, method: MethodDescriptor, ctx: Context) -> Message:
    """Half random, half a valid request with a few fields changed; always cheap to run."""
    if data.draw(st.booleans(), label="mutated valid"):
        message = data.draw(mutations(valid_request(method.input_type, ctx)), label="request")
    else:
        message = data.draw(messages(method.input_type), label="request")
    return cheapen(message)


def authorization(data: st.DataObject, ctx: Context) -> str | None:
    """A header value: one of the stack's keys, or nothing, or something malformed."""
    role = data.draw(st.sampled_from(["user", "analyst", "admin", "other", "none", "garbage"]), label="key")
    if role in ctx.secrets:
        return f"Bearer {ctx.secrets[role]}"
    if role == "none":
        return None
    return data.draw(
        st.one_of(
            st.sampled_from(["Bearer", "Bearer ", "Basic abc", "bearer ink_x", "Bearer ink_AAAAAAAAAAAA_" + "B" * 43]),
            st.text(_ASCII, max_size=80),
        ),
        label="malformed key",
    )


def _grpc_metadata(data: st.DataObject, method: MethodDescriptor, ctx: Context) -> tuple[tuple[str, str], ...]:
    metadata: list[tuple[str, str]] = []
    if server_of(method) == "gateway":
        header = authorization(data, ctx)
        if header is not None:
            metadata.append(("authorization", header.strip()))  # gRPC refuses surrounding blanks
    request_id = data.draw(st.none() | st.text(_ASCII, max_size=200), label="x-request-id")
    if request_id:
        metadata.append(("x-request-id", request_id.strip() or "x"))
    return tuple(metadata)


def draw_grpc_case(data: st.DataObject, method: MethodDescriptor, ctx: Context) -> GrpcCase:
    count = data.draw(st.integers(1, 3), label="stream length") if method.client_streaming else 1
    requests = tuple(_request(data, method, ctx) for _ in range(count))
    return GrpcCase(method, requests, _grpc_metadata(data, method, ctx))


# JSON of every shape, including what Python's json module accepts beyond the standard (NaN, Infinity).
_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**64, 1e308, -0.0, 1e-320]),
    st.floats(),
    strings(),
)
JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings(), inner, max_size=4),
    max_leaves=12,
)
_ODD_BODIES = (b"", b"0", b"1e308", b"null", b"[]", b'"x"', b"{", b"[" * 100_000, b"\xff\xfe", b'{"a":' * 50_000)


@st.composite
def json_mutations(draw: st.DrawFn, valid: Any) -> Any:
    """`valid` (decoded JSON) with one value somewhere in it replaced by random JSON, or removed."""
    paths = list(_json_paths(valid))
    path = draw(st.sampled_from(paths))
    if not path:
        return draw(JSON_VALUES)
    copy = json.loads(json.dumps(valid))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return copy


def _json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterable[tuple[Any, ...]]:
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _json_paths(item, (*prefix, key))


def _body(data: st.DataObject, valid: Any) -> bytes:
    kind = data.draw(st.sampled_from(["mutated", "json", "odd", "bytes"]), label="body kind")
    if kind == "mutated":
        return json.dumps(data.draw(json_mutations(valid), label="body")).encode()
    if kind == "json":
        return json.dumps(data.draw(JSON_VALUES, label="body")).encode()
    if kind == "odd":
        return data.draw(st.sampled_from(_ODD_BODIES), label="body")
    return data.draw(st.binary(max_size=200), label="body")


def _headers(data: st.DataObject, ctx: Context, *, auth: bool = True) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    header = authorization(data, ctx) if auth else None
    if header is not None:
        headers.append(("Authorization", header))
    content_type = data.draw(
        st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded"]),
        label="content type",
    )
    if content_type:
        headers.append(("Content-Type", content_type))
    agent = data.draw(st.none() | st.text(_ASCII, max_size=600), label="user agent")
    if agent is not None:
        headers.append(("User-Agent", agent))
    return tuple(headers)


def _segment(data: st.DataObject, valid: str) -> str:
    value = data.draw(st.one_of(st.just(valid), strings(), st.text(_ASCII, max_size=30)), label="path segment")
    return quote(value, safe="")


def _query(data: st.DataObject, valid: dict[str, str]) -> str:
    params = dict(valid)
    if data.draw(st.booleans(), label="mutate query"):
        name = data.draw(st.sampled_from([*valid, "download", "tenant", "expires", "sig", "hours", "x"]))
        params[name] = data.draw(st.one_of(strings(), st.sampled_from(["", "0", "-1", "nan", "inf", "1e308"])))
    return urlencode(params)


def _collect_batch() -> dict[str, Any]:
    return {
        "sid": "s1",
        "uid": "u1",
        "lang": "zh-CN",
        "scr": "1920x1080",
        "ev": [
            {"id": str(uuid.uuid4()), "t": 1767225600000, "type": "ev", "c": "generate", "a": "click", "v": 1},
            {"id": str(uuid.uuid4()), "type": "pv", "url": "http://x/#a", "cv": {"k": "v"}},
        ],
    }


def _submit_json(data: st.DataObject, ctx: Context) -> Any:
    descriptor = gateway_pb2.SubmitJobRequest.DESCRIPTOR
    message = cheapen(data.draw(mutations(valid_request(descriptor, ctx)), label="submit request"))
    return json_format.MessageToDict(message)


DASHBOARD_QUERIES = ("funnel", "discrepancy", "prompts", "adoption", "variants", "alerts")


def _draw_collect(data: st.DataObject, ctx: Context) -> HttpCase:
    return HttpCase("collect", "POST", "/collect", _headers(data, ctx, auth=False), _body(data, _collect_batch()))


def _draw_submit(data: st.DataObject, ctx: Context) -> HttpCase:
    body = _body(data, _submit_json(data, ctx))
    return HttpCase("jobs.submit", "POST", "/v1/jobs", _headers(data, ctx), body)


def _draw_job(target: str, verb: str, suffix: str) -> Any:
    def draw(data: st.DataObject, ctx: Context) -> HttpCase:
        path = f"/v1/jobs/{_segment(data, ctx.job_id)}{suffix}"
        return HttpCase(target, verb, path, _headers(data, ctx), None)

    return draw


def _draw_image(data: st.DataObject, ctx: Context) -> HttpCase:
    signed_path, _, signed_query = ctx.download_path.partition("?")
    extension = data.draw(st.sampled_from(["png", "jpg", "jpeg", "webp", "gif", "", "png.png"]), label="extension")
    name = data.draw(
        st.one_of(st.just(f"{ctx.image_id}.{extension}"), st.just(signed_path.rsplit("/", 1)[-1]), strings()),
        label="image name",
    )
    valid_query = dict(part.split("=", 1) for part in signed_query.split("&") if "=" in part)
    if data.draw(st.booleans(), label="signed"):
        query = _query(data, valid_query)
        headers: tuple[tuple[str, str], ...] = ()
    else:
        query = _query(data, {"download": "1"} if data.draw(st.booleans()) else {})
        headers = _headers(data, ctx)
    return HttpCase("images", "GET", f"/v1/images/{quote(name, safe='')}?{query}", headers, None)


def _draw_dashboard(data: st.DataObject, ctx: Context) -> HttpCase:
    name = data.draw(st.one_of(st.sampled_from(DASHBOARD_QUERIES), strings()), label="query")
    query = _query(data, {"hours": data.draw(st.sampled_from(["24", "1", "2160"]))})
    return HttpCase("analytics", "GET", f"/v1/analytics/{quote(name, safe='')}?{query}", _headers(data, ctx), None)


HTTP_TARGETS = {
    "collect": _draw_collect,
    "jobs.submit": _draw_submit,
    "jobs.get": _draw_job("jobs.get", "GET", ""),
    "jobs.events": _draw_job("jobs.events", "GET", "/events"),
    "jobs.cancel": _draw_job("jobs.cancel", "POST", ":cancel"),
    "images": _draw_image,
    "analytics": _draw_dashboard,
}


def draw_http_case(data: st.DataObject, target: str, ctx: Context) -> HttpCase:
    return HTTP_TARGETS[target](data, ctx)


# ---- running and judging ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    #: "OK", a gRPC status name, "job failed: <code>" or "HTTP <status>"
    label: str
    fault: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Stack:
    """Addresses of a running stack: gRPC host:port per server, and the gateway's HTTP base URL."""

    grpc: dict[str, str]
    http_url: str


def _job_failures(replies: Iterable[Message]) -> list[str]:
    """Codes of the failures streamed in JobEvents and GenerationEvents."""
    failed = [
        reply.failed for reply in replies if "failed" in reply.DESCRIPTOR.fields_by_name and reply.HasField("failed")
    ]
    return [failure.code for failure in failed]


def _judge_grpc(status: str, details: str, replies: list[Message]) -> Outcome:
    if status not in CLIENT_STATUSES:
        return Outcome(status, True, details)
    bad = [code for code in _job_failures(replies) if code not in JOB_FAILURE_CODES]
    if bad:
        return Outcome(f"job failed: {bad[0]}", True)
    return Outcome(status, False)


class Fuzzer:
    """Runs cases against `stack` over one channel per server and one HTTP session."""

    def __init__(self, stack: Stack, ctx: Context, timeout_s: float = 60.0) -> None:
        self.stack = stack
        self.ctx = ctx
        #: Deadline of each call: an answer later than this counts as DEADLINE_EXCEEDED, a fault.
        self.timeout_s = timeout_s
        self.channels = {
            name: grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for name, address in stack.grpc.items()
        }
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self.http.close()
        for channel in self.channels.values():
            await channel.close()

    async def run(self, case: GrpcCase | HttpCase) -> Outcome:
        began = time.perf_counter()
        outcome = await (self._run_http(case) if isinstance(case, HttpCase) else self._run_grpc_case(case))
        return dataclasses.replace(outcome, seconds=time.perf_counter() - began)

    async def _run_grpc_case(self, case: GrpcCase) -> Outcome:
        outcome = await self._run_grpc(case)
        if case.method.name == "SetVariants" and outcome.label == "OK":
            try:
                outcome = await self._submit_under_new_variants(outcome)
            finally:
                await self.restore_variants()  # later cases need the real inference target
        return outcome

    async def _submit_under_new_variants(self, accepted: Outcome) -> Outcome:
        """A submission right after variants were accepted: an unreachable target may make it
        UNAVAILABLE (the admin's mistake), but nothing the admin may set must make it INTERNAL."""
        stub = gateway_pb2_grpc.GatewayServiceStub(self.channels["gateway"])
        metadata = (("authorization", f"Bearer {self.ctx.secrets['user']}"),)
        request = valid_request(gateway_pb2.SubmitJobRequest.DESCRIPTOR, self.ctx)
        try:
            await stub.SubmitJob(request, metadata=metadata, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code().name not in CLIENT_STATUSES | {"UNAVAILABLE"}:
                return Outcome(f"SubmitJob after SetVariants: {error.code().name}", True, error.details() or "")
        return accepted

    async def _run_grpc(self, case: GrpcCase) -> Outcome:
        replies: list[Message] = []
        try:
            async for reply in self._replies(case):
                replies.append(reply)
        except grpc.aio.AioRpcError as error:
            return _judge_grpc(error.code().name, error.details() or "", replies)
        return _judge_grpc("OK", "", replies)

    async def _replies(self, case: GrpcCase) -> AsyncIterator[Message]:
        """Calls the case's method whatever its streaming kind; yields every reply."""
        method = case.method
        channel = self.channels[server_of(method)]
        path = f"/{method.containing_service.full_name}/{method.name}"
        codec: dict[str, Any] = {
            "request_serializer": lambda message: message.SerializeToString(),
            "response_deserializer": GetMessageClass(method.output_type).FromString,
        }
        options: dict[str, Any] = {"metadata": case.metadata, "timeout": self.timeout_s}
        if method.client_streaming and method.server_streaming:
            async for reply in channel.stream_stream(path, **codec)(iter(case.requests), **options):
                yield reply
        elif method.server_streaming:
            async for reply in channel.unary_stream(path, **codec)(case.requests[0], **options):
                yield reply
        elif method.client_streaming:
            yield await channel.stream_unary(path, **codec)(iter(case.requests), **options)
        else:
            yield await channel.unary_unary(path, **codec)(case.requests[0], **options)

    async def _run_http(self, case: HttpCase) -> Outcome:
        url = yarl.URL(self.stack.http_url + case.path, encoded=True)
        try:
            async with self.http.request(case.verb, url, headers=list(case.headers), data=case.body) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:  # the server dropped the connection, or hung
            return Outcome(f"HTTP {type(error).__name__}", True, str(error))
        fault = response.status >= 500
        return Outcome(f"HTTP {response.status}", fault, body[:300].decode(errors="replace") if fault else "")

    async def restore_variants(self) -> None:
        stub = gateway_pb2_grpc.AdminServiceStub(self.channels["gateway"])
        metadata = (("authorization", f"Bearer {self.ctx.secrets['admin']}"),)
        await stub.SetVariants(valid_variants(self.ctx), metadata=metadata, timeout=self.timeout_s)

    async def failed_jobs(self, settle_s: float = 120.0) -> list[str]:
        """Jobs of the fuzzed tenants that ended with a code no client causes, once none is still
        queued or running (jobs submitted by the cases run after their call has answered)."""
        deadline = asyncio.get_running_loop().time() + settle_s
        while True:
            jobs = [job for who in ("user", "other") for job in await self._all_jobs(who)]
            active = [job for job in jobs if job.state in (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING)]
            if not active or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        faults = [f"{job.job_id} still {gateway_pb2.JobState.Name(job.state)}" for job in active]
        for job in jobs:
            if job.state == gateway_pb2.JOB_STATE_FAILED and job.failure.code not in JOB_FAILURE_CODES:
                faults.append(f"{job.job_id} failed {job.failure.code}: {job.failure.message}")
        return faults

    async def _all_jobs(self, who: str) -> list[gateway_pb2.Job]:
        """Every job of the tenant of key `who`, page by page."""
        stub = gateway_pb2_grpc.GatewayServiceStub(self.channels["gateway"])
        metadata = (("authorization", f"Bearer {self.ctx.secrets[who]}"),)
        jobs: list[gateway_pb2.Job] = []
        token = ""
        while True:
            request = gateway_pb2.ListJobsRequest(page_size=100, page_token=token)
            page = await stub.ListJobs(request, metadata=metadata, timeout=self.timeout_s)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs

    async def not_serving(self) -> list[str]:
        """The servers that do not answer SERVING to a health check of the whole server ("")."""
        down = []
        for name, channel in self.channels.items():
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    down.append(f"{name}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
            except grpc.aio.AioRpcError as error:
                down.append(f"{name}: {error.code().name}")
        async with self.http.get(self.stack.http_url + "/healthz") as response:
            if response.status != 200:
                down.append(f"gateway HTTP: {response.status}")
        return down


async def seed(fuzzer: Fuzzer) -> None:
    """Fills `fuzzer.ctx` with a finished job, its image and signed URL, and a key to revoke."""
    ctx = fuzzer.ctx
    channel = fuzzer.channels["gateway"]
    user = (("authorization", f"Bearer {ctx.secrets['user']}"),)
    admin = (("authorization", f"Bearer {ctx.secrets['admin']}"),)
    jobs = gateway_pb2_grpc.GatewayServiceStub(channel)
    task = valid_request(gateway_pb2.GenerateRequest.DESCRIPTOR, ctx)
    events = [event async for event in jobs.Generate(task, metadata=user, timeout=120)]
    end = events[-1]
    assert end.HasField("succeeded"), f"the seed job did not succeed: {end}"
    ctx.job_id = end.job_id
    image = end.succeeded.images[0]
    ctx.image_id = image.image_id
    ctx.download_path = image.download_url
    created = await gateway_pb2_grpc.AdminServiceStub(channel).CreateApiKey(
        gateway_pb2.CreateApiKeyRequest(tenant_id=TENANT, role=gateway_pb2.ROLE_USER, name="fuzz victim"),
        metadata=admin,
        timeout=fuzzer.timeout_s,
    )
    ctx.victim_key_id = created.key.key_id


def changes_shared_state(case: GrpcCase | HttpCase) -> bool:
    """SetVariants may point every submission at a bogus target until it is restored."""
    return isinstance(case, GrpcCase) and case.method.name == "SetVariants"


async def run_all(fuzzer: Fuzzer, cases: list[GrpcCase | HttpCase], concurrency: int) -> list[Outcome]:
    """Runs `cases` with at most `concurrency` in flight, those that change shared state alone
    afterwards; outcomes in the cases' order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: GrpcCase | HttpCase) -> Outcome:
        async with gate:
            return await fuzzer.run(case)

    outcomes: dict[int, Outcome] = {}
    shared = [i for i, case in enumerate(cases) if changes_shared_state(case)]
    others = [i for i, case in enumerate(cases) if not changes_shared_state(case)]
    for i, outcome in zip(others, await asyncio.gather(*(one(cases[i]) for i in others)), strict=True):
        outcomes[i] = outcome
    for i in shared:
        outcomes[i] = await fuzzer.run(cases[i])
    return [outcomes[i] for i in range(len(cases))]
