"""Bench: N accounts idling in one IDLE manager process; resident memory per connection, idle CPU.

    .venv/bin/python bench/idle_scale.py              # 1,000 accounts, plain IMAP to loopback
    .venv/bin/python bench/idle_scale.py --tls        # the same over implicit TLS (port 993 style)
    .venv/bin/python bench/idle_scale.py -n 200

Runs against a private Dovecot (tests/servers/dovecot.py) with one Dovecot user per account
(Dovecot shares inotify instances per uid; the harness gives each user its own uid) and a fresh
SQLite database in a temp dir. The manager runs in a thread of this process, as in the web server.

Memory per connection = (RSS with all N idling - RSS before the manager started) / N, so it
includes everything the manager keeps per account (watcher, aioimaplib client, TLS state, the
pending IDLE wait), not only the socket. CPU is the whole process (manager loop, heartbeats,
account polling) over --idle-seconds with every account idling.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: str) -> None:
    os.environ["MAILGATE_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("MAILGATE_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings

    from tests.servers.tables import create_tables_from_models

    # tests.settings runs with DEBUG on, which logs every query per connection (megabytes here);
    # production does not.
    settings.DEBUG = False
    create_tables_from_models()


def rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def cpu_seconds() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def wait_for(check, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--accounts", type=int, default=1000)
    parser.add_argument("--tls", action="store_true", help="implicit TLS instead of plain IMAP to loopback")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    n = args.accounts

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))

    data_dir = tempfile.mkdtemp(prefix="mailgate-bench-idle-")
    setup_django(data_dir)

    from django.conf import settings
    from django.contrib.auth import get_user_model

    from imap.idle.manager import Manager
    from imap.models import Account, IdleSession
    from mailgate import crypto
    from tests.servers.dovecot import Dovecot

    dovecot = Dovecot.start()
    try:
        started = time.monotonic()
        for i in range(n):
            dovecot.add_user(f"scale{i}", f"pw-{i}")
        print(f"{n} Dovecot users created in {time.monotonic() - started:.2f} s")

        if args.tls:
            settings.MAILGATE_IMAP_CAFILE = dovecot.cafile
        owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
        security, port = ((Account.Security.SSL, dovecot.tls_port) if args.tls
                          else (Account.Security.NONE, dovecot.port))
        Account.objects.bulk_create([
            Account(owner=owner, display_name=f"scale{i}", email=f"scale{i}@example.test", host="127.0.0.1",
                    port=port, security=security, username=f"scale{i}", password_encrypted=crypto.encrypt(f"pw-{i}"),
                    enabled=i < n // 2)
            for i in range(n)
        ], batch_size=500)

        # Warm the code paths (imports, an SSL context) so the baseline is the process, not the libraries.
        import aioimaplib  # noqa: F401

        from imap import connection
        from imap.idle import client, watcher  # noqa: F401
        connection.ssl_context()
        before = rss()

        manager = Manager()
        import asyncio
        import threading

        thread = threading.Thread(target=lambda: asyncio.run(manager.run()), daemon=True)
        started = time.monotonic()
        thread.start()
        # Half the accounts first, then the rest enabled while it runs: the average includes the
        # manager's fixed costs (threads, database connections), the marginal cost does not.
        half = n // 2
        wait_for(lambda: IdleSession.objects.filter(connected=True).count() >= half, 300, f"{half} accounts idling")
        first_seconds = time.monotonic() - started
        time.sleep(2)  # let catch-up enqueues and status writes drain
        middle = rss()
        started = time.monotonic()
        Account.objects.filter(enabled=False).update(enabled=True)
        wait_for(lambda: IdleSession.objects.filter(connected=True).count() >= n, 300, f"{n} accounts idling")
        second_seconds = time.monotonic() - started
        sessions = sum(count for user, count in dovecot.who() if user.startswith("scale"))
        time.sleep(2)
        during = rss()
        per_connection = (during - before) / n
        marginal = (during - middle) / (n - half)

        cpu_before, wall_before = cpu_seconds(), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu = (cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)

        started = time.monotonic()
        manager.stop()
        thread.join(30)
        stop_seconds = time.monotonic() - started
        held = IdleSession.objects.exclude(lease_owner="").count()
        from django.db.models import Sum
        reconnects = IdleSession.objects.aggregate(n=Sum("reconnect_count"))["n"]

        print(f"mode: {'TLS' if args.tls else 'plain IMAP to loopback'}; Python {sys.version.split()[0]}")
        print(f"accounts idling: {n} (Dovecot sessions: {sessions}); first {half} idling after "
              f"{first_seconds:.1f} s, the other {n - half} (enabled while running) after {second_seconds:.1f} s")
        print(f"RSS before manager: {before / 2**20:.1f} MiB; with {n} idling: {during / 2**20:.1f} MiB")
        print(f"resident memory per connection: {per_connection / 1024:.1f} KiB on average "
              f"(marginal, second half only: {marginal / 1024:.1f} KiB)")
        print(f"CPU while idle over {args.idle_seconds:.0f} s: {cpu * 100:.2f} % of one core")
        print(f"reconnects during the run: {reconnects}")
        print(f"SIGTERM-equivalent stop: {stop_seconds:.2f} s, leases still held afterwards: {held}")
    finally:
        dovecot.stop()


if __name__ == "__main__":
    main()
