"""Benchmark: mailgate batch sync vs a plain imap-tools fetch of the same mailbox.

    .venv/bin/python bench/sync.py [--messages 2000] [--size 2000] [--rounds 3]

Starts a private Dovecot (tests/servers/dovecot.py), writes the messages straight into the user's
Maildir, warms both clients up on a 100-message mailbox (untimed), then in one run:
  * mailgate: imap.sync.sync_account_now into a fresh SQLite database in a temp dir (Django set up
    with tests.settings but DEBUG off), both phases, raw bytes stored (a fresh file store per run),
    standardize tasks enqueued (django-q ORM broker rows) - everything a real sync does;
  * the same with the standardize enqueue disabled, to show the cost of the queue inserts;
  * plain: imap-tools MailBoxUnencrypted.fetch(mark_seen=False, bulk=True), each message parsed by
    the stdlib (subject, from, text) and nothing stored.
Prints the median messages/s of each over --rounds interleaved rounds and the ratio mailgate/plain. See docs/sync.md for what bounds it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["MAILGATE_DATA_DIR"] = tempfile.mkdtemp(prefix="mailgate-bench-")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ.setdefault("MAILGATE_LOG_LEVEL", "WARNING")
os.environ.setdefault("MAILGATE_Q_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from tests.servers.dovecot import Dovecot  # noqa: E402


def message(n: int, size: int) -> bytes:
    body = (f"Line {n} of a benchmark message, plain text. " * (size // 40 + 1))[:size]
    return (f"From: Sender {n} <sender{n}@example.test>\r\nTo: bench@example.test\r\n"
            f"Subject: Benchmark message {n}\r\nDate: Tue, 01 Jul 2025 10:00:00 +0000\r\n"
            f"Message-ID: <bench-{n}@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}\r\n").encode()


def fill(dovecot: Dovecot, user, count: int, size: int) -> None:
    dovecot.create_folder(user.name, "Drafts")  # first login creates the Maildir
    cur = os.path.join(user.maildir, "cur")
    stamp = int(time.time())
    for i in range(count):
        raw = message(i, size)
        path = os.path.join(cur, f"{stamp}.M{i}P{os.getpid()}.bench,S={len(raw)}:2,")
        with open(path, "wb") as fh:
            fh.write(raw)
        os.chown(path, user.uid, user.gid)
    dovecot.flags(user.name, "INBOX")  # let Dovecot assign UIDs before anything is timed


def mailgate_rate(dovecot, user, owner, label: str, enqueue: bool) -> tuple[float, dict]:
    from imap.accounts import create_account
    from imap.models import Account
    from imap.sync import sync_account_now
    from pipeline import queue as pipeline_queue

    account = create_account(owner=owner, email=f"{label}@example.test", host="127.0.0.1", port=dovecot.port,
                             security=Account.Security.NONE, username=user.name, password=user.password,
                             folders_include=["INBOX"])
    original = pipeline_queue.enqueue_many
    if not enqueue:
        pipeline_queue.enqueue_many = lambda stage, object_ids: None
    try:
        # A fresh file store per run: raw files are content-addressed, so a run after another one
        # would otherwise find every file already written.
        with override_settings(MEDIA_ROOT=tempfile.mkdtemp(prefix=f"files-{label}-", dir=os.environ["MAILGATE_DATA_DIR"])):
            started = time.perf_counter()
            report = sync_account_now(account)
            seconds = time.perf_counter() - started
    finally:
        pipeline_queue.enqueue_many = original
    assert not report.errors, report.errors
    return report.stats.bodies / seconds, report.as_dict()


def plain_rate(dovecot, user) -> float:
    from imap_tools import MailBoxUnencrypted

    started = time.perf_counter()
    count = 0
    with MailBoxUnencrypted(dovecot.host, dovecot.port, timeout=60).login(user.name, user.password) as box:
        for msg in box.fetch(mark_seen=False, bulk=True):
            # What any consumer does at least: parse the message and read the basic fields.
            _ = (msg.subject, msg.from_, msg.to, msg.date, msg.text, msg.html, msg.attachments)
            count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=2000, help="body bytes per message")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each client")
    args = parser.parse_args()

    # Tables straight from the models, as the test suite does (--nomigrations).
    from django.apps import apps

    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    # tests.settings turns DEBUG on (throwaway keys); a deployment runs without it, and with it
    # Django formats and keeps every SQL statement (~10 % of the sync's time here).
    settings.DEBUG = False
    call_command("migrate", run_syncdb=True, verbosity=0)
    from django.contrib.auth import get_user_model

    from django_q.models import OrmQ

    owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
    with Dovecot.start() as dovecot:
        # Untimed warm-up of both clients on a small mailbox (imports, first queries, caches), as a
        # long-running worker is warm; otherwise whichever run comes first pays for it.
        warmup = dovecot.add_user("warmup", "warmup-secret")
        fill(dovecot, warmup, 100, args.size + 1)
        plain_rate(dovecot, warmup)
        mailgate_rate(dovecot, warmup, owner, "warmup", enqueue=True)
        OrmQ.objects.all().delete()

        user = dovecot.add_user("bench", "bench-secret")
        fill(dovecot, user, args.messages, args.size)
        # Interleaved rounds, medians: on a shared 2-core machine one short run can be off by 2x.
        plain, full, bare = [], [], []
        for n in range(args.rounds):
            plain.append(plain_rate(dovecot, user))
            rate, report = mailgate_rate(dovecot, user, owner, f"full{n}", enqueue=True)
            full.append(rate)
            bare.append(mailgate_rate(dovecot, user, owner, f"noqueue{n}", enqueue=False)[0])
        queued = OrmQ.objects.count()
    database = settings.DATABASES["default"]
    print(f"messages: {args.messages} x ~{args.size + 250} bytes, batch {settings.MAILGATE_SYNC_BATCH_SIZE}, "
          f"database {database['ENGINE'].rsplit('.', 1)[-1]} (CONN_MAX_AGE={database['CONN_MAX_AGE']}), DEBUG off")
    print(f"median of {args.rounds} interleaved rounds (min-max in brackets)")

    def line(label, rates, ratio=True):
        median = statistics.median(rates)
        text = f"{label}: {median:8.0f} msg/s  [{min(rates):.0f}-{max(rates):.0f}]"
        if ratio:
            text += f"   ratio {median / statistics.median(plain):.2f}"
        print(text)

    line("plain imap-tools fetch + parse ", plain, ratio=False)
    line("mailgate sync (with queue)     ", full)
    line("mailgate sync (queue disabled) ", bare)
    print(f"last report: {report}, standardize tasks queued in all rounds: {queued}")


if __name__ == "__main__":
    main()
