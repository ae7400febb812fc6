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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=200)
    parser.add_argument("--poll", type=float, help="MAILGATE_QUEUE_POLL for the worker (default: settings)")
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
        if args.poll is not None:
            env["MAILGATE_QUEUE_POLL"] = str(args.poll)
            settings.Q_CLUSTER = {**settings.Q_CLUSTER, "poll": args.poll}  # for the printout
        logs = Path(data_dir) / "logs"
        logs.mkdir(exist_ok=True)
        for name, command in (("worker", "qcluster"), ("idle", "idle")):
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
        rows = {key: [] for key in ("raw", "push", "stored", "adds", "to_task", "task", "ws")}
        session = IdleSession.objects.filter(pk=account.pk)
        for i in range(1, args.messages + 1):
            message_id = f"latency-{i}@example.test"
            body = (f"From: bob@example.test\r\nTo: latency@example.test\r\nSubject: latency {i}\r\n"
                    f"Message-ID: <{message_id}>\r\n\r\nBody {i}.\r\n").encode()
            previous_push = session.values_list("last_push_at", flat=True).get()
            sent = time.time()
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
        raw.stop = True
        watcher.stop = True

        print(f"messages: {args.messages}; Q_CLUSTER poll {settings.Q_CLUSTER['poll']} s; "
              f"workers {settings.Q_CLUSTER['workers']}; SQLite; Redis channel layer; plain IMAP to loopback")
        print(f"raw push  (APPEND -> EXISTS, bare aioimaplib):  {percentiles(rows['raw'])}")
        print(f"push      (APPEND -> EXISTS at mailgate):       {percentiles(rows['push'])}")
        print(f"stored    (APPEND -> raw bytes stored):         {percentiles(rows['stored'])}")
        print(f"mailgate adds (push -> stored):                 {percentiles(rows['adds'])}")
        print(f"websocket (APPEND -> message.new event):       {percentiles(rows['ws'])}")
        if rows["task"]:
            print(f"  push -> enqueued (IDLE manager):              {percentiles(rows['to_task'])}")
            print(f"  enqueued -> stored (queue + worker + sync):   {percentiles(rows['task'])}")
        assert Message.objects.filter(account=account).count() == args.messages, "a message was lost or duplicated"
        print(f"every message stored exactly once ({args.messages} rows)")
    finally:
        for child in children:
            procs.stop(child)
        dovecot.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
