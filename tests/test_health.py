"""GET /healthz: every part mailgate needs, as JSON, with HTTP 503 when one is down."""

from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone
from django_q.models import OrmQ

from imap.models import IdleManager
from mailgate import embedded_redis
from tests.servers.ports import free_port

pytestmark = pytest.mark.django_db


def an_idle_manager_is_alive(seconds_ago: float = 1) -> IdleManager:
    return IdleManager.objects.create(name=f"test-host:{os.getpid()}:1", host="test-host", pid=os.getpid(),
                                      heartbeat_at=timezone.now() - timedelta(seconds=seconds_ago))


def healthz(client):
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_it_is_green_when_every_part_is_up(admin_client):
    an_idle_manager_is_alive()
    status, body = healthz(admin_client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert {name: body[name]["ok"] for name in ("database", "queue", "channel_layer", "idle_manager")} == {
        "database": True, "queue": True, "channel_layer": True, "idle_manager": True}
    assert body["queue"]["queued"] == 0 and body["queue"]["oldest_age_seconds"] == 0
    assert body["idle_manager"]["managers"] == [f"test-host:{os.getpid()}:1"]


def test_anonymous_probes_get_the_status_and_counts_but_no_names_paths_or_error_texts(client, admin_client,
                                                                                       settings):
    an_idle_manager_is_alive()
    status, body = healthz(client)
    assert status == 200 and body["status"] == "ok"
    assert body["idle_manager"] == {"ok": True, "managers": 1, "accounts_enabled": 0, "accounts_connected": 0}
    assert body["channel_layer"]["ok"] is True
    assert body["channel_layer"]["redis"] in (None, {"kind": "REDIS_URL", "started_by_this_process": False})
    assert "test-host" not in json.dumps(body)
    # A part that is down says which kind of error, not its text (which names hosts and ports).
    port = free_port()
    settings.CHANNEL_LAYERS = redis_layer(f"redis://127.0.0.1:{port}/0")
    status, body = healthz(client)
    assert status == 503 and body["status"] == "down" and body["channel_layer"]["ok"] is False
    assert body["channel_layer"]["error"] and str(port) not in json.dumps(body)
    assert str(port) in healthz(admin_client)[1]["channel_layer"]["error"]


def test_it_is_503_when_no_idle_manager_has_a_fresh_heartbeat(client, settings):
    status, body = healthz(client)
    assert (status, body["status"], body["idle_manager"]["ok"]) == (503, "down", False)
    an_idle_manager_is_alive(seconds_ago=settings.MAILGATE_HEALTH_IDLE_STALE + 5)  # died a while ago
    assert healthz(client)[0] == 503


def test_it_reports_queued_work_and_is_503_when_nobody_consumes_it(client, settings):
    an_idle_manager_is_alive()
    now = timezone.now()
    OrmQ.objects.create(key="mailgate", payload="fresh", lock=now - timedelta(seconds=2))
    status, body = healthz(client)
    assert status == 200 and body["queue"]["queued"] == 1
    assert 2 <= body["queue"]["oldest_age_seconds"] < 60

    OrmQ.objects.create(key="mailgate", payload="stale",
                        lock=now - timedelta(seconds=settings.MAILGATE_HEALTH_QUEUE_STALE + 10))
    status, body = healthz(client)
    assert status == 503 and body["queue"]["ok"] is False and body["queue"]["queued"] == 2


def test_it_is_503_naming_the_channel_layer_when_redis_is_unreachable(admin_client, settings):
    an_idle_manager_is_alive()
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0"}]},
    }}
    status, body = healthz(admin_client)
    assert status == 503
    assert body["channel_layer"]["ok"] is False and "Connect" in body["channel_layer"]["error"]
    assert body["channel_layer"]["redis"] == {"kind": "REDIS_URL", "started_by_this_process": False}
    assert body["database"]["ok"] and body["idle_manager"]["ok"]


def redis_layer(address: str) -> dict:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": [{"address": address}]}}}


def test_it_says_which_redis_the_channel_layer_uses_and_whether_this_process_started_it(
        admin_client, settings, tmp_path, redis_server):
    client = admin_client  # which Redis, and its socket path, are shown to staff
    an_idle_manager_is_alive()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert healthz(client)[1]["channel_layer"]["redis"] is None

    settings.CHANNEL_LAYERS = redis_layer(redis_server.url)
    assert healthz(client)[1]["channel_layer"]["redis"] == {"kind": "REDIS_URL", "started_by_this_process": False}

    sock = tmp_path / "redis.sock"
    settings.MAILGATE_EMBEDDED_REDIS_SOCKET = sock
    settings.CHANNEL_LAYERS = redis_layer(f"unix://{sock}")
    try:
        status, body = healthz(client)  # the first use of the embedded Redis in this process starts it
        assert status == 200, body
        assert body["channel_layer"]["redis"] == {"kind": "embedded", "socket": str(sock),
                                                  "started_by_this_process": True}
    finally:
        embedded_redis.stop(sock)
        embedded_redis.release()


@pytest.mark.django_db(transaction=True)
def test_the_web_process_is_green_over_real_http_with_the_redis_layer(live_web):
    an_idle_manager_is_alive()
    status, raw = live_web.get("/healthz")
    body = json.loads(raw)
    assert status == 200, body
    assert body["channel_layer"]["backend"] == "RedisChannelLayer"


@pytest.mark.django_db(transaction=True)
def test_the_web_process_is_503_naming_the_database_when_it_is_down(start_web):
    # With DATABASE_URL set the install is not loopback-only: it must be given its keys.
    server = start_web(DATABASE_URL=f"postgres://mailgate@127.0.0.1:{free_port()}/mailgate",
                       SECRET_KEY=secrets.token_urlsafe(60), MAILGATE_FERNET_KEYS=Fernet.generate_key().decode())
    status, raw = server.get("/healthz")
    body = json.loads(raw)
    assert status == 503
    assert body["database"]["ok"] is False and "OperationalError" in body["database"]["error"]
    assert body["channel_layer"]["ok"] is True
