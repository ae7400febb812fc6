"""Benchmark: mailgate batch sync vs a plain imap-tools fetch of the same mailbox.

    .venv/bin/python bench/sync.py [--messages 2000] [--size 2000] [--rounds 3]

Starts a private Dovecot (tests/servers/dovecot.py), writes the messages straight into the user's
Maildir, warms both clients up on a 100-message mailbox (untimed), then in one run:
  * mailgate: imap.sync.sync_account_now into a fresh SQLite database in a temp dir (Django set up
    with tests.settings but DEBUG off, the schema from the real migrations), both phases, raw bytes stored (a fresh file store per run),
    standardize tasks enqueued (django-q ORM broker rows) - everything a real sync does;
  * the same with the standardize enqueue disabled, to show the cost of the queue inserts;
  * plain: imap-tools MailBoxUnencrypted.fetch(mark_seen=False, bulk=True), each message parsed by
    the stdlib (subject, from, text) and nothing stored.
Prints the median messages/s of each over --rounds interleaved rounds and the ratio mailgate/plain. See docs/sync.md for what bounds it.

    .venv/bin/python bench/sync.py --first-sync [--messages 5000]

times instead a first sync *until every message is standardized* (issue #14): a realistic mailbox
(60 % plain text, 30 % multipart/alternative with HTML, 10 % with a 200 KB attachment), the
account added while `manage.py worker` runs (both lanes, default worker counts), against a plain
imap-tools bulk fetch + stdlib `policy.default` parse + `get_body` of the same mailbox, in one run.
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
        pipeline_queue.enqueue_many = lambda stage, object_ids, lane=None: None
    try:
        # A fresh file store per run: raw files are content-addressed, so a run after another one
        # would otherwise find every file already written.
        with override_settings(MEDIA_ROOT=tempfile.mkdtemp(prefix=f"files-{label}-", dir=os.environ["MAILGATE_DATA_DIR"])):
            started = time.perf_counter()
            report = sync_account_now(account)
            seconds = time.perf_counter() - started
    finally:
        pipeline_queue.enqueue_many = original
        # The next round connects the same mailbox afresh: one enabled account per mailbox.
        Account.objects.filter(pk=account.pk).update(enabled=False)
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


def realistic(n: int) -> bytes:
    """60 % plain text, 30 % alternative with HTML, 10 % with a 200 KB attachment."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"] = f"Sender {n % 97} <sender{n % 97}@example.test>", "bench@example.test"
    msg["Subject"] = f"Realistic message {n}"
    msg["Date"] = "Tue, 01 Jul 2025 10:00:00 +0000"
    msg["Message-ID"] = f"<real-{n}@example.test>"
    text = f"Hello {n},\n\n" + "A line of an ordinary message, with some words in it.\n" * 30
    msg.set_content(text)
    kind = n % 10
    if 6 <= kind <= 8:
        msg.add_alternative("<html><body>" + "".join(f"<p>Paragraph {i} with <b>bold</b> and "
                                                     f"<a href='https://example.test/{i}'>a link</a>.</p>"
                                                     for i in range(30)) + "</body></html>", subtype="html")
    elif kind == 9:
        msg.add_attachment(bytes(range(256)) * 800, maintype="application", subtype="pdf", filename=f"report-{n}.pdf")
    return msg.as_bytes()


def fill_realistic(dovecot: Dovecot, user, count: int) -> None:
    dovecot.create_folder(user.name, "Drafts")
    cur = os.path.join(user.maildir, "cur")
    stamp = int(time.time())
    for i in range(count):
        raw = realistic(i).replace(b"\n", b"\r\n")
        with open(os.path.join(cur, f"{stamp}.M{i}P{os.getpid()}.real,S={len(raw)}:2,"), "wb") as fh:
            fh.write(raw)
    dovecot.flags(user.name, "INBOX")


