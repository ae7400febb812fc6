"""Prometheus metrics: every definition in one place, in the ground, so each layer records with one
line and no import points up. GET /metrics (metrics_view) serves them in the text format.

Multiprocess mode (prometheus-client's): web, worker children and IDLE managers are separate
processes, each writing its values to mmap files in PROMETHEUS_MULTIPROC_DIR (settings points it at
<data dir>/metrics before this module, and so the library, is first imported: the library picks its
value class at import). The scrape merges every process's files. scripts/run empties the directory
before it starts the processes; each process at start removes the live gauges of processes that
have exited (clean_dead_processes, the library's mark_process_dead), while counters of exited
processes stay, so totals never go backwards while the install runs.

Queue depths are not recorded by anyone: they are read from the database at scrape time by the
functions the composition root (mailgate/urls.py) hands to metrics_view.
"""

from __future__ import annotations

import functools
import glob
import hmac
import ipaddress
import os
import re
import time
from contextlib import contextmanager

from django.conf import settings

# Before the library's first import anywhere in this process (see the module docstring). settings
# sets it already; this covers a process that imported us before reading settings' side effects.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.MAILGATE_METRICS_DIR))

from django.db.models import Count, Min  # noqa: E402
from django.http import Http404, HttpResponse  # noqa: E402
from django.views.decorators.cache import never_cache  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

# Stage runs take milliseconds when healthy and up to the task timeout when a service hangs.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# bench/idle_latency.py: p50 ~40 ms, p99 ~65 ms on a quiet host; a busy queue adds seconds.
PUSH_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES_INGESTED = Counter(
    "mailgate_messages_ingested", "Messages whose raw bytes were stored and handed to the pipeline, by source "
    "(imap, import, webhook).", ["source"])
STAGE_SECONDS = Histogram(
    "mailgate_stage_duration_seconds", "Time one pipeline stage task took (standardize, distribute, send), "
    "whatever its outcome.", ["stage"], buckets=STAGE_BUCKETS)
PUSH_TO_STORED = Histogram(
    "mailgate_idle_push_to_stored_seconds", "From an IDLE push read by the manager to the end of the sync "
    "that stored the new messages it announced.", buckets=PUSH_BUCKETS)
DELIVERIES = Counter(
    "mailgate_deliveries", "Delivery attempts by outgoing service kind and outcome (sent; retry: failed, "
    "tried again later; failed: refused for good; dead: out of attempts).", ["service_kind", "outcome"])
IMAP_CONNECTIONS = Gauge(
    "mailgate_imap_connections", "IMAP connections held now (connection slots), by purpose "
    "(sync, idle, writeback, test, ...).", ["purpose"], multiprocess_mode="livesum")
SYNC_MESSAGES = Counter("mailgate_sync_messages", "Messages new to a folder, stored by IMAP batch sync.")
SYNC_BYTES = Counter("mailgate_sync_bytes", "Bytes of message bodies downloaded by IMAP batch sync.")
IDLE_SESSIONS = Gauge(
    "mailgate_idle_sessions", "IMAP connections in IDLE now, over all IDLE managers.", multiprocess_mode="livesum")
IDLE_RECONNECTS = Counter(
    "mailgate_idle_reconnects", "IDLE connections lost or refused and retried, by reason.", ["reason"])
WEBHOOK_REQUESTS = Counter(
    "mailgate_webhook_requests", "Inbound webhook calls (/hooks/<kind>/...) by channel kind and HTTP status.",
    ["kind", "status"])

# The outcomes pipeline/sending.py records, by the audit event kind it writes.
OUTCOME_OF_EVENT = {"sent": "sent", "retry": "retry", "failed": "failed", "dead": "dead"}


# Recording helpers: one call per place --------------------------------------------------------

def timed(stage: str):
    """Decorator for a stage's task entry point: its duration goes to mailgate_stage_duration_seconds."""
    return STAGE_SECONDS.labels(stage).time()


def ingested(source: str, count: int = 1) -> None:
    if count:
        MESSAGES_INGESTED.labels(source).inc(count)


def delivery_finished(service_kind: str, event_kind: str) -> None:
    """A delivery attempt's outcome, named by the audit event kind recorded for it."""
    outcome = OUTCOME_OF_EVENT.get(str(event_kind))
    if outcome:
        DELIVERIES.labels(service_kind, outcome).inc()


def synced(messages: int, body_bytes: int) -> None:
    if messages:
        SYNC_MESSAGES.inc(messages)
    if body_bytes:
        SYNC_BYTES.inc(body_bytes)


def connection_purpose(purpose: str) -> str:
    """The label for a slot's purpose: its first word ("idle INBOX" -> "idle"), so folder names and
    other free text never multiply the series."""
    word = (purpose or "other").split()[0].lower()
    return re.sub(r"[^a-z_]", "", word)[:20] or "other"


