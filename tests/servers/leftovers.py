"""Session-end check: the suite stops every process it starts (issue 20).

When the session ends (after every fixture is torn down), a process is ours if it descends from
this test process in a session of its own (every server the harness starts: Dovecot, Redis,
daphne, workers), or if its command line names one of this session's temp dirs: the test data
dir, pytest's tmp_path root, or a dir a harness server registered with `remember()`. A daemon
that escaped to init (redis-server --daemonize, an embedded Redis nobody stops) is found by the
second rule; the environment cannot serve as a marker, since redis-server and Dovecot overwrite
theirs with their process titles. Children left in the test process's own session are helpers
that end with it (the html2text child reads our pipe to its end at exit), not servers.

Survivors get a few seconds (the embedded Redis stops embedded_redis.GRACE seconds after its
last user), then the run fails naming them, and they are killed by pid.

Only this session's dirs are matched: other test runs on the same machine are left alone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

_names: set[str] = set()
# Seconds a survivor gets to finish stopping before the run fails (test_harness.py shortens it).
WAIT = float(os.environ.get("MAILGATE_LEFTOVERS_WAIT", "10"))


def _as_dir(path) -> str:
    # With the separator, /tmp/pytest-of-root/pytest-4 does not match another run's pytest-42.
    return str(path).rstrip(os.sep) + os.sep


def remember(path) -> None:
    """Count any process whose command line names a file under `path` as started by this session."""
    _names.add(_as_dir(path))


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every live, non-zombie process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited while we looked
            continue
        state, ppid, _, sid = stat.rsplit(")", 1)[1].split()[:4]
        if state != "Z":
            found[int(entry.name)] = (int(ppid), int(sid), cmdline)
    return found


def processes_naming(path) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line names a file under `path`."""
    return sorted((pid, cmd) for pid, (_, _, cmd) in _processes().items() if _as_dir(path) in cmd)


def survivors() -> list[tuple[int, str]]:
    me, my_session = os.getpid(), os.getsid(0)
    table = _processes()
    ours = {me}
    grew = True
    while grew:  # descendants, however deep
        new = {pid for pid, (ppid, _, _) in table.items() if ppid in ours and pid not in ours}
        ours |= new
        grew = bool(new)
    return sorted((pid, cmd) for pid, (_, sid, cmd) in table.items()
                  if pid != me and ((pid in ours and sid != my_session) or any(name in cmd for name in _names)))


@pytest.fixture(scope="session", autouse=True)
def _remember_session_dirs(tmp_path_factory):
    from django.conf import settings

    remember(settings.DATA_DIR)
    remember(tmp_path_factory.getbasetemp())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    from mailgate import embedded_redis

    embedded_redis.release()  # this process's own lease, if a test used the embedded Redis here
    deadline = time.monotonic() + WAIT
    while (left := survivors()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(left)} process(es) started by this test session outlived it:"]
    lines += [f"  pid {pid}: {cmd[:300]}" for pid, cmd in left]
    if reporter:
        reporter.write_sep("=", "processes left running", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines))
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
