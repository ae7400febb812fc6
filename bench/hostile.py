"""Seconds and memory of the standardize stage on hostile mail, beside an ordinary message.

    .venv/bin/python bench/hostile.py

Each case runs in its own interpreter (so its peak memory is its own) on a throwaway data dir
(SQLite): the message is ingested, then tasks.standardize runs as the worker calls it. "peak MB"
is the process's peak resident memory; "+MB" is how far standardize raised it.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def normal():
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Dora <dora@example.test>", "team@example.test", "Quarterly numbers"
    msg.set_content("Hello,\n\n" + "A line of ordinary text.\n" * 40)
    msg.add_alternative("<p>Hello,</p>" + "<p>A line of <b>ordinary</b> text.</p>" * 40, subtype="html")
    return msg.as_bytes()


def bomb(headers, body, content_type):
    head = "".join(f"{line}\r\n" for line in ["From: m@example.test", "To: a@example.test", "Subject: bomb",
                                               f"Content-Type: {content_type}", *headers])
    return head.encode() + b"\r\n" + body


CRAFTED = "a." * 31_500 + "@b.c"
CASES = {
    "normal message": normal,
    "2 MB nested <div>": lambda: bomb([], b"<div>" * 400_000 + b"end", "text/html"),
    "7 MB, 1,000,000 empty parts": lambda: bomb([], b"--b\r\n\r\n" * 1_000_000 + b"--b--\r\n",
                                                'multipart/mixed; boundary="b"'),
    "250 KB address headers": lambda: bomb([f"{h}: {CRAFTED}" for h in ("Cc", "Reply-To", "Sender", "X-Other")],
                                           b"hello", "text/plain"),
    "2 MB <p><b id=N>x</p>": lambda: bomb([], "".join(f"<p><b id={i}>x</p>" for i in range(100_000)).encode(),
                                          "text/html"),
}


def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_case(name):
    os.environ.update(DJANGO_SETTINGS_MODULE="mailgate.settings", MAILGATE_DATA_DIR=tempfile.mkdtemp(),
                      DEBUG="1", MAILGATE_CHANNEL_LAYER="memory", MAILGATE_LOG_LEVEL="ERROR")
    import django
    from django.conf import settings

    django.setup()
    settings.MIGRATION_MODULES = {app.label: None for app in django.apps.apps.get_app_configs()}
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from pipeline import tasks
    from pipeline.ingest import ingest_raw
    from pipeline.models import Message
    from pipeline.parsing import parse_message

    call_command("migrate", run_syncdb=True, verbosity=0)
    parse_message(normal())  # starts the html2text worker, as a running worker has
    owner = get_user_model().objects.create_user("bench")
    raw = CASES[name]()
    message, _ = ingest_raw(owner=owner, raw=raw, identity="bench-1", source="import")
    before = rss_mb()
    started = time.perf_counter()
    outcome = tasks.standardize(str(message.pk))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warnings = Message.objects.get(pk=message.pk).parse_warnings
    print(f"{name:30s} {len(raw) / 1e6:6.2f} MB in {seconds:7.2f} s  peak {peak:6.0f} MB  "
          f"+{max(peak - before, 0):5.0f} MB  {outcome}, {len(warnings)} warnings: {(warnings or [''])[0][:70]}")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        run_case(sys.argv[2])
        return
    print(f"{'case':30s} {'size':>9s}    {'seconds':>7s}       {'peak':>6s}")
    for name in CASES:
        done = subprocess.run([sys.executable, __file__, "--case", name], stderr=subprocess.PIPE, text=True)
        if done.returncode:  # the development-key notices on stderr are shown only on failure
            sys.exit(done.stderr)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
