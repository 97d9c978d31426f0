"""A private redis-server on a free port, its files under one directory; persistence (an append-only
file, as the prod manifests configure it) only when asked for."""

from __future__ import annotations

from pathlib import Path

import redis

from . import ServerProcess, free_ports, port_open, require_binary

SERVER_BINARY = "/usr/bin/redis-server"


class RedisServer(ServerProcess):
    """redis-server on its own port; restarts keep the port, and the data when `persistent`.

    >>> with RedisServer() as server:
    ...     redis.Redis.from_url(server.url).ping()
    """

    name = "redis"

    def __init__(self, base_dir: Path | None = None, *, persistent: bool = False) -> None:
        super().__init__(base_dir)
        [self.port] = free_ports(1)
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            require_binary(SERVER_BINARY),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.base_dir),
            "--save",
            "",
            # As in k8s/: every write appended, the file synced each second and on shutdown.
            *(["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]),
        ]

    def answers(self) -> bool:
        if not port_open(self.port):
            return False
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
