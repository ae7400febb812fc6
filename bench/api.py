"""Inbox API latency at 1,000,000 messages: p50/p95 of list pages, searches and thread views.

    .venv/bin/python bench/api.py                                   # 1,000,000 messages, SQLite
    .venv/bin/python bench/api.py --messages 100000 --runs 100
    .venv/bin/python bench/api.py --database-url postgres://postgres@127.0.0.1:5432/mailgate_bench
    .venv/bin/python bench/api.py --keep var/bench-api ...          # keep the seeded database ...
    .venv/bin/python bench/api.py --keep var/bench-api ...          # ... and reuse it next time

Builds a throw-away database (SQLite in a temp data dir, or a `test_` database beside the one
--database-url names) with tables straight from the models, as the test suite does, and seeds it
with bulk loads: executemany in large transactions on SQLite, COPY on PostgreSQL, the search index
(SQLite's FTS5 table, PostgreSQL's GIN index on the tsvector column that COPY fills) built once
after the rows, as `frontend.search.install` builds it for an existing database.
The text is generated to look like mail: a Zipf-distributed vocabulary of ~20,000 words (a few
common ones used by the searches below), bodies of lognormal length, senders, threads of one to
dozens of messages, 70 % read, 5 % flagged, one IMAP location each. Requests go through Django's
test Client (URL routing, auth, JSON encoding included; no network). Aims: p95 <= 50 ms for a
page and a thread, <= 100 ms for a search.

The machine may be shared with other work: the figures printed are absolute, one run's.
"""

import argparse
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200, help="timed requests per case (after 5 warm-up ones)")
    parser.add_argument("--database-url", help="PostgreSQL to bench on (a test_ database is made beside it)")
    parser.add_argument("--keep", metavar="DIR", help="keep the seeded database (SQLite in DIR) and reuse it when "
                                                      "it holds --messages messages")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS and ARGS.keep:
    Path(ARGS.keep).mkdir(parents=True, exist_ok=True)
    os.environ["MAILGATE_DATA_DIR"] = str(Path(ARGS.keep).resolve())
os.environ.setdefault("MAILGATE_DATA_DIR", tempfile.mkdtemp(prefix="mailgate-bench-"))
if ARGS and ARGS.database_url:
    os.environ["DATABASE_URL"] = ARGS.database_url
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

import django  # noqa: E402

django.setup()

from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

# The searches below look for these; they are the most frequent words of the vocabulary.
COMMON = ("invoice report meeting quarterly budget lunch project deadline release server outage customer "
          "contract renewal holiday schedule update review design launch team hiring travel expense receipt "
          "security alert password newsletter webinar feedback survey order shipment delivery payment "
          "reminder agenda minutes proposal draft final approval signature backup migration database").split()
FILLER = ("the to and of a in for is on that you it with be this we are as at have i your will our from "
          "please can not by or if all has an was would about thanks let know me more any so do us").split()
RARE = "zanzibar"  # in one subject of every 5,000
SYLLABLES = ("ka ri to me sa lo vi na pe du ge mi ro ta be li so fa ne zu pa co de ha la mo ni ru se ti "
             "vo we ya").split()


def vocabulary(rng, size=20_000):
    """Filler and common words first, then made-up words; cumulative Zipf weights (s = 1.07)."""
    words, seen = list(FILLER) + list(COMMON), set(FILLER) | set(COMMON) | {RARE, "xylophone"}
    while len(words) < size:
        word = "".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = list(itertools.accumulate(1 / (rank ** 1.07) for rank in range(1, len(words) + 1)))
    return words, weights


class Text:
    """Mail-like text, cheaply: one long Zipf-distributed word stream, cut into sentences and
    paragraphs once; a body is a window of it of lognormal length (median ~70 words), so a
    million bodies cost a million string slices, not seventy million random draws."""

    STREAM_WORDS = 4_000_000

    def __init__(self, rng):
        self.rng = rng
        self.words, self.cum = vocabulary(rng)
        drawn = rng.choices(self.words, cum_weights=self.cum, k=self.STREAM_WORDS)
        sentences, start = [], 0
        while start < len(drawn):
            end = start + rng.randint(6, 16)
            sentences.append(" ".join(drawn[start:end]).capitalize() + rng.choice(".....?!"))
            start = end
        self.stream = " ".join(sentence + ("\n\n" if rng.random() < 0.15 else "") for sentence in sentences)

    def words_of(self, n):
        return self.rng.choices(self.words, cum_weights=self.cum, k=n)

    def body(self):
        length = max(30, min(6000, int(self.rng.lognormvariate(math.log(480), 0.8))))  # characters
        start = self.rng.randrange(0, len(self.stream) - length)
        start = self.stream.find(" ", start) + 1  # whole words only
        return self.stream[start:start + length].rsplit(" ", 1)[0].strip()

    def subject(self):
        return " ".join(self.rng.choices(COMMON, k=self.rng.randint(1, 3)) + self.words_of(self.rng.randint(1, 4)))


