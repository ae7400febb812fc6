"""`manage.py worker`: the Django Q cluster (`qcluster`) as the Procfile's `worker:` process.

Some process supervisors stop a process by signalling its whole process group: honcho
(`./scripts/run`) sends SIGTERM with killpg. django-q2 (1.11) cannot stop that way: its sentinel
and worker processes take SIGTERM with the default action and die at once, the cluster's `stop()`
then waits for ever on an event lock a dead process held, and the supervisor ends it with SIGKILL
(measured here: still running 10 s after a group SIGTERM; with SIGTERM to the cluster's main
process alone it stops cleanly in about 2 s).

So this command runs `qcluster` in a session of its own, where group signals do not reach it, and
passes a stop signal on to the cluster's main process only. (systemd's default
KillMode=control-group signals every process of the unit whatever its session: use
KillMode=mixed, as README says.) If this process is killed outright,
the kernel sends SIGTERM to the cluster (PR_SET_PDEATHSIG), so the cluster never outlives it.
Tasks in flight when a stop comes finish; anything cut short is retried (see docs/pipeline.md).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent still forwards every stop signal
        pass


class Command(BaseCommand):
    help = "Run the Django Q cluster so that a stop signal to the whole process group stops it cleanly."

    def handle(self, *args, **options):
        manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        cluster = subprocess.Popen([sys.executable, manage_py, "qcluster"], start_new_session=True,
                                   preexec_fn=_die_with_parent)
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            if not stopping:  # once: a second SIGTERM inside django-q's stop() can wedge it too
                stopping = True
                cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, stop)
        code = cluster.wait()
        if code:
            sys.exit(code if code > 0 else 128 - code)
