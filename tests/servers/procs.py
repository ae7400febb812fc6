"""Start Django processes (daphne, qcluster, `manage.py idle`) that share the test's database."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

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
