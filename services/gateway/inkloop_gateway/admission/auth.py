"""Who is calling: `authorization: Bearer <secret>` → a `Principal` in a context variable.

`AuthInterceptor` runs inside the common server interceptor (see `inkloop.rpc.server.App`), so the
`Unauthenticated` / `PermissionDenied` it raises from the wrapped handler become statuses there, with
the request id and metrics like any other error. Servicers then read `current_principal()` or call
`require_role(...)`; the HTTP bridge uses `authenticate_header` with the same rules.

`KeyStore.authenticate_async` answers from its short-lived cache or the key file on the event loop (a
SHA-256 and a dict lookup); only a storage read (SQLite, or a Redis round trip) goes to a worker
thread, so a slow store or a flood of unknown keys never holds the loop. Revocation through this
gateway's store takes effect on the very next call; through another replica or process (`inkloop
keys revoke`) within `KeyStore.cache_ttl_s` (`api_keys_cache_ttl_s`, 1 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from inkloop import errors
from inkloop.rpc.interceptors import HandlerWrappingInterceptor, wrap_handler
from inkloop_gateway.admission.keys import KeyStore, Role

AUTHORIZATION_KEY = "authorization"
_SCHEME = "bearer"
PUBLIC_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.", "/grpc.reflection.")
#: Method prefix -> the least role allowed to call it; methods matching none need Role.USER.
ROLE_PREFIXES: Mapping[str, Role] = {
    "/inkloop.v1.AdminService/": Role.ADMIN,
    "/inkloop.v1.AnalyticsQueryService/": Role.ANALYST,
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: which key, which tenant, what it may do."""

    key_id: str
    tenant_id: str
    role: Role


principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The caller of the call being served; `Unauthenticated` outside an authenticated call."""
    principal = principal_var.get()
    if principal is None:
        raise errors.Unauthenticated("no authenticated caller")
    return principal


def require_role(role: Role) -> Principal:
    """The caller, if its role includes `role` (admin ⊇ analyst ⊇ user); `PermissionDenied` otherwise."""
    principal = current_principal()
    _check_role(principal, role)
    return principal


async def authenticate_header(store: KeyStore, header_value: str | None, *, required: Role = Role.USER) -> Principal:
    """The principal of an `authorization` header value ("Bearer <secret>"), for gRPC and HTTP alike."""
    secret = _bearer_secret(header_value)
    key = await store.authenticate_async(secret)  # Unauthenticated for unknown, malformed or revoked secrets
    principal = Principal(key.key_id, key.tenant_id, key.role)
    _check_role(principal, required)
    return principal


def _bearer_secret(header_value: str | None) -> str:
    if not header_value:
        raise errors.Unauthenticated("missing API key: send 'authorization: Bearer <key>'")
    scheme, _, secret = header_value.strip().partition(" ")
    if scheme.lower() != _SCHEME or not secret.strip():
        raise errors.Unauthenticated("malformed authorization: expected 'Bearer <key>'")
    return secret.strip()


def _check_role(principal: Principal, role: Role) -> None:
    if not principal.role.allows(role):
        raise errors.PermissionDenied(f"this call needs the {role.value} role; the key has {principal.role.value}")


def _header(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class AuthInterceptor(HandlerWrappingInterceptor):
    """Authenticates every call except the public ones and sets `principal_var` while it runs."""

    def __init__(
        self,
        store: KeyStore,
        *,
        public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES,
        role_prefixes: Mapping[str, Role] = ROLE_PREFIXES,
    ) -> None:
        super().__init__()
        self._store = store
        self._public_prefixes = public_prefixes
        self._role_prefixes = dict(role_prefixes)

    def required_role(self, method: str) -> Role:
        for prefix, role in self._role_prefixes.items():
            if method.startswith(prefix):
                return role
        return Role.USER

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(self._public_prefixes):
            return handler
        role = self.required_role(method)
        # The check runs inside the wrapped handler, not in intercept_service: an exception raised
        # there would bypass the common interceptor's error mapping.
        return wrap_handler(
            handler, lambda behavior: self._unary(behavior, role), lambda behavior: self._stream(behavior, role)
        )

    async def _authenticate(self, context: grpc.aio.ServicerContext, role: Role) -> Principal:
        return await authenticate_header(self._store, _header(context.invocation_metadata()), required=role)

    def _unary(self, behavior: Callable[..., Awaitable[Any]], role: Role) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = principal_var.set(await self._authenticate(context, role))
            try:
                return await behavior(request, context)
            finally:
                principal_var.reset(token)

        return handle

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], role: Role) -> Callable[..., AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = principal_var.set(await self._authenticate(context, role))
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                principal_var.reset(token)

        return handle
