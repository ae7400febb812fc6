"""The services admin: validated config, write-only secrets, and "Send test" answering on the page."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from inbound.models import InboundChannel
from outgoing.models import Service
from tests.builders import BOT_TOKEN, make_service
from tests.servers.http import Response

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


def service_data(service=None, **overrides):
    data = {"owner": service.owner_id if service else "", "name": service.name if service else "",
            "kind": service.kind if service else "", "enabled": "on",
            "config": json.dumps(service.config if service else {}),
            "rate_per_minute": service.rate_per_minute if service else 60}
    data.update(overrides)
    return data


@pytest.fixture
def telegram(alice, clean_http_sink):
    return make_service(alice, "telegram", {"api_base": clean_http_sink.base_url, "chat_id": "7"},
                        {"bot_token": BOT_TOKEN})


def test_the_change_page_never_shows_a_secret_or_its_ciphertext(admin_client_, telegram):
    page = admin_client_.get(reverse("admin:outgoing_service_change", args=[telegram.pk])).content.decode()
    assert 'name="bot_token"' in page and "Send test" in page and "bot_token" in page
    assert BOT_TOKEN not in page and telegram.secrets_encrypted not in page
    assert not re.search(r'name="bot_token"[^>]*value=', page)


def test_saving_with_blank_secrets_keeps_the_stored_ones(admin_client_, telegram):
    response = admin_client_.post(reverse("admin:outgoing_service_change", args=[telegram.pk]),
                                  service_data(telegram, name="Renamed"))
    assert response.status_code == 302, response.content.decode()[:3000]
    telegram.refresh_from_db()
    assert telegram.name == "Renamed" and telegram.get_secrets() == {"bot_token": BOT_TOKEN}


def test_a_new_service_left_without_a_limit_gets_its_kinds(admin_client_, alice, clean_http_sink):
    # A webhook has none of our own (a backlog goes out at once; its 429s are honoured); a chat API
    # keeps about one a second. A number typed in wins, 0 included.
    page = admin_client_.get(reverse("admin:outgoing_service_add")).content.decode()
    assert re.search(r'<input[^>]*name="rate_per_minute"[^>]*placeholder="the kind&#x27;s own"', page)
    assert not re.search(r'<input[^>]*name="rate_per_minute"[^>]*value=', page)
    for name, kind, config, secrets, typed, expected in (
            ("Hook", "webhook", {"url": clean_http_sink.url("/hook")}, {"signing_secret": "s3cret"}, "", 0),
            ("Chat", "telegram", {"api_base": clean_http_sink.base_url, "chat_id": "7"}, {"bot_token": BOT_TOKEN}, "", 60),
            ("Slow hook", "webhook", {"url": clean_http_sink.url("/slow")}, {"signing_secret": "s3cret"}, "6", 6)):
        response = admin_client_.post(reverse("admin:outgoing_service_add"), service_data(
            owner=alice.pk, name=name, kind=kind, config=json.dumps(config), rate_per_minute=typed, **secrets))
        assert response.status_code == 302, response.content.decode()[:3000]
        assert Service.objects.get(name=name).rate_per_minute == expected


def test_a_new_service_is_validated_per_kind_naming_each_field(admin_client_, alice):
    data = service_data(owner=alice.pk, name="Team chat", kind="telegram",
                        config=json.dumps({"chatid": 5, "api_base": "http://api.example.test"}))
    page = admin_client_.post(reverse("admin:outgoing_service_add"), data).content.decode()
    assert "secrets.bot_token: required for telegram" in page
    assert "config.chatid: unknown key for telegram" in page
    assert "config.api_base: plain http is only allowed to a loopback host; use https" in page
    assert not Service.objects.exists()
    data.update(config=json.dumps({"chat_id": 5}), bot_token=BOT_TOKEN)
    response = admin_client_.post(reverse("admin:outgoing_service_add"), data)
    assert response.status_code == 302
    service = Service.objects.get()
    assert service.get_secrets() == {"bot_token": BOT_TOKEN} and BOT_TOKEN not in service.secrets_encrypted


def test_send_test_sends_a_sample_and_shows_the_result_on_the_page(admin_client_, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage",
                            Response(200, json={"ok": True, "result": {"message_id": 77}}))
    url = reverse("admin:outgoing_service_send_test", args=[telegram.pk])
    assert "Chat id" in admin_client_.get(url).content.decode()
    page = admin_client_.post(url, {"address": "-100123"}).content.decode()
    assert "Test message sent to -100123 (remote id 77)." in page
    [request] = clean_http_sink.requests
    assert request.json()["chat_id"] == "-100123" and "mailgate test message" in request.json()["text"]
    telegram.refresh_from_db()
    assert telegram.last_success_at is not None


def test_a_failed_test_shows_the_services_own_error(admin_client_, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage", Response(
        400, json={"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}))
    page = admin_client_.post(reverse("admin:outgoing_service_send_test", args=[telegram.pk]),
                              {"address": ""}).content.decode()
    assert "Test message not sent:" in page and "Bad Request: chat not found" in page
    assert clean_http_sink.requests[0].json()["chat_id"] == "7"  # config default when left blank


def test_the_send_test_action_uses_each_services_test_address(admin_client_, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage",
                            Response(200, json={"ok": True, "result": {"message_id": 1}}))
    response = admin_client_.post(reverse("admin:outgoing_service_changelist"),
                                  {"action": "send_test_action", "_selected_action": [telegram.pk]}, follow=True)
    assert "Test message sent" in response.content.decode()


def test_another_owners_service_cannot_be_tested(client, bob, telegram):
    bob.is_staff = True
    bob.save()
    client.force_login(bob)
    response = client.post(reverse("admin:outgoing_service_send_test", args=[telegram.pk]), {"address": "1"})
    assert response.status_code in (403, 404)


def test_a_channel_gets_a_generated_token_and_shows_its_webhook_url(admin_client_, alice, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    data = {"owner": alice.pk, "name": "SMS in", "kind": "twilio", "enabled": "on", "token": "",
            "config": "{}", "auth_token": "tw-secret"}
    response = admin_client_.post(reverse("admin:inbound_inboundchannel_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    channel = InboundChannel.objects.get()
    assert len(channel.token) >= 32 and channel.get_secrets() == {"auth_token": "tw-secret"}
    page = admin_client_.get(reverse("admin:inbound_inboundchannel_change", args=[channel.pk])).content.decode()
    assert f"https://gate.example.test/hooks/twilio/{channel.token}/" in page and "tw-secret" not in page


def test_a_channel_without_its_secret_is_refused(admin_client_, alice):
    data = {"owner": alice.pk, "name": "Bot", "kind": "telegram", "enabled": "on", "token": "", "config": "{}"}
    page = admin_client_.post(reverse("admin:inbound_inboundchannel_add"), data).content.decode()
    assert "secrets.secret_token: required for telegram" in page
    assert not InboundChannel.objects.exists()
