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

It runs one cluster per lane (docs/pipeline.md "Lanes"): the live one (Q_CLUSTER, `workers` =
MAILGATE_WORKERS) and the bulk one (Q_CLUSTER_NAME=mailgate-bulk, MAILGATE_BULK_WORKERS, niced by
MAILGATE_BULK_NICE), each in its own session; `--lane live` or `--lane bulk` runs one of them (to
scale them apart, one process each). If either cluster ends, the other is stopped and the command
exits, so a supervisor restarts both.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from pipeline.queue import Lane

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent still forwards every stop signal
        pass


def _bulk_child() -> None:
    _die_with_parent()
    # Bulk work takes the CPU the live lane leaves: a push is parsed first on a busy 2-core box.
    os.nice(max(0, settings.MAILGATE_BULK_NICE))


class Command(BaseCommand):
    help = "Run the Django Q clusters (live and bulk lanes) so that a stop signal to the whole process group stops them cleanly."

    def add_arguments(self, parser):
        parser.add_argument("--lane", choices=["all", *Lane], default="all",
                            help="run the cluster of one lane only (default: both)")

    def handle(self, *args, **options):
        manage_py = str(Path(settings.BASE_DIR) / "manage.py")
        lanes = list(Lane) if options["lane"] == "all" else [Lane(options["lane"])]
        clusters = []
        for lane in lanes:
            env = dict(os.environ)
            env.pop("Q_CLUSTER_NAME", None)
            env["MAILGATE_SQLITE_WRITER"] = lane.value  # its place in SQLite's write order (mailgate/db_sqlite3)
            if lane is Lane.BULK:
                env["Q_CLUSTER_NAME"] = lane.cluster
            clusters.append(subprocess.Popen([sys.executable, manage_py, "qcluster"], start_new_session=True,
                                             env=env, preexec_fn=_bulk_child if lane is Lane.BULK else _die_with_parent))
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            if not stopping:  # once: a second SIGTERM inside django-q's stop() can wedge it too
                stopping = True
                for cluster in clusters:
                    if cluster.poll() is None:
                        cluster.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, stop)
        while all(cluster.poll() is None for cluster in clusters):
            time.sleep(0.2)
        stop()  # one ended: end the other too, so the supervisor sees the worker down
        codes = [cluster.wait() for cluster in clusters]
        code = next((c for c in codes if c), 0)
        if code:
            sys.exit(code if code > 0 else 128 - code)