def plain_parse_rate(dovecot, user) -> float:
    """imap-tools bulk fetch + stdlib policy.default parse + get_body: a plain first-sync loop."""
    import email
    from email import policy

    from imap_tools import MailBoxUnencrypted

    started = time.perf_counter()
    count = 0
    with MailBoxUnencrypted(dovecot.host, dovecot.port, timeout=60).login(user.name, user.password) as box:
        for msg in box.fetch(mark_seen=False, bulk=True):
            parsed = email.message_from_bytes(msg.obj.as_bytes(), policy=policy.default)
            body = parsed.get_body(("html", "plain"))
            _ = (parsed["subject"], parsed["from"], body.get_content() if body else "")
            count += 1
    return count / (time.perf_counter() - started)


def first_sync(args) -> None:
    import subprocess

    from django.contrib.auth import get_user_model

    from imap.accounts import create_account
    from imap.models import Account
    from pipeline.models import Message

    owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
    data_dir = os.environ["MAILGATE_DATA_DIR"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", DEBUG="0", SECRET_KEY=settings.SECRET_KEY,
               MAILGATE_FERNET_KEYS=",".join(settings.MAILGATE_FERNET_KEYS), MAILGATE_STAGE_COMPANIONS="1",
               MAILGATE_HAND_ON_ALONE="1")
    with Dovecot.start() as dovecot:
        user = dovecot.add_user("real", "real-secret")
        fill_realistic(dovecot, user, args.messages)
        plain = plain_parse_rate(dovecot, user)
        worker = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=ROOT, env=env, start_new_session=True,
                                  stdout=open(os.path.join(data_dir, "worker.log"), "ab"), stderr=subprocess.STDOUT)
        try:
            time.sleep(3)  # the clusters start (untimed)
            started = time.perf_counter()
            account = create_account(owner=owner, email="real@example.test", host="127.0.0.1", port=dovecot.port,
                                     security=Account.Security.NONE, username=user.name, password=user.password,
                                     folders_include=["INBOX"])
            done = Message.objects.filter(account=account, status__in=["history", "suppressed", "standardized",
                                                                       "distributed"])
            stored = None
            while (count := done.count()) < args.messages:
                if stored is None and Message.objects.filter(account=account, status="received").exists():
                    stored = time.perf_counter() - started
                if time.perf_counter() - started > 3600:
                    raise SystemExit(f"only {count} of {args.messages} standardized after an hour")
                time.sleep(0.2)
            seconds = time.perf_counter() - started
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(60)
    from django.db import connection

    workers = settings.Q_CLUSTER["workers"], settings.Q_CLUSTER.get("ALT_CLUSTERS", {}).get("mailgate-bulk", {}).get("workers", 0)
    print(f"first sync of {args.messages} realistic messages (60 % plain, 30 % HTML alternative, 10 % 200 KB "
          f"attachment), worker: live {workers[0]} + bulk {workers[1]}, {connection.vendor}, DEBUG off")
    print(f"plain imap-tools fetch + policy.default parse + get_body: {plain:8.1f} msg/s")
    print(f"mailgate first sync until all standardized:              {args.messages / seconds:8.1f} msg/s  "
          f"({seconds:.1f} s; first body stored after {stored or 0:.1f} s)   ratio {args.messages / seconds / plain:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=2000, help="body bytes per message")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each client")
    parser.add_argument("--first-sync", action="store_true", help="first sync until standardized, realistic mail")
    args = parser.parse_args()

    # The real migrations, as a deployment runs them (not the test suite's tables straight from
    # the models): they also add the queue's index (pipeline/migrations/0009) the pushers poll by.
    # tests.settings turns DEBUG on (throwaway keys); a deployment runs without it, and with it
    # Django formats and keeps every SQL statement (~10 % of the sync's time here).
    settings.DEBUG = False
    call_command("migrate", verbosity=0)
    if args.first_sync:
        first_sync(args)
        return
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
