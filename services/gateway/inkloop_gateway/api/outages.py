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

from inkloop import errors
from inkloop.rpc.interceptors import HandlerWrappingInterceptor, wrap_handler
from inkloop_gateway.redis_client import OUTAGE_ERRORS, OUTAGE_MESSAGE


class StoreOutageInterceptor(HandlerWrappingInterceptor):
    """Maps Redis connection errors raised by any handler (or the interceptors after this one) to UNAVAILABLE."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, _unary, _stream)


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except OUTAGE_ERRORS:
            raise errors.Unavailable(OUTAGE_MESSAGE) from None

    return handle


def _stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except OUTAGE_ERRORS:
            raise errors.Unavailable(OUTAGE_MESSAGE) from None

    return handle
