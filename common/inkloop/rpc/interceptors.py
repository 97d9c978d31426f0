"""Server and client interceptors: request ids, deadlines, error mapping, metrics, access logs.

Every error kind is turned into a status here, in one place, so servicers stay glue and domain code
never touches a grpc context.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from inkloop.logs import new_request_id, request_id_var
from inkloop.metrics import GRPC_IN_FLIGHT, GRPC_LATENCY, GRPC_REQUESTS
from inkloop.rpc.status import to_status

log = logging.getLogger("inkloop.rpc")

REQUEST_ID_KEY = "x-request-id"
# Absolute deadline (time.monotonic()) of the call being served, so downstream calls inherit it.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

_QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class _MethodMetrics:
    """The labelled metric children of one method, looked up once (`labels()` costs a lock and a dict)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.in_flight = GRPC_IN_FLIGHT.labels(method)
        self.latency = GRPC_LATENCY.labels(method)
        self._requests: dict[grpc.StatusCode, Any] = {}
        # Health checks and reflection log at DEBUG, everything else one INFO line per call.
        self.log_level = logging.DEBUG if method.startswith(_QUIET_PREFIXES) else logging.INFO

    def requests(self, code: grpc.StatusCode) -> Any:
        counter = self._requests.get(code)
        if counter is None:
            counter = self._requests[code] = GRPC_REQUESTS.labels(self.method, code.name)
        return counter


class _CallScope:
    """Per-call bookkeeping: ids and deadline into context vars, then metrics and one access log line."""

    def __init__(self, metrics: _MethodMetrics, context: grpc.aio.ServicerContext) -> None:
        self.metrics = metrics
        self.method = metrics.method
        self.context = context
        self.code = grpc.StatusCode.OK
        request_id = None
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY:
                request_id = value
        self.request_id = str(request_id or new_request_id())[:128]
        remaining = context.time_remaining()
        self._request_id_token = request_id_var.set(self.request_id)
        self._deadline_token = deadline_var.set(time.monotonic() + remaining if remaining is not None else None)
        self.started = time.perf_counter()
        metrics.in_flight.inc()

    async def begin(self) -> None:
        await self.context.send_initial_metadata(((REQUEST_ID_KEY, self.request_id),))

    async def fail(self, error: BaseException) -> None:
        """Ends the call with the status `error` maps to (re-raises aborts and cancellations as they are)."""
        if isinstance(error, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
            raise error
        if isinstance(error, grpc.aio.AbortError):
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
            raise error
        status = to_status(error)
        self.code = status.code
        if status.code == grpc.StatusCode.INTERNAL:
            log.exception("unhandled error in %s", self.method, exc_info=error)
        await self.context.abort(status.code, status.details, status.trailing_metadata)

    def end(self) -> None:
        elapsed = time.perf_counter() - self.started
        metrics = self.metrics
        metrics.in_flight.dec()
        metrics.requests(self.code).inc()
        metrics.latency.observe(elapsed)
        if log.isEnabledFor(metrics.log_level):
            log.log(
                metrics.log_level,
                "rpc",
                extra={"method": self.method, "code": self.code.name, "duration_s": round(elapsed, 6)},
            )
        # A stream its client abandoned is closed from another context: nothing of ours to restore there.
        with contextlib.suppress(ValueError):
            request_id_var.reset(self._request_id_token)
            deadline_var.reset(self._deadline_token)


def _wrap_unary_response(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    metrics = _MethodMetrics(method)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        scope = _CallScope(metrics, context)
        try:
            await scope.begin()
            return await behavior(request, context)
        except (Exception, asyncio.CancelledError) as error:
            await scope.fail(error)
        finally:
            scope.end()

    return handle


def _wrap_stream_response(
    method: str, behavior: Callable[..., AsyncIterator[Any]]
) -> Callable[..., AsyncIterator[Any]]:
    metrics = _MethodMetrics(method)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        scope = _CallScope(metrics, context)
        try:
            await scope.begin()
            async for response in behavior(request, context):
                yield response
        except (Exception, asyncio.CancelledError) as error:
            await scope.fail(error)
        finally:
            scope.end()

    return handle


UnaryBehavior = Callable[..., Awaitable[Any]]
StreamBehavior = Callable[..., AsyncIterator[Any]]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[UnaryBehavior], UnaryBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
) -> grpc.RpcMethodHandler:
    """The handler with its behaviour wrapped: by `unary` where it answers once, by `stream` where it streams."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **serializers)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **serializers)


class HandlerWrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler (`wrap`) once.

    grpc.aio asks the interceptors for a handler on every call; the wrapped handler of a method is
    built once and reused while the handler underneath stays the same object.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class ServerInterceptor(HandlerWrappingInterceptor):
    """Wraps every handler with `_CallScope`; one instance serves all methods."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(
            handler,
            lambda behavior: _wrap_unary_response(method, behavior),
            lambda behavior: _wrap_stream_response(method, behavior),
        )


def _outgoing(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """The call details with the current request id added and the timeout cut to the inherited deadline."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_KEY not in metadata:
        metadata.add(REQUEST_ID_KEY, request_id)
    timeout = details.timeout
    deadline = deadline_var.get()
    if deadline is not None:
        remaining = max(deadline - time.monotonic(), 0.0)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _Propagate:
    async def _call(self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(_outgoing(details), request)


class PropagateUnaryUnary(_Propagate, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._call(continuation, client_call_details, request)


class PropagateUnaryStream(_Propagate, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._call(continuation, client_call_details, request)


class PropagateStreamUnary(_Propagate, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._call(continuation, client_call_details, request_iterator)


class PropagateStreamStream(_Propagate, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._call(continuation, client_call_details, request_iterator)


def propagating_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that carry the request id, the remaining deadline and the trace context
    (`traceparent`) to downstream calls."""
    return [
        PropagateUnaryUnary(),
        PropagateUnaryStream(),
        PropagateStreamUnary(),
        PropagateStreamStream(),
        *aio_client_interceptors(),
    ]
