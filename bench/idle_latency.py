"""Bench: latency from APPEND to stored message through IDLE, beside the raw IMAP push latency.

    .venv/bin/python bench/idle_latency.py            # 200 messages
    .venv/bin/python bench/idle_latency.py -n 500

One account on a private Dovecot, one `manage.py idle` and one `manage.py qcluster` subprocess on
a fresh SQLite database (DEBUG off, as in production). For each message, in the same run:

    raw push        APPEND -> EXISTS at a bare aioimaplib client IDLEing on a second mailbox that
                    gets its own APPEND at the same moment (its own Dovecot user, so our sync's
                    activity cannot wake it early)
    push            APPEND -> EXISTS at mailgate's IDLE connection (IdleSession.last_push_at is the
                    time the manager read the push)
    stored          APPEND -> message row with its raw bytes (status past "headers")
    mailgate adds   push -> stored: everything after the server's push, split into
      push -> enqueued     the IDLE manager's part: read the push, enqueue_folder_sync (django-q
                           stamps a task's `started` when it is enqueued)
      enqueued -> stored   Django Q poll and dispatch, then the sync task's own work
    websocket       APPEND -> the `message.new` event (sent after standardize) received from the
                    owner's group on a private Redis, as a browser's websocket consumer gets it

Dovecot notifies each IDLE session on its own ~0.5 s timer, which is why push and raw push vary
between 0 and ~0.55 s. Messages are appended one at a time, each once the previous one is stored
and the queue is idle: these are latencies of a quiet system, not of a loaded one.

    .venv/bin/python bench/idle_latency.py --under-load [--backfill 20000] [-n 100]

measures the same, plus APPEND -> webhook at a local HTTP sink (the message relayed), while another
account's first sync of --backfill messages and their standardize run (issue #19: the live lane).
First the same backfill runs alone on a third account (the unloaded rate); then a second one is
added and the latency loop runs while it is in progress (only messages appended before the backfill
finished count). Prints the backfill's rate both times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def pick(p):
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return (f"p50 {pick(50):7.1f} ms   p95 {pick(95):7.1f} ms   p99 {pick(99):7.1f} ms   "
            f"max {ordered[-1] * 1000:7.1f} ms   mean {statistics.mean(values) * 1000:7.1f} ms")


class RawWatcher:
    """A bare aioimaplib client IDLEing in a thread; records the wall time of every EXISTS."""

    def __init__(self, host, port, user, password):
        self.args = (host, port, user, password)
        self.exists: dict[int, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.stop = False

    async def _run(self):
        import aioimaplib

        host, port, user, password = self.args
        client = aioimaplib.IMAP4(host, port, timeout=10)
        await client.wait_hello_from_server()
        await client.login(user, password)
        await client.select("INBOX")
        await client.idle_start(timeout=1500)
        self.ready.set()
        while not self.stop:
            try:
                lines = await client.wait_server_push(timeout=1)
            except TimeoutError:
                continue
            now = time.time()
            for line in lines if isinstance(lines, list) else []:
                parts = line.split(b" ")
                if len(parts) >= 2 and parts[1] == b"EXISTS" and parts[0].isdigit():
                    with self.cond:
                        self.exists.setdefault(int(parts[0]), now)
                        self.cond.notify_all()

    def wait(self, count: int, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: count in self.exists, timeout):
                raise SystemExit(f"no EXISTS {count} at the bare client within {timeout} s")
            return self.exists[count]


class EventWatcher:
    """Listens on the owner's channel-layer group (what the websocket consumer joins) in its own
    thread and event loop; records the wall time of each `message.new` by subject."""

    def __init__(self, group: str):
        self.group = group
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.stop = False
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self):
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = await layer.new_channel("bench.")
        await layer.group_add(self.group, channel)
        self.ready.set()
        while not self.stop:
            try:
                event = await asyncio.wait_for(layer.receive(channel), timeout=1)
            except TimeoutError:
                continue
            now = time.time()
            if event.get("event") == "message.new":
                with self.cond:
                    self.seen.setdefault(event["data"].get("subject", ""), now)
                    self.cond.notify_all()

    def wait(self, subject: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: subject in self.seen, timeout):
                raise SystemExit(f"no message.new event for {subject!r} within {timeout} s")
            return self.seen[subject]


class HookTimes:
    """A local HTTP sink that stamps the wall time each webhook arrives."""

    def __init__(self):
        from tests.servers.http import HttpSink

        self.sink = HttpSink.start()
        self.times: list[float] = []
        record = self.sink._record

        def stamped(request):
            self.times.append(time.time())
            record(request)

        self.sink._record = stamped

    def wait(self, count: int, timeout: float) -> float:
        self.sink.wait_for(count, timeout)
        return self.times[count - 1]


def relay_to_sink(owner, account) -> HookTimes:
    """A webhook service and a route relaying the measured account's mail to a local sink."""
    from outgoing.models import Service
    from pipeline.models import Route, Subscriber, Subscription

    hooks = HookTimes()
    service = Service(owner=owner, kind="webhook", name="sink", rate_per_minute=0,
                      config={"url": hooks.sink.url("/hook"), "timeout": 10})
    service.set_secrets({"signing_secret": "bench-secret"})
    service.save()
    route = Route.objects.create(owner=owner, name="measured account", account=account)
    route.services.set([service])
    Subscription.objects.create(subscriber=Subscriber.objects.create(owner=owner, name="reader"), service=service)
    return hooks