# --- bulk loading ---------------------------------------------------------------------------------

def _columns(model, values: dict):
    """(column names, a converter per column) for a bulk load of `model` with `values` as the
    constant part; the converters turn Python values into what the driver loads fastest."""
    from django.db import models

    sqlite = connection.vendor == "sqlite"
    columns, converters = [], []
    for field in model._meta.concrete_fields:
        columns.append(field.column)
        kind = field.target_field if field.is_relation else field
        if isinstance(field, models.JSONField):
            converters.append(json.dumps)
        elif isinstance(kind, models.UUIDField):
            converters.append((lambda v: v.hex) if sqlite else None)
        elif isinstance(field, models.DateTimeField):
            converters.append((lambda v: v.isoformat(sep=" ")) if sqlite else None)
        elif isinstance(field, models.BooleanField):
            converters.append(int if sqlite else None)
        else:
            converters.append(None)
    defaults = model()
    template = []
    for field, convert in zip(model._meta.concrete_fields, converters):
        value = values.get(field.attname, getattr(defaults, field.attname))
        if isinstance(field, models.FileField):
            value = str(value or "")
        template.append(convert(value) if convert and value is not None else value)
    return columns, converters, template


def bulk_load(model, constant: dict, rows, varying: list[str]) -> int:
    """Insert rows of `model`: `constant` for every row, each item of `rows` a tuple of the
    `varying` fields (attnames). COPY on PostgreSQL, executemany on SQLite."""
    columns, converters, template = _columns(model, constant)
    attnames = [f.attname for f in model._meta.concrete_fields]
    slots = [(attnames.index(name), converters[attnames.index(name)]) for name in varying]
    table = connection.ops.quote_name(model._meta.db_table)
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)

    def converted():
        for item in rows:
            row = list(template)
            for (i, convert), value in zip(slots, item):
                row[i] = convert(value) if convert and value is not None else value
            yield row

    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                for row in converted():
                    copy.write_row(row)
                    count += 1
        else:
            sql = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(columns))})"
            batch = []
            for row in converted():
                batch.append(row)
                if len(batch) == 20_000:
                    cursor.executemany(sql, batch)
                    count += len(batch)
                    batch = []
            if batch:
                cursor.executemany(sql, batch)
                count += len(batch)
    return count


