"""Benchmark: messages/s from ingest to SENT at a local SMTP sink through the real pipeline
(a `manage.py qcluster` subprocess with the default worker count), printed beside a plain loop
that parses and sends the same messages with smtplib, without the pipeline, in the same run.

    .venv/bin/python bench/pipeline.py [--messages 200]

Runs on a throwaway data dir (SQLite), so it touches nothing of a real install. Database queries
per message are counted in-process (the same stage functions, run synchronously) because a
query count cannot be taken inside the worker processes.
"""

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="mailgate-bench-")
    os.environ.update(DJANGO_SETTINGS_MODULE="mailgate.settings", MAILGATE_DATA_DIR=data_dir, DEBUG="1",
                      MAILGATE_CHANNEL_LAYER="memory", MAILGATE_LOG_LEVEL="WARNING",
                      MAILGATE_ALLOW_PRIVATE_TARGETS="1")  # the SMTP sink is on loopback
    import django
    from django.conf import settings

    django.setup()
    # Tables straight from the models, like the test suite (no migration history needed).
    settings.MIGRATION_MODULES = {app.label: None for app in django.apps.apps.get_app_configs()}
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from outgoing.models import Service
    from pipeline import tasks
    from pipeline.ingest import ingest_raw
    from pipeline.models import Delivery, Route, Subscriber, Subscription
    from pipeline.parsing import parse_message
    from tests.servers.smtp import SmtpSink

    sink = SmtpSink.start()
    cluster = None
    try:
        owner = get_user_model().objects.create_user("bench", "bench@example.test", "bench-password")
        service = Service.objects.create(owner=owner, kind="smtp", name="sink", rate_per_minute=0, config={
            "host": sink.host, "port": sink.port, "security": "none", "from_address": "gate@bench.test"})
        route = Route.objects.create(owner=owner, name="all")
        route.services.set([service])
        subscriber = Subscriber.objects.create(owner=owner, name="reader")
        Subscription.objects.create(subscriber=subscriber, service=service, address="reader@example.test")

        # 1. Queries per message: every stage of 20 messages, run in this process.
        sample = 20
        with CaptureQueriesContext(connection) as queries:
            for n in range(sample):
                message, _ = ingest_raw(owner=owner, raw=make_raw(10_000 + n), identity=f"q-{n}", source="import")
                tasks.standardize(str(message.pk))
                tasks.distribute(str(message.pk))
                for delivery in Delivery.objects.filter(message=message):
                    tasks.send(str(delivery.pk))
        per_message = len(queries) / sample
        sink.wait_for(sample, timeout=30)
        sink.clear()

        # 2. The pipeline with a real worker cluster (default worker count from settings).
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        log = open(Path(data_dir) / "qcluster.log", "ab")
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        warm, _ = ingest_raw(owner=owner, raw=make_raw(99_999), identity="warm-up", source="import")
        sink.wait_for(1, timeout=60)  # the cluster is up and every stage has run once
        sink.clear()
        raws = [make_raw(n) for n in range(args.messages)]
        started = time.perf_counter()
        for n, raw in enumerate(raws):
            ingest_raw(owner=owner, raw=raw, identity=f"bench-{n}", source="import")
        sink.wait_for(args.messages, timeout=600)
        pipeline_seconds = time.perf_counter() - started

        # 3. The same messages parsed and sent in a plain loop.
        sink.clear()
        started = time.perf_counter()
        for raw in raws:
            parsed = parse_message(raw)
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = "gate@bench.test", "reader@example.test", parsed.subject or ""
            email.set_content(parsed.text_body)
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.send_message(email)
        sink.wait_for(args.messages, timeout=60)
        plain_seconds = time.perf_counter() - started

        workers = settings.Q_CLUSTER["workers"]
        print(f"messages: {args.messages}, workers: {workers}, database: {connection.vendor}")
        print(f"pipeline (ingest → standardize → distribute → send, qcluster): "
              f"{args.messages / pipeline_seconds:8.1f} messages/s  ({pipeline_seconds:.2f} s), "
              f"{per_message:.1f} DB queries/message")
        print(f"plain loop (parse_message + smtplib, no pipeline):             "
              f"{args.messages / plain_seconds:8.1f} messages/s  ({plain_seconds:.2f} s)")
    finally:
        if cluster is not None:
            os.killpg(cluster.pid, 15)
            try:
                cluster.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, 9)
        sink.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