def backfill(dovecot, name: str, count: int, wait: bool):
    """Another user's account whose mailbox holds `count` messages (written straight into its
    Maildir) added now: its first sync and standardize are the load. Returns (msg/s if waited, account)."""
    from django.contrib.auth import get_user_model

    from imap.accounts import create_account
    from imap.models import Account
    from pipeline.models import Message

    user = dovecot.add_user(name, f"{name}-pw")
    dovecot.create_folder(user.name, "Drafts")  # the first login creates the Maildir
    cur = os.path.join(user.maildir, "cur")
    stamp = int(time.time())
    for n in range(count):
        raw = (f"From: Sender {n} <sender{n}@example.test>\r\nTo: {name}@example.test\r\n"
               f"Subject: Old message {n}\r\nDate: Tue, 01 Jul 2025 10:00:00 +0000\r\n"
               f"Message-ID: <{name}-{n}@example.test>\r\n\r\n" + "Archived text of a message.\r\n" * 60).encode()
        with open(os.path.join(cur, f"{stamp}.M{n}P{os.getpid()}.bench,S={len(raw)}:2,"), "wb") as fh:
            fh.write(raw)
    owner = get_user_model().objects.create_user(name, f"{name}@example.test", "bench-password")
    started = time.monotonic()
    account = create_account(owner=owner, email=f"{name}@example.test", host="127.0.0.1", port=dovecot.port,
                             security=Account.Security.NONE, username=user.name, password=user.password)
    if not wait:
        return None, account
    done = Message.objects.filter(account=account, status="history")
    deadline = time.monotonic() + 3600
    while done.count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"backfill {name}: {done.count()} of {count} standardized after an hour")
        time.sleep(0.5)
    return count / (time.monotonic() - started), account


# The audit rows of a relayed message, in pipeline order: where its time went, stage by stage.
STAGE_EVENTS = ("fetched", "received", "standardized", "distributed", "sending", "sent")