def seed(count: int):
    from django.contrib.auth import get_user_model

    from frontend import search
    from imap.models import Account, Folder
    from pipeline.models import Message, Thread

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
    text = Text(rng)
    senders = [(f"{rng.choice(FILLER).capitalize()} {w.capitalize()}", f"{w}{i}@example.test")
               for i, w in enumerate(text.words_of(5000))]
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)

    # Threads first (messages point at them): 60 % of messages start one; a reply joins one of
    # its account's 300 most recent threads, so conversations stay short-lived like real ones.
    thread_of, threads, recent = [], [], {0: [], 1: [], 2: []}
    for i in range(count):
        a = i % 3
        if not recent[a] or rng.random() < 0.6:
            threads.append([accounts[a][0].owner_id, text.subject(), i, i, 0])
            recent[a].append(len(threads))
            if len(recent[a]) > 300:
                recent[a].pop(0)
            tid = len(threads)
        else:
            tid = rng.choice(recent[a])
        threads[tid - 1][3] = i
        threads[tid - 1][4] += 1
        thread_of.append(tid)
    arrived = [start + timedelta(seconds=i * 30 + rng.randint(0, 29)) for i in range(count)]
    with transaction.atomic():
        bulk_load(Thread, {}, ((tid, owner, subject, subject.lower(), arrived[first], arrived[last], n)
                               for tid, (owner, subject, first, last, n) in enumerate(threads, 1)),
                  ["id", "owner_id", "subject", "normalized_subject", "first_message_at", "last_message_at",
                   "message_count"])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT setval(pg_get_serial_sequence('pipeline_thread', 'id'), %s)", [len(threads)])

    # The search index is built once after the rows, not row by row (see the module docstring).
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name in ("insert", "update", "delete"):
                cursor.execute(f"DROP TRIGGER IF EXISTS frontend_message_fts_{name}")
            cursor.execute(f"DROP TABLE IF EXISTS {search.SQLITE_FTS}")
        else:
            cursor.execute(f"DROP INDEX IF EXISTS {search.POSTGRES_INDEX}")  # the column is filled by COPY

    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]

    def messages():
        for i in range(count):
            account, folder = accounts[i % 3]
            tid = thread_of[i]
            thread = threads[tid - 1]
            subject = thread[1] if thread[2] == i else "Re: " + thread[1]
            if i % 5000 == 0:
                subject += f" {RARE}"
            body = text.body()
            name, address = senders[int(rng.paretovariate(1.2)) % len(senders)]
            flags = ["\\Seen"] if rng.random() < 0.7 else []
            if rng.random() < 0.05:
                flags.append("\\Flagged")
            when = arrived[i]
            yield (ids[i], account.owner_id, account.pk, folder.pk, f"id-{i}", f"<{i}.{tid}@example.test>", tid,
                   subject, name, address, body, body[:200].replace("\n", " "), flags, rng.random() < 0.1,
                   len(body) + 600, when - timedelta(seconds=rng.randint(5, 3600)), when, when, when)

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # The random UUID keys and address indexes are written all over their b-trees: with
            # SQLite's default 2 MB page cache every row would reread and rewrite pages.
            cursor.execute("PRAGMA cache_size = -1048576")  # KiB: 1 GiB, this connection only
    started = time.perf_counter()
    with transaction.atomic():
        n = bulk_load(Message, {"status": Message.Status.DISTRIBUTED, "source": Message.Source.IMAP,
                                "to": [{"name": "Alice", "address": "alice@example.test"}]},
                      messages(), ["id", "owner_id", "account_id", "folder_id", "identity", "message_id",
                                   "thread_id", "subject", "sender_name", "sender_address", "text_body",
                                   "snippet", "flags", "has_attachments", "size", "date", "arrived_at",
                                   "received_at", "updated_at"])
    print(f"  messages: {n:,} rows in {time.perf_counter() - started:.1f} s")
    return alice, accounts


