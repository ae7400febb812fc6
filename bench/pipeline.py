"""Benchmark: a backlog of messages from ingest to the sink through the real pipeline (`manage.py
worker`: the live and bulk lanes' clusters with the default worker counts), printed beside a plain
loop that parses and sends the same messages without the pipeline, in the same run.

    .venv/bin/python bench/pipeline.py [--messages 2000] [--backlog] [--target webhook|smtp] [--profile FILE]

Prints, for the pipeline: the first message at the sink after the first one stored (a backlog must
flow at once, issue #19; with --backlog all are stored in one transaction, so the whole backlog is
queued at once, as after an outage, and times count from its commit), all at the sink after the
first stored, messages/s, and the SQL statements per message, ingest to sent, counted in-process
(the same stage functions, run synchronously, since a count cannot be taken inside the worker
processes) one message per task and in the worker's batches (a stage batch of messages, stored with
one ingest_raw_many as an import stores them, sends in batches of MAILGATE_SEND_BATCH), with
BEGIN/COMMIT (which Django logs as queries) counted apart.
The messages are imports, so they go through the bulk lane. Runs on a throwaway data dir (SQLite,
or a fresh database that DATABASE_URL names), so it touches nothing of a real install; the schema is built
by the real migrations and the worker runs with DEBUG off, as `scripts/run` deploys them (DEBUG
makes Django format and keep every statement, on SQLite with one more query each). --profile writes a cProfile of the in-process stages of
200 messages run in batches (see docs/pipeline.md).
"""

import argparse
import http.client
import json
import os
import threading
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cpu  # noqa: E402