def print_stage_gaps(account, appended: dict[str, float]) -> None:
    """Percentiles of the time between consecutive audit rows of the measured messages (the
    rows' `at` is stamped by the worker that wrote them): which hop a slow message waited in."""
    from pipeline.models import Event, Message

    gaps: dict[str, list[float]] = {}
    for message in Message.objects.filter(account=account):
        sent = next((t for mid, t in appended.items() if mid in message.message_id), None)
        if sent is None:
            continue
        times = {}
        for kind, at in Event.objects.filter(message=message).values_list("kind", "at").order_by("at"):
            times.setdefault(kind, at.timestamp())
        previous, previous_name = sent, "APPEND"
        for kind in STAGE_EVENTS:
            if kind in times:
                gaps.setdefault(f"{previous_name} -> {kind}", []).append(times[kind] - previous)
                previous, previous_name = times[kind], kind
    if gaps:
        print("stage gaps (audit rows of the measured messages):")
        for name, values in gaps.items():
            print(f"  {name:28s} {percentiles(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=200)
    parser.add_argument("--poll", type=float, help="MAILGATE_QUEUE_POLL for the worker (default: settings)")
    parser.add_argument("--under-load", action="store_true",
                        help="measure while another account's first sync + standardize runs")
    parser.add_argument("--backfill", type=int, default=20000, help="messages of that first sync")
    args = parser.parse_args()

    from idle_scale import setup_django

    from tests.servers.redis import RedisServer

    data_dir = tempfile.mkdtemp(prefix="mailgate-bench-latency-")
    # A real Redis so the worker's events cross processes to this one, as they reach daphne.
    redis_server = RedisServer.start()
    os.environ["REDIS_URL"] = redis_server.url
    setup_django(data_dir)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django_q.models import OrmQ, Task

    from imap.accounts import create_account
    from imap.models import Account, IdleSession
    from pipeline.models import Message
    from tests.servers import procs
    from tests.servers.dovecot import Dovecot

    dovecot = Dovecot.start()
    children: list[subprocess.Popen] = []
    try:
        user = dovecot.add_user("latency", "latency-pw")
        raw_user = dovecot.add_user("rawpush", "rawpush-pw")
        owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
        account = create_account(owner=owner, email="latency@example.test", host="127.0.0.1", port=dovecot.port,
                                 security=Account.Security.NONE, username=user.name, password=user.password)
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", MAILGATE_DATA_DIR=data_dir,
                   PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", DEBUG="0", SECRET_KEY=settings.SECRET_KEY,
                   MAILGATE_FERNET_KEYS=",".join(settings.MAILGATE_FERNET_KEYS), MAILGATE_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
        env.pop("MAILGATE_USE_TEST_DB", None)
        env["MAILGATE_STAGE_COMPANIONS"] = "1"  # as in production (tests.settings turns both off)
        env["MAILGATE_HAND_ON_ALONE"] = "1"
        if args.poll is not None:
            env["MAILGATE_QUEUE_POLL"] = str(args.poll)
            settings.Q_CLUSTER = {**settings.Q_CLUSTER, "poll": args.poll}  # for the printout
        logs = Path(data_dir) / "logs"
        logs.mkdir(exist_ok=True)
        for name, command in (("worker", "worker"), ("idle", "idle")):
            children.append(subprocess.Popen(
                [sys.executable, "manage.py", command], cwd=ROOT, env=env, start_new_session=True,
                stdout=open(logs / f"{name}.log", "ab"), stderr=subprocess.STDOUT))

        def wait_until(check, timeout, what, interval=0.002):
            deadline = time.monotonic() + timeout
            while not check():
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out: {what} (logs in {logs})")
                time.sleep(interval)

        wait_until(lambda: IdleSession.objects.filter(pk=account.pk, connected=True).exists(), 30,
                   "IDLE manager connected", 0.05)
        raw = RawWatcher(dovecot.host, dovecot.port, raw_user.name, raw_user.password)
        raw.thread.start()
        raw.ready.wait(10)
        quiet = lambda: not OrmQ.objects.exists()  # noqa: E731
        wait_until(quiet, 30, "initial catch-up sync done", 0.05)

        from mailgate.realtime import user_group

        watcher = EventWatcher(user_group(owner.pk))
        watcher.thread.start()
        watcher.ready.wait(10)
        rows = {key: [] for key in ("raw", "push", "stored", "adds", "to_task", "task", "ws", "hook")}
        hooks = None
        backfill_rates = {}
        backfill_account = None
        if args.under_load:
            hooks = relay_to_sink(owner, account)
            # Unloaded: a first sync of --backfill messages with nothing else going on.
            rate, _ = backfill(dovecot, "backfill-alone", args.backfill, wait=True)
            backfill_rates["alone"] = rate
            print(f"  backfill alone: {args.backfill} messages standardized at {rate:.1f} msg/s", flush=True)
            _, backfill_account = backfill(dovecot, "backfill-loaded", args.backfill, wait=False)
            backfill_started = time.monotonic()
            backfilled = Message.objects.filter(account=backfill_account, status="history")
            wait_until(lambda: backfilled.exists(), 120, "the loaded backfill started", 0.05)
        session = IdleSession.objects.filter(pk=account.pk)
        appended: dict[str, float] = {}
        for i in range(1, args.messages + 1):
            message_id = f"latency-{i}@example.test"
            body = (f"From: bob@example.test\r\nTo: latency@example.test\r\nSubject: latency {i}\r\n"
                    f"Message-ID: <{message_id}>\r\n\r\nBody {i}.\r\n").encode()
            previous_push = session.values_list("last_push_at", flat=True).get()
            sent = time.time()
            appended[message_id] = sent
            dovecot.append(user.name, "INBOX", body)
            raw_sent = time.time()
            dovecot.append(raw_user.name, "INBOX", body)
            found = Message.objects.filter(account=account, message_id__contains=message_id).exclude(status="headers")
            push_at = None
            deadline = time.monotonic() + 30
            while True:  # poll both: the first new last_push_at is this message's push
                if push_at is None:
                    value = session.values_list("last_push_at", flat=True).get()
                    if value != previous_push:
                        push_at = value.timestamp()
                if found.exists():
                    done = time.time()
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"message {i} not stored within 30 s (logs in {logs})")
                time.sleep(0.002)
            if push_at is None:
                push_at = session.values_list("last_push_at", flat=True).get().timestamp()
            if hooks is not None:
                rows["hook"].append(hooks.wait(i, 30) - sent)
                if backfilled.count() >= args.backfill:
                    print(f"  the backfill finished after {i} messages: later ones are not under load", flush=True)
                    args.messages = i
            else:
                wait_until(quiet, 30, "queue idle", 0.01)
            task = (Task.objects.filter(name=f"sync:{account.pk}:INBOX", started__gte=datetime.fromtimestamp(
                push_at, timezone.utc)).order_by("started").values_list("started", flat=True).first())
            rows["raw"].append(raw.wait(i, 10) - raw_sent)
            rows["ws"].append(watcher.wait(f"latency {i}", 30) - sent)
            rows["push"].append(push_at - sent)
            rows["stored"].append(done - sent)
            rows["adds"].append(done - push_at)
            if task is not None:
                rows["to_task"].append(task.timestamp() - push_at)
                rows["task"].append(done - task.timestamp())
            if i % 50 == 0:
                print(f"  {i} messages", flush=True)
            if i >= args.messages:
                break
        if backfill_account is not None:
            wait_until(lambda: backfilled.count() >= args.backfill, 3600, "the loaded backfill", 0.5)
            backfill_rates["loaded"] = args.backfill / (time.monotonic() - backfill_started)
        raw.stop = True
        watcher.stop = True

        print(f"messages: {args.messages}; Q_CLUSTER poll {settings.Q_CLUSTER['poll']} s; "
              f"workers {settings.Q_CLUSTER['workers']}; {connection.vendor}; Redis channel layer; plain IMAP to loopback")
        print(f"raw push  (APPEND -> EXISTS, bare aioimaplib):  {percentiles(rows['raw'])}")
        print(f"push      (APPEND -> EXISTS at mailgate):       {percentiles(rows['push'])}")
        print(f"stored    (APPEND -> raw bytes stored):         {percentiles(rows['stored'])}")
        print(f"mailgate adds (push -> stored):                 {percentiles(rows['adds'])}")
        print(f"websocket (APPEND -> message.new event):       {percentiles(rows['ws'])}")
        if rows["hook"]:
            print(f"webhook   (APPEND -> webhook at the sink):      {percentiles(rows['hook'])}")
            raw_p = sorted(rows["raw"])
            hook_p = sorted(rows["hook"])
            for p in (50, 99):
                pick = lambda v: v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]  # noqa: E731
                print(f"  webhook p{p} above Dovecot's own push (raw): {(pick(hook_p) - pick(raw_p)) * 1000:7.1f} ms")
        if backfill_rates:
            loaded = backfill_rates.get("loaded", 0.0)
            print(f"backfill ({args.backfill} messages, first sync + standardize): alone {backfill_rates['alone']:.1f} "
                  f"msg/s, with the live mail {loaded:.1f} msg/s ({loaded / backfill_rates['alone']:.0%})")
        if rows["task"]:
            print(f"  push -> enqueued (IDLE manager):              {percentiles(rows['to_task'])}")
            print(f"  enqueued -> stored (queue + worker + sync):   {percentiles(rows['task'])}")
        print_stage_gaps(account, appended)
        assert Message.objects.filter(account=account).count() == args.messages, "a message was lost or duplicated"
        if hooks is not None:
            keys = [r.header("Idempotency-Key") for r in hooks.sink.requests]
            assert len(keys) == len(set(keys)) == args.messages, "a webhook was lost or duplicated"
        print(f"every message stored exactly once ({args.messages} rows)")
    finally:
        for child in children:
            procs.stop(child)
        dovecot.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
