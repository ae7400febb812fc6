"""GET /metrics: counters moved by a real relay (Dovecot -> sync -> stages -> aiosmtpd sink), by
exactly their share; values recorded in other processes (a worker's children, an IDLE manager)
served by this one (multiprocess mode); who may scrape.

Every process of the run writes to the same PROMETHEUS_MULTIPROC_DIR, so tests compare a scrape
taken before with one taken after, never absolute values.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_q.models import OrmQ

from imap.models import IdleSession
from mailgate import metrics
from pipeline.models import Delivery, Message
from tests.builders import (GENERIC_PAYLOAD, dovecot_account, eml, ingest, make_channel, manage, post_signed,
                            raw_message, route_everything, run_stages, smtp_service, subscribe, sync)
from tests.servers import procs
from tests.servers.waiting import eventually


def scrape(client, **headers) -> dict:
    """{(sample name, ((label, value), ...)): value} from one GET /metrics."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def reconnects(values: dict) -> float:
    """mailgate_idle_reconnects_total over every reason."""
    return sum(v for (name, _labels), v in values.items() if name == "mailgate_idle_reconnects_total")


def relay_setup(owner, sink):
    service = smtp_service(owner, sink)
    subscribe(service, "Bob", "bob@example.test")
    route_everything(owner, service)
    return service


# ---------------------------------------------------------------- a relay, in this process

@pytest.mark.django_db
def test_a_relayed_message_moves_each_counter_by_exactly_its_share(alice, dovecot, mail_user, clean_smtp_sink,
                                                                    client):
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)  # connected while empty: what arrives next is new mail, relayed
    relay_setup(alice, clean_smtp_sink)
    dovecot.append(mail_user.name, "INBOX", raw_message(1))

    before = scrape(client)
    report = sync(account)
    synced = scrape(client)
    message = Message.objects.get(account=account)
    assert moved(before, synced, "mailgate_messages_ingested_total", source="imap") == 1
    assert moved(before, synced, "mailgate_sync_messages_total") == 1
    assert moved(before, synced, "mailgate_sync_bytes_total") == report.stats.bytes == message.size > 0
    # Read from the database at scrape: the message waits for standardize.
    assert value(synced, "mailgate_queue_depth", stage="standardize") == 1
    assert value(synced, "mailgate_queue_oldest_age_seconds", stage="standardize") >= 0
    # The sync's connection was counted while open and is released now.
    assert value(synced, "mailgate_imap_connections", purpose="sync") == value(before, "mailgate_imap_connections",
                                                                                 purpose="sync")

    assert run_stages(message) == ["standardized", "distributed", "sent"]
    after = scrape(client)
    assert len(clean_smtp_sink.wait_for(1)) == 1
    for stage in ("standardize", "distribute", "send"):
        assert moved(synced, after, "mailgate_stage_duration_seconds_count", stage=stage) == 1, stage
        assert moved(synced, after, "mailgate_stage_duration_seconds_sum", stage=stage) > 0, stage
        assert moved(synced, after, "mailgate_stage_duration_seconds_bucket", stage=stage, le="+Inf") == 1, stage
    assert moved(synced, after, "mailgate_deliveries_total", service_kind="smtp", outcome="sent") == 1
    assert moved(synced, after, "mailgate_deliveries_total", service_kind="smtp", outcome="retry") == 0
    assert moved(synced, after, "mailgate_messages_ingested_total", source="imap") == 0
    assert value(after, "mailgate_queue_depth", stage="standardize") == 0
    assert value(after, "mailgate_queue_depth", stage="send") == 0


@pytest.mark.django_db
@pytest.mark.parametrize("code, max_attempts, outcome", [(451, 8, "retry"), (550, 8, "failed"), (451, 1, "dead")])
def test_a_refused_send_counts_as_retry_failed_or_dead(alice, clean_smtp_sink, client, settings, code,
                                                        max_attempts, outcome):
    settings.MAILGATE_DELIVERY_MAX_ATTEMPTS = max_attempts
    relay_setup(alice, clean_smtp_sink)
    clean_smtp_sink.fail_next(1, code)
    before = scrape(client)
    message = ingest(alice, eml())
    run_stages(message)
    after = scrape(client)
    assert moved(before, after, "mailgate_messages_ingested_total", source="import") == 1
    assert Delivery.objects.get(message=message).status == {"retry": "retrying"}.get(outcome, outcome)
    for each in ("sent", "retry", "failed", "dead"):
        assert moved(before, after, "mailgate_deliveries_total", service_kind="smtp", outcome=each) == \
            (1 if each == outcome else 0), each
    if outcome == "retry":  # waiting for its backoff: not yet due, so not in the send backlog
        assert value(after, "mailgate_queue_depth", stage="send") == 0


