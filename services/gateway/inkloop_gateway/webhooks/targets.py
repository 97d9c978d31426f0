"""Which URLs the gateway may POST to: never into its own network unless an operator says so.

A webhook URL is the one place a tenant makes the gateway open a connection, so it is checked twice:
when it is given (scheme, host, a literal address) and at every attempt after resolving the name, and
the connection goes to exactly the address that was checked (no second lookup a DNS rebinding could
answer differently). Loopback, private, link-local (cloud metadata at 169.254.169.254 included),
multicast, reserved and unspecified addresses are refused unless `allowed` names the host, the address
or a network holding it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from inkloop import errors

MAX_URL_CHARS = 2048
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedTarget(Exception):
    """The URL may not be called; the reason names the address class, never internals."""


def _internal(address: _Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _internal(address.ipv4_mapped)
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
    ):
        if flag:
            return kind
    return None


class Targets:
    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.allowed_hosts = {entry.lower() for entry in allowed if not _is_network(entry)}
        self.allowed_networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed if _is_network(entry)]

    def check_url(self, url: str, field: str) -> None:
        """INVALID_ARGUMENT naming `field` unless the URL is http(s) with a host that is not refused as given."""
        if len(url) > MAX_URL_CHARS:
            raise errors.InvalidArgument(field, f"at most {MAX_URL_CHARS} characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidArgument(field, "must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise errors.InvalidArgument(field, "must not carry credentials")
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None:
            reason = self._refusal(parts.hostname, literal)
            if reason:
                raise errors.InvalidArgument(field, reason)

    async def resolve(self, url: str) -> list[ResolveResult]:
        """The addresses to connect to, every one allowed; RefusedTarget otherwise."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise RefusedTarget(f"cannot resolve {host!r}: {error.strerror or error}") from None
        results: list[ResolveResult] = []
        for family, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            reason = self._refusal(host, address)
            if reason:
                raise RefusedTarget(reason)
            results.append(
                {"hostname": host, "host": str(address), "port": port, "family": family, "proto": proto, "flags": 0}
            )
        return results

    def _refusal(self, host: str, address: _Address) -> str | None:
        kind = _internal(address)
        if kind is None or host.lower() in self.allowed_hosts or str(address) in self.allowed_hosts:
            return None
        if any(address in network for network in self.allowed_networks):
            return None
        return f"{host} is a {kind} address; webhook-allowed-hosts must name it to be called"


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


class PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookup with the addresses already checked."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self.results = results

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return self.results

    async def close(self) -> None:
        return None
