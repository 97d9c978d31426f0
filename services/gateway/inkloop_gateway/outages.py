"""Calls made while Redis is down answer UNAVAILABLE with a clear message, never INTERNAL.

With `redis_url`, Redis holds the jobs, the result cache, rate limits, variants and API keys of every
gateway replica. While it restarts (or loads its data back from disk) a call that needs it fails with
one of redis-py's connection errors, which the common interceptor would report as INTERNAL: an
unexpected error. This interceptor, inside the common one, turns them into `errors.Unavailable`
naming the store: a status clients retry, with the same request id, so a submission that reached
Redis before its reply was lost is not made twice. redis-py reconnects by itself on the next command,
so calls succeed again as soon as Redis answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from redis import exceptions as redis_errors

from inkloop import errors

#: What redis-py raises while the server is unreachable, restarting or loading its data.
OUTAGE_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError)
MESSAGE = "the gateway's shared store (Redis) is unreachable or restarting; try again shortly"


class StoreOutageInterceptor(grpc.aio.ServerInterceptor):
    """Maps Redis connection errors raised by any handler (or the interceptors after this one) to UNAVAILABLE."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # grpc.aio asks for a handler on every call: the wrapped one of each method is built once.
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_stream(handler.unary_stream), **serializers)
    return grpc.stream_stream_rpc_method_handler(_stream(handler.stream_stream), **serializers)


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except OUTAGE_ERRORS:
            raise errors.Unavailable(MESSAGE) from None

    return handle


def _stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except OUTAGE_ERRORS:
            raise errors.Unavailable(MESSAGE) from None

    return handle