@pytest.mark.django_db
def test_webhook_calls_count_by_kind_and_status_and_an_unknown_kind_is_one_label(alice, client):
    make_channel(alice, "generic", {"current": "new-secret"}, token="gen-abc")
    before = scrape(client)
    assert post_signed(client, GENERIC_PAYLOAD).status_code == 202
    assert post_signed(client, GENERIC_PAYLOAD, signature="0" * 64).status_code == 403
    assert client.post("/hooks/made-up-kind/x/", data="{}", content_type="application/json").status_code == 404
    after = scrape(client)
    assert moved(before, after, "mailgate_webhook_requests_total", kind="generic", status=202) == 1
    assert moved(before, after, "mailgate_webhook_requests_total", kind="generic", status=403) == 1
    assert moved(before, after, "mailgate_webhook_requests_total", kind="unknown", status=404) == 1
    assert moved(before, after, "mailgate_messages_ingested_total", source="webhook") == 1


# ---------------------------------------------------------------- who may scrape

@pytest.mark.django_db
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_may_scrape_without_a_token(client, address):
    scrape(client, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_another_host_is_refused_with_a_clear_message_unless_a_token_is_configured(client):
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert b"only from loopback unless MAILGATE_METRICS_TOKEN is set" in response.content
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer guess")
    assert response.status_code == 403
    assert b"no MAILGATE_METRICS_TOKEN is configured" in response.content


@pytest.mark.django_db
def test_with_a_token_another_host_needs_the_exact_bearer_token(client, settings):
    settings.MAILGATE_METRICS_TOKEN = "metrics-token-7f3a"
    missing = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert b"Authorization: Bearer" in missing.content
    for wrong in ("Bearer metrics-token-7f3", "Bearer metrics-token-7f3ab", "Basic metrics-token-7f3a", "Bearer"):
        response = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=wrong)
        assert response.status_code == 401, wrong
        assert b"wrong bearer token" in response.content
    scrape(client, REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer metrics-token-7f3a")
    # A token that is sent is checked, from loopback too.
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


@pytest.mark.django_db
def test_behind_the_proxy_a_loopback_socket_is_not_enough(client, settings):
    settings.MAILGATE_BEHIND_PROXY = True
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert response.status_code == 403
    scrape(client, REMOTE_ADDR="127.0.0.1")  # a scraper on the host itself, not through the proxy


def test_the_token_may_come_from_a_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    result = manage(tmp_path / "data", "shell", "-c",
                    "from django.conf import settings; print(repr(settings.MAILGATE_METRICS_TOKEN))",
                    MAILGATE_METRICS_TOKEN_FILE=str(token_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "'from-a-file'"
    assert (tmp_path / "data" / "metrics").is_dir()  # the multiprocess dir of a fresh install


# ---------------------------------------------------------------- one process's files

def test_a_process_start_drops_the_live_gauges_of_exited_processes_but_keeps_their_counters(tmp_path):
    exited = subprocess_pid()
    for name in (f"gauge_livesum_{exited}.db", f"counter_{exited}.db", f"gauge_livesum_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"")
    assert metrics.clean_dead_processes(str(tmp_path)) == [exited]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"counter_{exited}.db",
                                                                 f"gauge_livesum_{os.getpid()}.db"])


def test_two_processes_starting_together_both_clean_a_dead_process_without_failing(tmp_path, monkeypatch):
    exited = subprocess_pid()
    for mode in ("livesum", "liveall"):
        (tmp_path / f"gauge_{mode}_{exited}.db").write_bytes(b"")
    remove = os.remove
    raced = []

    def another_process_was_first(name):
        remove(name)
        if not raced:  # as when the other process removed this very file a moment before
            raced.append(name)
            raise FileNotFoundError(name)

    monkeypatch.setattr(os, "remove", another_process_was_first)
    assert metrics.clean_dead_processes(str(tmp_path)) == [exited]
    assert raced and not list(tmp_path.iterdir())


def subprocess_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_connection_purposes_are_a_bounded_label():
    assert metrics.connection_purpose("idle INBOX/Sub folder") == "idle"
    assert metrics.connection_purpose("sync") == "sync"
    assert metrics.connection_purpose("") == "other"
    assert metrics.connection_purpose("Ünïcode stuff") == "ncode"


# ---------------------------------------------------------------- across processes

def files_of_other_processes(kind: str) -> set[int]:
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    pids = {int(name.rsplit("_", 1)[1].split(".")[0]) for name in os.listdir(directory) if name.startswith(kind)}
    return pids - {os.getpid()}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stages_run_by_a_worker_process_are_served_by_this_one(alice, dovecot, mail_user, clean_smtp_sink, client):
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)
    relay_setup(alice, clean_smtp_sink)
    worker = procs.start(["manage.py", "worker"], "metrics-worker")
    try:
        before = scrape(client)
        dovecot.append(mail_user.name, "INBOX", raw_message(2))
        sync(account)
        clean_smtp_sink.wait_for(1, timeout=30)
        message = Message.objects.get(account=account)
        eventually(lambda: Delivery.objects.filter(message=message, status="sent").exists(), 10, "delivery sent")
        # The send task's duration is recorded when it returns, just after the row says sent.
        eventually(lambda: moved(before, scrape(client), "mailgate_stage_duration_seconds_count",
                                 stage="send") >= 1, 10, "send duration recorded")
        after = scrape(client)
    finally:
        procs.stop(worker)
    # This process ran no stage: the durations and the delivery were recorded by the worker's
    # children (forked by django-q), in files of their own.
    for stage in ("standardize", "distribute", "send"):
        assert moved(before, after, "mailgate_stage_duration_seconds_count", stage=stage) == 1, (
            stage, value(before, "mailgate_stage_duration_seconds_count", stage=stage),
            value(after, "mailgate_stage_duration_seconds_count", stage=stage))
    assert moved(before, after, "mailgate_deliveries_total", service_kind="smtp", outcome="sent") == 1
    assert files_of_other_processes("histogram_")
    # The worker has exited: its counts stay (totals never go backwards while the install runs).
    metrics.clean_dead_processes()
    later = scrape(client)
    assert moved(before, later, "mailgate_stage_duration_seconds_count", stage="send") == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_manager_process_reports_its_sessions_connections_reconnects_and_push_latency(
        alice, dovecot, client):
    user = dovecot.add_user(f"metrics{time.monotonic_ns()}", "pw-metrics")
    account = dovecot_account(alice, dovecot, user)
    metrics.clean_dead_processes()  # what processes of earlier tests left must not vanish in between
    before = scrape(client)
    env = {"MAILGATE_IDLE_LEASE_SECONDS": "3", "MAILGATE_IDLE_POLL": "0.5", "MAILGATE_IMAP_TIMEOUT": "5"}
    worker = procs.start(["manage.py", "worker"], "metrics-idle-worker", **env)
    manager = procs.start(["manage.py", "idle"], "metrics-idle", **env)
    try:
        def idling():
            # Connected, the first syncs done and no task left that could sync the next message
            # before its push arrives; only the IDLE connection open on the server.
            session = IdleSession.objects.filter(pk=account.pk).first()
            return session and session.connected and not OrmQ.objects.exists() \
                and account.folders.filter(name="INBOX", sync_pending="", last_synced_at__isnull=False).exists() \
                and dict(dovecot.who()).get(user.name) == 1
        eventually(idling, 30, "account idling, first sync done")
        held = scrape(client)
        assert moved(before, held, "mailgate_idle_sessions") == 1
        assert moved(before, held, "mailgate_imap_connections", purpose="idle") == 1

        dovecot.append(user.name, "INBOX", raw_message(3))
        eventually(lambda: moved(before, scrape(client), "mailgate_idle_push_to_stored_seconds_count") == 1, 30,
                   "push -> stored observed")
        pushed = scrape(client)
        assert Message.objects.filter(account=account).count() == 1
        assert 0 < moved(before, pushed, "mailgate_idle_push_to_stored_seconds_sum") < 10

        dovecot.kick(user.name)
        eventually(lambda: reconnects(scrape(client)) > reconnects(before), 15, "reconnect counted")
    finally:
        procs.stop(manager, signal.SIGKILL)  # no clean exit: its live gauges must still go
        procs.stop(worker)
    metrics.clean_dead_processes()
    after = scrape(client)
    assert moved(before, after, "mailgate_idle_sessions") == 0
    assert moved(before, after, "mailgate_imap_connections", purpose="idle") == 0
    assert moved(before, after, "mailgate_idle_push_to_stored_seconds_count") == 1


# ---------------------------------------------------------------- the dashboard and the docs

def defined_series() -> dict[str, str]:
    """Every series name /metrics can serve -> its metric's name (as documented)."""
    from prometheus_client import Counter, Gauge, Histogram
    names = {"mailgate_queue_depth": "mailgate_queue_depth",
             "mailgate_queue_oldest_age_seconds": "mailgate_queue_oldest_age_seconds"}
    for item in vars(metrics).values():
        if isinstance(item, Counter):
            names[f"{item._name}_total"] = f"{item._name}_total"
        elif isinstance(item, Histogram):
            names.update({f"{item._name}{suffix}": item._name for suffix in ("_bucket", "_sum", "_count")})
        elif isinstance(item, Gauge):
            names[item._name] = item._name
    return names


def test_the_grafana_dashboard_uses_only_served_names_and_shows_every_metric():
    import json
    import re
    from pathlib import Path
    docs = Path(__file__).resolve().parent.parent / "docs"
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"mailgate_[a-z_]+", expr)}
    series = defined_series()
    assert used <= set(series), used - set(series)
    assert {series[name] for name in used} == set(series.values())
    listed = set(re.findall(r"^\| `(mailgate_[a-z_]+)`", (docs / "metrics.md").read_text(), re.M))
    assert listed == set(series.values())