def finish_seed(count: int) -> None:
    """Locations (one live IMAP location per message, in SQL: no rows through Python), the search
    index and planner statistics. Also resumes a --keep database whose load was interrupted."""
    from frontend import search
    from imap.models import MessageLocation

    started = time.perf_counter()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM imap_messagelocation")
            cursor.execute(
                "INSERT INTO imap_messagelocation (account_id, folder_id, message_id, uidvalidity, uid, flags, "
                "internaldate, size, gm_labels, created_at) "
                "SELECT account_id, folder_id, id, 1, row_number() OVER (ORDER BY arrived_at), flags, arrived_at, "
                "size, '[]', %s FROM pipeline_message", [datetime.now(timezone.utc)])
    print(f"  locations: {MessageLocation.objects.count():,} rows in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with transaction.atomic():
        search.install()
    print(f"  search index built in {time.perf_counter() - started:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def mid_words():
    """Two words of the generated vocabulary between the common and the rare (Zipf ranks 600 and
    4,000: in about 1 % and 0.15 % of messages); the vocabulary is the seed's (same random seed)."""
    words, _weights = vocabulary(random.Random(42))
    return [("mid-frequency", words[600]), ("less frequent", words[4000])]


def matches(word) -> int:
    from frontend import search
    from pipeline.models import Message

    return Message.objects.filter(search.matching(word)).count()


def server_cpu_ms() -> float:
    """CPU time so far of this connection's PostgreSQL backend (a process on this machine; the
    kernel's schedstat counts it in nanoseconds), 0 on SQLite (the database runs in this process)."""
    if connection.vendor != "postgresql":
        return 0.0
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[0]) / 1e6
    except OSError:  # a server on another host: the column is this process's CPU only
        return 0.0


def timed(client, urls, runs):
    """(p50, p95 wall ms, p95 CPU ms, last body). CPU: this process's, plus on PostgreSQL its
    backend's: what the request costs whatever else loads the machine (a wait for the CPU aside)."""
    samples, cpu = [], []
    for i in range(runs + 5):
        url = urls[i % len(urls)]
        started, started_cpu, started_server = time.perf_counter(), time.process_time(), server_cpu_ms()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        used = (time.process_time() - started_cpu) * 1000 + server_cpu_ms() - started_server
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        if i >= 5:  # warm-up: first queries fill caches and prepare statements
            samples.append(elapsed)
            cpu.append(used)
    samples.sort()
    cpu.sort()

    def p95(values):
        return values[math.ceil(len(values) * 0.95) - 1]

    return statistics.median(samples), p95(samples), p95(cpu), response.json()


def database_bytes() -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_database_size(current_database())")
            return cursor.fetchone()[0]
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_size")
        return pages * cursor.fetchone()[0]


def main():
    args = ARGS
    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.DEBUG = False  # as in production: no query log
    from pipeline.models import Message, Thread

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=bool(args.keep))
    try:
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment

        from frontend import listing
        from imap.models import Account, MessageLocation

        setup_test_environment()
        print(f"database: {connection.vendor} ({name})")
        if args.keep and Message.objects.count() == args.messages:
            alice = get_user_model().objects.get(username="alice")
            account = Account.objects.filter(owner=alice).order_by("pk").first()
            print(f"reusing {args.messages:,} seeded messages")
            if MessageLocation.objects.count() != args.messages:
                finish_seed(args.messages)  # an interrupted load
        else:
            if Message.objects.exists():
                connection.creation.destroy_test_db(name, verbosity=0, keepdb=False)
                name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
            started = time.perf_counter()
            alice, accounts = seed(args.messages)
            finish_seed(args.messages)
            account = accounts[0][0]
            print(f"seeded {args.messages:,} messages (+ threads, locations, search index) "
                  f"in {time.perf_counter() - started:.1f} s")
        size = database_bytes()
        print(f"database size {size / 2**20:,.0f} MiB: {size / args.messages:,.0f} bytes per message")

        client = Client()
        client.force_login(alice)
        # A cursor ~90% of the way down alice's list: deep pages must cost what page 1 costs.
        rows = listing.filtered(alice, {}).values(*listing.ROW_FIELDS).order_by("-arrived_at", "-id")
        deep = listing.encode_cursor(rows[int(args.messages * 0.9 * 0.99)])
        rng = random.Random(1)
        top = Thread.objects.order_by("-pk").values_list("pk", flat=True).first()
        threads = []
        while len(threads) < 50:  # messages of random threads with a reply or more
            tid = rng.randint(1, top)
            if Thread.objects.filter(pk=tid, message_count__gte=2).exists():
                pk = Message.objects.filter(thread_id=tid).values_list("pk", flat=True).first()
                threads.append(f"/api/messages/{pk}/thread/")
        longest = Thread.objects.order_by("-message_count").values_list("pk", "message_count").first()
        biggest = Message.objects.filter(thread_id=longest[0]).values_list("pk", flat=True).first()
        cases = [
            ("page 1 (50 rows)", ["/api/messages/"], 50),
            ("deep page (cursor at ~90%)", [f"/api/messages/?cursor={deep}"], 50),
            ("page 1, unread only", ["/api/messages/?unread=1"], 50),
            ("page 1, one account + flagged", [f"/api/messages/?account={account.pk}&flagged=1"], 50),
            ("search: common word", ["/api/messages/?q=invoice"], 100),
            ("search: two words + prefix", ["/api/messages/?q=budget%20deadl"], 100),
            *((f"search: {label} word ({matches(word):,} matches)", [f"/api/messages/?q={word}"], 100)
              for label, word in mid_words()),
            ("search: rare word", [f"/api/messages/?q={RARE}"], 100),
            ("search: no match", ["/api/messages/?q=xylophone"], 100),
            ("thread view (50 threads, 2+ messages)", threads, 50),
            (f"thread view (longest: {longest[1]} messages)", [f"/api/messages/{biggest}/thread/"], 50),
        ]
        print(f"load average before the requests: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs")
        print(f"{'request':40} {'p50 ms':>8} {'p95 ms':>8} {'cpu p95':>8} {'aim':>6} {'rows':>5}")
        failed = False
        for label, urls, aim in cases:
            p50, p95, cpu95, body = timed(client, urls, args.runs)
            ok = p95 <= aim
            failed |= not ok
            print(f"{label:40} {p50:8.1f} {p95:8.1f} {cpu95:8.1f} {'<=' + str(aim):>6} {len(body['results']):5d}"
                  f"{'' if ok else '  OVER AIM'}", flush=True)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        assert Message.objects.count() == args.messages
        return 1 if failed else 0
    finally:
        if not args.keep:
            connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
