"""Channels to other inkloop services, carrying request ids and deadlines downstream."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from inkloop.rpc.interceptors import propagating_interceptors

# Keepalive so idle connections through NATs and mesh proxies are noticed; round_robin so a
# "dns:///" target of a headless service spreads calls over every resolved pod.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials | None:
    """TLS towards a server whose certificate `ca_file` signs (mTLS with a client certificate and key),
    or None for plaintext (in a service mesh, the sidecars encrypt)."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both its certificate and its key file")
    if ca_file is None:
        if cert_file is not None:
            raise ValueError("a client certificate needs the CA of the servers (the CA file)")
        return None
    return grpc.ssl_channel_credentials(
        ca_file.read_bytes(),
        key_file.read_bytes() if key_file else None,
        cert_file.read_bytes() if cert_file else None,
    )


def channel_options(options: Sequence[tuple[str, int | str]] = ()) -> list[tuple[str, int | str]]:
    """The default channel options with `options` added to (or overriding) them: for sync channels too."""
    return list({**dict(_CHANNEL_OPTIONS), **dict(options)}.items())


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """An aio channel to `target` ("host:port" or "dns:///name:port") with request-id propagation;
    `options` are added to (or override) the defaults."""
    merged = channel_options(options)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged, interceptors=propagating_interceptors())
    return grpc.aio.secure_channel(target, credentials, options=merged, interceptors=propagating_interceptors())
