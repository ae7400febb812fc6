"""Inbox API latency at 100,000 messages: p50/p95 of list pages and searches, in-process.

    .venv/bin/python bench/api.py [--messages 100000] [--runs 200]

Builds a throw-away database (a temp data dir; PostgreSQL too when DATABASE_URL is set, as a
test_ database) with tables straight from the models, as the test suite does, seeds it with
bulk_create, and times requests through Django's test Client (URL routing, auth, JSON
encoding included; no network). Aim: p95 < 50 ms for a page, < 100 ms for a search.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MAILGATE_DATA_DIR", tempfile.mkdtemp(prefix="mailgate-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

WORDS = ("invoice report meeting quarterly budget lunch project deadline release server outage customer "
         "contract renewal holiday schedule update review design launch team hiring travel expense receipt "
         "security alert password newsletter webinar feedback survey order shipment delivery payment "
         "reminder agenda minutes proposal draft final approval signature backup migration database").split()
RARE = "zanzibar"


def timed(client, url, runs):
    samples = []
    for i in range(runs + 5):
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        if i >= 5:  # warm-up: first queries fill caches and prepare statements
            samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], response.json()


def seed(count: int):
    from django.contrib.auth import get_user_model

    from imap.models import Account, Folder, MessageLocation
    from pipeline.models import Message

    User = get_user_model()
    alice = User.objects.create_user("alice", "alice@example.test", "x")
    bob = User.objects.create_user("bob", "bob@example.test", "x")
    accounts = []
    for n, owner in enumerate([alice, alice, bob]):
        account = Account.objects.create(owner=owner, display_name=f"Account {n}", email=f"a{n}@example.test",
                                         host="imap.example.test", username=f"a{n}")
        accounts.append((account, Folder.objects.create(account=account, name="INBOX", uidvalidity=1)))
    accounts[2][0].members.add(alice)  # alice also sees bob's shared account
    rng = random.Random(42)
    start = 1_650_000_000
    batch, locations = [], []
    for i in range(count):
        account, folder = accounts[i % 3]
        subject = " ".join(rng.choices(WORDS, k=5)) + (f" {RARE}" if i % 5000 == 0 else "")
        body = " ".join(rng.choices(WORDS, k=60))
        flags = ["\\Seen"] if rng.random() < 0.7 else []
        if rng.random() < 0.05:
            flags.append("\\Flagged")
        from datetime import datetime, timezone

        batch.append(Message(
            owner_id=account.owner_id, account=account, folder=folder, identity=f"id-{i}",
            message_id=f"<{i}@example.test>", subject=subject.capitalize(), sender_name=f"Sender {i % 500}",
            sender_address=f"sender{i % 500}@example.test", text_body=body, snippet=body[:120], flags=flags,
            date=datetime.fromtimestamp(start + i * 900 + rng.randint(0, 600), tz=timezone.utc),
            has_attachments=rng.random() < 0.1, status="distributed", size=len(body)))
        if len(batch) == 5000:
            Message.objects.bulk_create(batch)
            locations += [MessageLocation(account=m.account, folder=m.folder, message=m, uidvalidity=1,
                                          uid=int(m.identity[3:]) + 1, flags=m.flags) for m in batch]
            batch = []
    if batch:
        Message.objects.bulk_create(batch)
        locations += [MessageLocation(account=m.account, folder=m.folder, message=m, uidvalidity=1,
                                      uid=int(m.identity[3:]) + 1, flags=m.flags) for m in batch]
    MessageLocation.objects.bulk_create(locations, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return alice, accounts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    settings.ALLOWED_HOSTS = ["testserver"]
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        from django.test import Client
        from django.test.utils import setup_test_environment

        from frontend import listing

        setup_test_environment()
        started = time.perf_counter()
        alice, accounts = seed(args.messages)
        print(f"database: {connection.vendor} ({name})")
        print(f"seeded {args.messages:,} messages (+ locations, search index) in {time.perf_counter() - started:.1f} s")

        client = Client()
        client.force_login(alice)
        # A cursor ~90% of the way down alice's list: deep pages must cost what page 1 costs.
        from pipeline.models import Message

        deep_row = (listing.filtered(alice, {}).values(*listing.ROW_FIELDS).order_by("-date", "-id")
                    [int(args.messages * 0.9 * 0.99)])
        deep = listing.encode_cursor(deep_row)
        account = accounts[0][0]
        cases = [
            ("page 1 (50 rows)", "/api/messages/", 50),
            ("deep page (cursor at ~90%)", f"/api/messages/?cursor={deep}", 50),
            ("page 1, unread only", "/api/messages/?unread=1", 50),
            ("page 1, one account + flagged", f"/api/messages/?account={account.pk}&flagged=1", 50),
            ("search: common word", "/api/messages/?q=invoice", 100),
            ("search: two words + prefix", "/api/messages/?q=budget%20deadl", 100),
            ("search: rare word", f"/api/messages/?q={RARE}", 100),
            ("search: no match", "/api/messages/?q=xylophone", 100),
        ]
        print(f"{'request':38} {'p50 ms':>8} {'p95 ms':>8} {'aim':>6} {'rows':>5}")
        failed = False
        for label, url, aim in cases:
            p50, p95, body = timed(client, url, args.runs)
            ok = p95 < aim
            failed |= not ok
            print(f"{label:38} {p50:8.1f} {p95:8.1f} {'<' + str(aim):>6} {len(body['results']):5d}"
                  f"{'' if ok else '  OVER AIM'}")
        assert Message.objects.count() == args.messages
        return 1 if failed else 0
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
