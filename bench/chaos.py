"""Chaos bench: relay M messages from Dovecot to an idempotent webhook sink while SIGKILLing random
processes of a running install K times, restarting each as a supervisor would.

    .venv/bin/python bench/chaos.py [--messages 500] [--kills 100] [--database-url URL] [--seed N]

The install: 2 worker processes (`manage.py worker`, each a tree: the command, its qcluster, the
cluster's sentinel, monitor, pusher and workers), 2 IDLE managers (`manage.py idle`), 1 web
process (daphne), a private Redis for the channel layer and a private Dovecot with ACCOUNTS
accounts, each IDLEing. Every message goes to SUBSCRIBERS webhook subscribers, so M x SUBSCRIBERS
deliveries are expected. The sink (an in-process HTTP server) counts requests by Idempotency-Key
(= delivery id): a key seen once is "sent exactly once", a key seen more than once is a duplicate
the receiver had to drop (at-least-once delivery allows it; it is counted and listed), a
delivery never seen is lost.

A kill SIGKILLs every process of the chosen tree at once (the worker command's qcluster runs in a
session of its own, so the tree is walked through /proc rather than signalled as a group), then
starts the process again at once. Kills come at uniformly random intervals while the messages are
appended (a few per kill, to random accounts); afterwards the bench waits for the install to
drain with no more kills.

What is shortened against production, so the run takes minutes, not hours (all in CHILD_ENV):
the stage deadline (20 s instead of 600), the task timeout/retry (15/18 s instead of 300/360), the
IDLE lease (10 s instead of 30) and the retry backoff base (1 s instead of 30). The cluster's own
schedules fire at most once a minute (Django Q counts in minutes), so this process also runs the
sweeper every SWEEP_EVERY seconds and queues "sync all accounts" every SYNC_EVERY seconds during
the drain, as a tighter schedule would.

Exit status 1 on any lost delivery or message (not every appended message stored and distributed).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACCOUNTS = 10
SUBSCRIBERS = 2
SWEEP_EVERY = 5.0
SYNC_EVERY = 20.0
DRAIN_TIMEOUT = 600.0
# Task timeout 15 s: a sync task of a few dozen bodies on a loaded 2-core machine can take more
# than the 4 s the SIGKILL test in the suite uses (a first run here saw sync tasks killed by it).
CHILD_ENV = {
    "MAILGATE_STAGE_DEADLINE": "20",
    "MAILGATE_TASK_TIMEOUT": "15",
    "MAILGATE_TASK_RETRY": "18",
    "MAILGATE_IDLE_LEASE_SECONDS": "10",
    "MAILGATE_RETRY_BASE_SECONDS": "1",
    "MAILGATE_LOG_LEVEL": "WARNING",
}


def setup_django(data_dir: str, database_url: str | None) -> None:
    os.environ["MAILGATE_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # throwaway keys, loopback targets allowed
    os.environ.update(CHILD_ENV)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
        _recreate_postgres_database(database_url)
    import django

    django.setup()
    from django.conf import settings

    from tests.servers.tables import create_tables_from_models

    settings.DEBUG = False
    create_tables_from_models()


def _recreate_postgres_database(url: str) -> None:
    """A fresh database of the name in `url` (dropped first): the bench never reuses rows."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, however deep (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {pid}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return sorted(tree)


