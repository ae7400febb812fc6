"""Start Django processes (daphne, qcluster, `manage.py idle`) that share the test's database, and
the lifecycle of the private servers (ChildServer, PrivateServer)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from .ports import pid_alive, set_parent_death_signal

ROOT = Path(__file__).resolve().parents[2]


def django_env(**extra: str) -> dict:
    """Environment for a child that opens the same test database and data dir as this process."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        MAILGATE_DATA_DIR=str(settings.DATA_DIR),
        MAILGATE_USE_TEST_DB="1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(args: list[str], log_name: str, **env_extra: str) -> subprocess.Popen:
    """Start `python <args>` from the project root; output goes to a log file, never a pipe."""
    log_dir = Path(settings.DATA_DIR) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{log_name}.log", "ab")
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=django_env(**env_extra), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # so stop() can signal the whole group (qcluster forks workers)
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Stop a started process and wait; SIGKILL whatever is left of its group after `timeout`.

    SIGTERM goes to the leader only, as from a supervisor that signals one pid: each program here
    stops its own children on it, while a SIGTERM to the whole group wedges a bare `qcluster`
    (pipeline/management/commands/worker.py; the Procfile's worker is tested against that in
    test_pipeline_worker.py). Any other signal (SIGKILL) goes to the whole group.
    """
    if proc.poll() is None:
        try:
            if sig == signal.SIGTERM:
                proc.send_signal(sig)
            else:
                os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # the leader may be gone while forked children live on
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)
    return proc.returncode


def log_text(log_name: str) -> str:
    path = Path(settings.DATA_DIR) / "logs" / f"{log_name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def started_by_a_killed_parent(start: str, show: str) -> tuple[int, str]:
    """Run `start` (Python) in a child interpreter that prints `show` ("pid dir"), SIGKILL that child
    once it has, and return the printed (pid, dir): for tests that a server dies with its parent.
    The server is checked alive before its parent is killed, so the test cannot pass vacuously."""
    script = f"import sys, time\nsys.path.insert(0, {str(ROOT)!r})\n{start}\nprint({show}, flush=True)\ntime.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, directory = child.stdout.readline().split()
        pid = int(pid)
        if not pid_alive(pid):
            raise AssertionError(f"the server {pid} was not running while its parent lived")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return pid, directory


# ---------------------------------------------------------------------------- private servers
# The lifecycle that tests/servers/s3.py, redis.py, dovecot.py and postgres.py share.

_live: set["ChildServer"] = set()
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


def read_logs(*paths: str) -> str:
    """The text of the log files that exist, in order."""
    parts = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                parts.append(f.read())
        except FileNotFoundError:
            pass
    return "".join(parts)


class PrivateServer:
    """A server of the test's own in a temp dir: `with X.start() as x:` stops it, `log_text()` says why
    it failed. Subclasses set `log_paths` and define `stop()`, which must be idempotent."""

    log_paths: tuple[str, ...] = ()

    def stop(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _stopped_on_failure(self):
        """For start(): a server that fails half-way is stopped and its temp dir removed."""
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        return read_logs(*self.log_paths)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ChildServer(PrivateServer):
    """A PrivateServer that runs as our direct child, stopped by PID.

    It goes away, in order of preference, by stop() / the context manager, by an atexit hook for
    every instance still running, and by PR_SET_PDEATHSIG when the test process dies without
    running atexit (SIGKILL, OOM). Subclasses set `dir` (removed by stop()).
    """

    dir: str
    _proc: subprocess.Popen | None = None

    def _spawn(self, args: list[str], output: str, **popen_kw) -> subprocess.Popen:
        # Output goes to a FILE, never a pipe nobody reads (daemons that inherit the fd keep a pipe
        # open forever). start_new_session gives the child its own process group, so a group can be
        # signalled without guessing names.
        with open(output, "ab") as out:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=set_parent_death_signal, close_fds=True, **popen_kw,
            )
        with _live_lock:
            _live.add(self)
        return self._proc

    def _wait_until(self, answers, timeout: float, what: str, how: str, delay: float = 0.005,
                    max_delay: float = 0.05) -> None:
        """Poll `answers()` with a growing delay until it is true; fail fast, with the log, if the
        child exits, and with a TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not answers():
            if self._proc.poll() is not None:
                raise RuntimeError(f"{what} exited ({self._proc.returncode}):\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not answer {how}:\n{self.log_text()}")
            time.sleep(delay)
            delay = min(delay * 2, max_delay)

    def _stop_processes(self, grace: float = 5.0) -> None:
        """SIGTERM the child, SIGKILL it if it has not exited after `grace` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _forget(self) -> None:
        with _live_lock:
            _live.discard(self)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        """Stop the child and remove the temp dir. Idempotent."""
        self._stop_processes()
        self._forget()
        shutil.rmtree(self.dir, ignore_errors=True)