@contextmanager
def idle_session():
    """Counts an IMAP connection in IDLE for the duration of the block (also when cancelled)."""
    IDLE_SESSIONS.inc()
    try:
        yield
    finally:
        IDLE_SESSIONS.dec()


def count_webhooks(known_kinds):
    """Decorator for the webhook view(kind, token): counts each call by kind (one of `known_kinds`,
    else "unknown": the URL is anyone's to make up) and status; a raised Http404 counts as 404."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, kind, *args, **kwargs):
            label = kind if kind in known_kinds else "unknown"
            try:
                response = view(request, kind, *args, **kwargs)
            except Http404:
                WEBHOOK_REQUESTS.labels(label, "404").inc()
                raise
            WEBHOOK_REQUESTS.labels(label, str(response.status_code)).inc()
            return response
        return wrapper
    return decorate


# Per-process bookkeeping -------------------------------------------------------------------------

_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


def clean_dead_processes(path: str | None = None) -> list[int]:
    """At a process's start: drop the live gauges (connections, IDLE sessions) of processes of this
    host that have exited, as the library asks (mark_process_dead), so a killed manager's
    connections stop counting. Returns the pids cleaned."""
    path = path or os.environ["PROMETHEUS_MULTIPROC_DIR"]
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _PID_IN_NAME.search(name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        _mark_dead(pid, path)
    return sorted(dead)


def _mark_dead(pid: int, path: str) -> None:
    # Processes start together (`manage.py worker` and `idle` under one supervisor) and clean the
    # same dead pid at once: the library's os.remove then raised FileNotFoundError for a file the
    # other had just removed, and the worker died at start-up (a fault test's first syncs never
    # ran). Another try finds only the files still there.
    for _attempt in range(5):
        try:
            multiprocess.mark_process_dead(pid, path)
            return
        except FileNotFoundError:
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# Scraping ----------------------------------------------------------------------------------------

class _Backlog:
    """A collector over functions that read the database at scrape time; each returns
    [(stage, waiting, oldest age in seconds), ...]."""

    def __init__(self, sources):
        self.sources = sources

    def collect(self):
        depth = GaugeMetricFamily("mailgate_queue_depth", "Work waiting in each stage now (read from the "
                                  "database at scrape).", labels=["stage"])
        oldest = GaugeMetricFamily("mailgate_queue_oldest_age_seconds", "Age of the oldest work waiting in "
                                   "each stage (0 when none waits).", labels=["stage"])
        for source in self.sources:
            for stage, waiting, age in source():
                depth.add_metric([stage], waiting)
                oldest.add_metric([stage], age)
        yield depth
        yield oldest


def task_queue() -> list[tuple[str, int, float]]:
    """[("tasks", django-q tasks waiting for a worker, age of the oldest)]: the ORM broker sets a
    task's `lock` to its enqueue time and pushes it ahead while a worker holds it (mailgate.health)."""
    from django.utils import timezone
    from django_q.models import OrmQ

    now = timezone.now()
    waiting = OrmQ.objects.filter(lock__lte=now).aggregate(waiting=Count("pk"), oldest=Min("lock"))
    oldest = waiting["oldest"]
    return [("tasks", waiting["waiting"], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)]


def scrape(backlog_sources=()) -> bytes:
    """The text exposition of every process's metrics plus the backlog read now."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_Backlog([task_queue, *backlog_sources]))
    return generate_latest(registry)


def _client_address(request) -> str:
    # Behind our proxy every request comes from loopback: only the address it appended counts.
    remote = request.META.get("REMOTE_ADDR", "")
    if settings.MAILGATE_BEHIND_PROXY and request.META.get("HTTP_X_FORWARDED_FOR"):
        return request.META["HTTP_X_FORWARDED_FOR"].split(",")[-1].strip()
    return remote


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _refused(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="mailgate metrics"'
    return response


def metrics_view(*backlog_sources):
    """GET /metrics: for a scraper on this host (loopback), or anywhere with
    `Authorization: Bearer <MAILGATE_METRICS_TOKEN>`."""

    @never_cache
    def metrics(request):
        token = settings.MAILGATE_METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header:
            scheme, _, given = header.partition(" ")
            if not token:
                return _refused(403, "metrics: no MAILGATE_METRICS_TOKEN is configured; scrape from loopback")
            # Constant-time: the comparison must not tell a guesser how many leading bytes matched.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return _refused(401, "metrics: wrong bearer token")
        elif not _is_loopback(_client_address(request)):
            if token:
                return _refused(401, "metrics: send Authorization: Bearer <MAILGATE_METRICS_TOKEN>")
            return _refused(403, "metrics: only from loopback unless MAILGATE_METRICS_TOKEN is set")
        started = time.monotonic()
        body = scrape(backlog_sources)
        response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
        response["X-Scrape-Seconds"] = f"{time.monotonic() - started:.3f}"
        return response

    return metrics