class Supervised:
    """One process of the install, restarted by `kill()` as a supervisor restarts a crashed one."""

    def __init__(self, kind: str, index: int, args: list[str], env: dict, log_dir: Path):
        self.kind, self.args, self.env = kind, args, env
        self.log = open(log_dir / f"{kind}-{index}.log", "ab")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def sigkill_tree(self) -> int:
        pids = descendants(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        return len(pids)

    def kill_and_restart(self) -> int:
        killed = self.sigkill_tree()
        self.start()
        return killed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the leader only: each program stops its children
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.sigkill_tree()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None,
                        help="PostgreSQL URL (its database is dropped and created); default: SQLite in a temp dir")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    data_dir = tempfile.mkdtemp(prefix="mailgate-bench-chaos-")
    cleanup: list[str] = []
    from tests.servers.redis import RedisServer

    redis = RedisServer.start()
    os.environ["REDIS_URL"] = redis.url
    os.environ.pop("MAILGATE_CHANNEL_LAYER", None)
    setup_django(data_dir, args.database_url)

    from django.contrib.auth import get_user_model
    from django.db import connection

    from imap.models import Account
    from imap.tasks import sync_all_accounts
    from outgoing.models import Service
    from pipeline import sweeper
    from pipeline.models import Delivery, Event, Message, Subscriber, Subscription
    from tests.builders import dovecot_account, eml, route_everything, sync
    from tests.servers.dovecot import Dovecot
    from tests.servers.http import HttpSink
    from tests.servers.ports import free_port

    print(f"database: {connection.vendor}; messages {args.messages}; kills {args.kills}; seed {args.seed}; "
          f"{ACCOUNTS} accounts x {SUBSCRIBERS} webhook subscribers; Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (machine shared with other jobs)")
    dovecot = Dovecot.start()
    sink = HttpSink.start()
    processes: list[Supervised] = []
    try:
        owner = get_user_model().objects.create_user("chaos", "chaos@example.test", "chaos-password")
        accounts = []
        for i in range(ACCOUNTS):
            user = dovecot.add_user(f"chaos{i}", f"pw-chaos-{i}")
            account = dovecot_account(owner, dovecot, user)
            sync(account)  # connected while empty: everything appended from now on is new mail
            accounts.append(user.name)
        service = Service(owner=owner, kind="webhook", name="sink", rate_per_minute=0,
                          config={"url": sink.url("/hook"), "timeout": 3})
        service.set_secrets({"signing_secret": "chaos-secret"})
        service.save()
        route_everything(owner, service)
        subscribers = Subscriber.objects.bulk_create(Subscriber(owner=owner, name=f"s{i}") for i in range(SUBSCRIBERS))
        Subscription.objects.bulk_create(Subscription(subscriber=s, service=service, address="") for s in subscribers)
        connection.close()  # SQLite: no connection of ours held open across the children's writes

        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        log_dir = Path(data_dir) / "logs"
        log_dir.mkdir()
        py, manage = sys.executable, str(ROOT / "manage.py")
        web_port = free_port()
        processes = [Supervised("worker", i, [py, manage, "worker"], env, log_dir) for i in range(2)]
        processes += [Supervised("idle", i, [py, manage, "idle"], env, log_dir) for i in range(2)]
        processes.append(Supervised("web", 0, [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                                               "mailgate.asgi:application"], env, log_dir))
        wait = time.monotonic() + 60
        while Account.objects.filter(idle_session__connected=True).count() < ACCOUNTS:
            if time.monotonic() > wait:
                print("warning: not every account IDLEs after 60 s; starting anyway (catch-up covers it)")
                break
            time.sleep(0.5)

        started = time.monotonic()
        kills = collections.Counter()
        processes_killed = collections.Counter()
        per_kill = [args.messages // args.kills + (1 if i < args.messages % args.kills else 0)
                    for i in range(args.kills)] if args.kills else []
        appended = 0
        next_sweep = time.monotonic() + SWEEP_EVERY
        for i in range(args.kills):
            for _ in range(per_kill[i]):
                dovecot.append(rng.choice(accounts), "INBOX", eml(subject=f"Chaos {appended}",
                                                                  body=f"message {appended}\n"))
                appended += 1
            time.sleep(rng.uniform(0.2, 2.0))  # a random moment to pull the plug
            victim = rng.choice(processes)
            processes_killed[victim.kind] += victim.kill_and_restart()
            kills[victim.kind] += 1
            if time.monotonic() >= next_sweep:
                sweeper.sweep()
                next_sweep = time.monotonic() + SWEEP_EVERY
        while appended < args.messages:  # --kills 0
            dovecot.append(rng.choice(accounts), "INBOX", eml(subject=f"Chaos {appended}", body=f"m {appended}\n"))
            appended += 1
        chaos_seconds = time.monotonic() - started

        expected = appended * SUBSCRIBERS
        deadline = time.monotonic() + DRAIN_TIMEOUT
        next_sync = time.monotonic()
        while True:
            sent = Delivery.objects.filter(status=Delivery.Status.SENT).count()
            distributed = Message.objects.filter(status=Message.Status.DISTRIBUTED).count()
            if (sent >= expected and distributed >= appended) or time.monotonic() > deadline:
                break
            if time.monotonic() >= next_sweep:
                sweeper.sweep()
                next_sweep = time.monotonic() + SWEEP_EVERY
            if time.monotonic() >= next_sync and Message.objects.count() < appended:
                sync_all_accounts()
                next_sync = time.monotonic() + SYNC_EVERY
            time.sleep(0.5)
        total_seconds = time.monotonic() - started
        for process in processes:
            process.stop()
        processes = []

        by_status = collections.Counter(Message.objects.values_list("status", flat=True))
        delivery_status = collections.Counter(Delivery.objects.values_list("status", flat=True))
        stored = Message.objects.exclude(status__in=[Message.Status.HEADERS, Message.Status.GONE,
                                                     Message.Status.TOO_LARGE]).count()
        standardized = sum(by_status[s] for s in (Message.Status.STANDARDIZED, Message.Status.DISTRIBUTED,
                                                  Message.Status.SUPPRESSED, Message.Status.HISTORY))
        ids = {str(pk) for pk in Delivery.objects.values_list("pk", flat=True)}
        seen = collections.Counter(r.header("Idempotency-Key") for r in sink.requests if r.path == "/hook")
        once = sum(1 for key in ids if seen[key] == 1)
        more = {key: n for key, n in seen.items() if n > 1}
        never_planned = expected - len(ids)  # deliveries that distribute never created
        lost = sum(1 for key in ids if not seen[key]) + max(0, never_planned)
        unknown = [key for key in seen if key not in ids]
        sent_events = Event.objects.filter(kind="sent").count()
        crashed = Event.objects.filter(kind="crashed").count()

        print(f"messages appended: {appended}; stored (raw bytes): {stored}; standardized: {standardized}; "
              f"message states: {dict(sorted(by_status.items()))}")
        print(f"deliveries expected: {expected}; created: {len(ids)}; states: {dict(sorted(delivery_status.items()))}")
        print(f"sent exactly once at the sink (by Idempotency-Key): {once}")
        print(f"sent more than once: {len(more)} ({sum(more.values()) - len(more)} extra requests)"
              + (f": {', '.join(f'{k} x{n}' for k, n in sorted(more.items()))}" if more else ""))
        print(f"lost: {lost}; requests with an unknown key: {len(unknown)}; sink requests in all: {len(sink.requests)}")
        print(f"'sent' events: {sent_events}; 'crashed' events (leases taken back): {crashed}")
        print(f"kills: {sum(kills.values())} (" + ", ".join(
            f"{k} {n} ({processes_killed[k]} processes)" for k, n in sorted(kills.items()))
            + f"); {sum(processes_killed.values())} processes SIGKILLed in all")
        print(f"time: {chaos_seconds:.1f} s under kills, {total_seconds:.1f} s until drained "
              f"(load average {os.getloadavg()[0]:.1f} at the end)")
        failed = lost or stored < appended or by_status[Message.Status.DISTRIBUTED] < appended or unknown
        if failed:
            print(f"FAILED: losses (logs in {log_dir})")
        else:
            cleanup.append(data_dir)  # kept on a failure, for its logs and database
        return 1 if failed else 0
    finally:
        for process in processes:
            process.stop()
        sink.stop()
        dovecot.stop()
        redis.stop()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