def make_raw(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.test>"
    msg["To"] = "team@example.test"
    msg["Subject"] = f"Bench message {n}"
    msg["Message-ID"] = f"<bench-{n}@example.test>"
    msg["Date"] = "Mon, 03 Mar 2025 10:00:00 +0000"
    msg.set_content(f"Hello {n},\n\n" + "A line of ordinary text for the benchmark.\n" * 20)
    msg.add_alternative(f"<p>Hello {n}</p>" + "<p>A line of <b>ordinary</b> text.</p>" * 20, subtype="html")
    return msg.as_bytes()


def queries_per_message(owner, tasks, ingest_raw, Delivery, sample: int, batched: bool,
                        tag: str) -> tuple[float, float]:
    """(SQL statements, BEGIN/COMMIT) per message, ingest to sent, counted in this process."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pipeline.ingest import ingest_raw_many

    raws = [(make_raw(10_000 + n), f"q-{tag}-{n}", {}) for n in range(sample)]
    with CaptureQueriesContext(connection) as queries:
        if batched:  # stored as the --backlog run and an import store them, a stage batch at a time
            messages = [m for m, _ in ingest_raw_many(owner=owner, items=raws, source="import")]
        else:  # each on its own, as an inbound webhook stores it
            messages = [ingest_raw(owner=owner, raw=raw, identity=identity, source="import")[0]
                        for raw, identity, _ in raws]
        ids = [str(m.pk) for m in messages]
        if batched:  # as the worker batches them: `sample` is a stage batch; sends by MAILGATE_SEND_BATCH
            tasks.standardize(ids)
            tasks.distribute(ids)
            deliveries = [str(pk) for pk in Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True)]
            for i in range(0, len(deliveries), settings.MAILGATE_SEND_BATCH):
                tasks.send(deliveries[i:i + settings.MAILGATE_SEND_BATCH])
        else:
            for pk in ids:
                tasks.standardize(pk)
                tasks.distribute(pk)
                for delivery in Delivery.objects.filter(message_id=pk):
                    tasks.send(str(delivery.pk))
    # BEGIN/COMMIT apart: Django logs them as queries too (debug_transaction); they mark where a
    # stage's writes become atomic, and the statements between them are what a message costs.
    control = sum(1 for q in queries if q["sql"].split(None, 1)[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK"))
    return (len(queries) - control) / sample, control / sample


def queries_line(one, batched, sample: int) -> str:
    return (f"SQL statements a message, ingest to sent: {batched[0]:.1f} in batches of {sample} "
            f"(+{batched[1]:.1f} BEGIN/COMMIT; stored a batch at a time, as an import and this backlog), "
            f"{one[0]:.1f} one per task (+{one[1]:.1f}; each stored alone, as a webhook)")


def plain_send(target: str, sink, parsed) -> None:
    if target == "smtp":
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = "gate@bench.test", "reader@example.test", parsed.subject or ""
        email.set_content(parsed.text_body)
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.send_message(email)
        return
    body = json.dumps({"subject": parsed.subject, "from": parsed.sender_address, "text": parsed.text_body,
                       "html": parsed.html_body}).encode()
    conn = http.client.HTTPConnection(sink.host, sink.port, timeout=10)
    conn.request("POST", "/hook", body, {"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()


def classify_process(connection):
    """Names the processes a run's CPU is counted for: the worker's clusters, their html2text
    children, the database server's backends for this database, and this process."""
    me, database = os.getpid(), connection.settings_dict["NAME"]

    def classify(pid: int, command: str):
        if pid == me:
            return "this process (stores the backlog, runs the sink)"
        if "html2text_child" in command:
            return "html2text children"
        if "manage.py qcluster" in command or "manage.py worker" in command:
            return "worker clusters (workers, pushers, monitors)"
        if command.startswith("postgres:") and f" {database} " in command:
            return "PostgreSQL server"
        return None

    return classify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--target", choices=["webhook", "smtp"], default="webhook")
    parser.add_argument("--profile", help="write a cProfile of the in-process stages here")
    parser.add_argument("--profile-only", action="store_true", help="stop after the queries and the profile")
    parser.add_argument("--backlog", action="store_true",
                        help="store all messages in one transaction, so the whole backlog is queued at once "
                             "(an outage catch-up); times count from its commit")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="mailgate-bench-")
    os.environ.update(DJANGO_SETTINGS_MODULE="mailgate.settings", MAILGATE_DATA_DIR=data_dir, DEBUG="1",
                      MAILGATE_CHANNEL_LAYER="memory", MAILGATE_LOG_LEVEL="WARNING",
                      MAILGATE_ALLOW_PRIVATE_TARGETS="1")  # the sinks are on loopback
    import django
    from django.conf import settings

    django.setup()
    # The real migrations, not tables straight from the models as the test suite builds them: they
    # also add the queue's index (pipeline/migrations/0009) that the pushers' polls use.
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.contrib.auth import get_user_model
    from django.db import connection

    from outgoing.models import Service
    from pipeline import tasks
    from pipeline.ingest import ingest_raw, ingest_raw_many
    from pipeline.models import Delivery, Route, Subscriber, Subscription
    from pipeline.parsing import parse_message
    from tests.servers.http import HttpSink
    from tests.servers.smtp import SmtpSink

    sink = SmtpSink.start() if args.target == "smtp" else HttpSink.start()
    cluster = None
    try:
        owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
        if args.target == "smtp":
            service = Service.objects.create(owner=owner, kind="smtp", name="sink", rate_per_minute=0, config={
                "host": sink.host, "port": sink.port, "security": "none", "from_address": "gate@bench.test"})
        else:
            service = Service(owner=owner, kind="webhook", name="sink", rate_per_minute=0,
                              config={"url": sink.url("/hook"), "timeout": 10})
            service.set_secrets({"signing_secret": "bench-secret"})
            service.save()
        route = Route.objects.create(owner=owner, name="all")
        route.services.set([service])
        subscriber = Subscriber.objects.create(owner=owner, name="reader")
        Subscription.objects.create(subscriber=subscriber, service=service,
                                    address="reader@example.test" if args.target == "smtp" else "")

        # 1. Statements per message: every stage of one stage batch of messages, run in this process.
        sample = settings.MAILGATE_STAGE_BATCH  # one stage batch, as a worker takes them
        per_message = queries_per_message(owner, tasks, ingest_raw, Delivery, sample, False, "one")
        per_message_batched = queries_per_message(owner, tasks, ingest_raw, Delivery, sample, True, "batch")
        sink.wait_for(2 * sample, timeout=60)
        if args.profile:
            import cProfile

            ids = [str(ingest_raw(owner=owner, raw=make_raw(20_000 + n), identity=f"p-{n}", source="import")[0].pk)
                   for n in range(200)]
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(0, len(ids), 50):
                tasks.standardize(ids[i:i + 50])
                tasks.distribute(ids[i:i + 50])
            tasks.send([str(pk) for pk in Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True)])
            profiler.disable()
            profiler.dump_stats(args.profile)
            sink.wait_for(2 * sample + 200, timeout=60)
        sink.clear()
        if args.profile_only:
            print(queries_line(per_message, per_message_batched, sample))
            return

        # 2. The pipeline with a real worker (both lanes, default worker counts from settings).
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", DEBUG="0",
                   SECRET_KEY=settings.SECRET_KEY, MAILGATE_FERNET_KEYS=",".join(settings.MAILGATE_FERNET_KEYS))
        log = open(Path(data_dir) / "worker.log", "ab")
        cluster = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        warm, _ = ingest_raw(owner=owner, raw=make_raw(99_999), identity="warm-up", source="import")
        sink.wait_for(1, timeout=120)  # the cluster is up and every stage has run once
        sink.clear()
        raws = [make_raw(n) for n in range(args.messages)]
        from django.db.models import Max
        from django_q.models import OrmQ

        # Queue rows are numbered in order (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so
        # the tasks the run queued are the ids it used: each was polled, locked, run and deleted
        # besides the statements counted in process.
        tasks_before = OrmQ.objects.aggregate(last=Max("id"))["last"] or 0
        first_sent = []
        watcher = threading.Thread(target=lambda: (sink.wait_for(1, timeout=600),
                                                   first_sent.append(time.perf_counter())), daemon=True)
        watcher.start()
        cpu_before = cpu.snapshot()
        started = time.perf_counter()
        first_stored, committed = None, []
        if args.backlog:
            from django.db import transaction

            with transaction.atomic():  # the messages and their tasks become visible at the commit
                # Runs first of the commit's callbacks: the moment every message is stored.
                transaction.on_commit(lambda: (committed.append(time.perf_counter()),
                                               cpu_before.update(cpu.snapshot())))
                batch = settings.MAILGATE_STAGE_BATCH  # as an import stores them
                for start in range(0, len(raws), batch):
                    ingest_raw_many(owner=owner, source="import", items=[
                        (raw, f"bench-{n}", {}) for n, raw in enumerate(raws[start:start + batch], start)])
            # Times count from the commit (the workers start on the tasks at once), not from the
            # end of its callbacks, the live hints of every message.
            callbacks_done = time.perf_counter()
            started = first_stored = committed[0]
        else:
            for n, raw in enumerate(raws):
                ingest_raw(owner=owner, raw=raw, identity=f"bench-{n}", source="import")
                if first_stored is None:
                    first_stored = time.perf_counter()
        ingest_done = time.perf_counter()
        sink.wait_for(args.messages, timeout=1200)
        finished = time.perf_counter()
        cpu_spent = cpu.spent(cpu_before, cpu.snapshot(), classify_process(connection))
        watcher.join(5)
        tasks_queued = (OrmQ.objects.aggregate(last=Max("id"))["last"] or 0) - tasks_before
        pipeline_seconds = finished - started

        # 3. The same messages parsed and sent in a plain loop.
        sink.clear()
        plain_started = time.perf_counter()
        for raw in raws:
            plain_send(args.target, sink, parse_message(raw))
        sink.wait_for(args.messages, timeout=120)
        plain_seconds = time.perf_counter() - plain_started

        from pipeline.queue import Lane
        workers = settings.Q_CLUSTER["workers"]
        bulk = settings.Q_CLUSTER["ALT_CLUSTERS"][Lane.BULK.cluster]["workers"]
        print(f"messages: {args.messages}, target: {args.target}, workers: live {workers} + bulk {bulk} "
              f"(imports: bulk lane), stage batch {settings.MAILGATE_STAGE_BATCH}, "
              f"send batch {settings.MAILGATE_SEND_BATCH}, database: {connection.vendor}, worker DEBUG off")
        print(f"backlog: all {args.messages} stored in one transaction, times from its commit"
              if args.backlog
              else "times from the first message stored (the bench stores one at a time)")
        print(f"first at the sink after the first stored:  {first_sent[0] - first_stored:7.2f} s" if first_sent
              else "first at the sink: not seen")
        if committed:
            print(f"the commit's callbacks (a live hint per message) took {callbacks_done - committed[0]:.2f} s; "
                  f"the workers started at the commit")
        print(f"all at the sink after the first stored:    {finished - first_stored:7.2f} s"
              + ("" if committed else f"  (ingest of all took {ingest_done - started:.2f} s)"))
        print(f"pipeline (ingest → standardize → distribute → send, worker): "
              f"{args.messages / pipeline_seconds:8.1f} messages/s  ({pipeline_seconds:.2f} s)")
        print(queries_line(per_message, per_message_batched, sample))
        print(f"queue tasks a message (each polled, locked, run and deleted): "
              f"{tasks_queued / args.messages:.2f} ({tasks_queued} for {args.messages})")
        print(f"plain loop (parse_message + {'smtplib' if args.target == 'smtp' else 'HTTP POST'}, no pipeline):"
              f"{' ' * (9 if args.target == 'smtp' else 7)}{args.messages / plain_seconds:8.1f} messages/s  "
              f"({plain_seconds:.2f} s)")
        print(f"ratio pipeline/plain: {plain_seconds / pipeline_seconds:.2f}")
        print(f"CPU seconds from the start until all were at the sink ({pipeline_seconds:.2f} s on "
              f"{os.cpu_count()} cores): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in
                                                     cpu_spent.most_common() if seconds >= 0.05))
    finally:
        if cluster is not None:
            os.killpg(cluster.pid, 15)
            try:
                cluster.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, 9)
        sink.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
