"""Round trips through the whole pipeline, stage by stage as the worker runs them:
an SMS in → email out; an email in through IMAP → Telegram and Discord out; a 429 waited out."""

from __future__ import annotations

import datetime
import time
from urllib.parse import urlencode

import pytest

from imap.accounts import create_account
from imap.models import Account
from imap.sync import sync_account_now
from inbound.models import InboundChannel
from outgoing import ratelimit, signatures
from pipeline import clock, tasks
from pipeline.models import Delivery, Event, Message
from tests.builders import BOT_TOKEN, eml, make_service, route_everything, run_stages, subscribe
from tests.servers.http import Response

pytestmark = pytest.mark.django_db

SENDER = "+15551230000"


@pytest.fixture
def sms_channel(alice, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    channel = InboundChannel(owner=alice, kind="twilio", name="SMS line", token="sms-line")
    channel.set_secrets({"auth_token": "tw-token"})
    channel.save()
    return channel


def receive_sms(client, body: str, sid: str) -> Message:
    params = {"MessageSid": sid, "From": SENDER, "To": "+15559990000", "Body": body}
    signature = signatures.twilio_signature("https://gate.example.test/hooks/twilio/sms-line/", params.items(),
                                            "tw-token")
    response = client.post("/hooks/twilio/sms-line/", data=urlencode(params),
                           content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 200
    return Message.objects.get(identity=f"twilio:{sid}")


@pytest.fixture
def email_relay(alice, clean_smtp_sink):
    service = make_service(alice, "smtp", {"host": clean_smtp_sink.host, "port": clean_smtp_sink.port,
                                           "security": "none", "from_address": "gate@mailgate.example.test"}, {})
    route_everything(alice, service)
    subscribe(service, "bob", "bob@example.test")
    subscribe(service, "carol", "carol@example.test")
    return service


def test_an_sms_in_is_emailed_to_the_subscribers(client, sms_channel, email_relay, clean_smtp_sink):
    message = receive_sms(client, "Running late, start without me", "SM" + "c" * 32)
    assert run_stages(message) == ["standardized", "distributed", "sent", "sent"]
    received = clean_smtp_sink.wait_for(2, timeout=5)
    assert sorted(r for m in received for r in m.rcpt_tos) == ["bob@example.test", "carol@example.test"]
    email = received[0].message
    assert email["Subject"] == f"SMS from {SENDER}"
    assert email["Reply-To"] == f"{SENDER}@sms.mailgate.invalid"
    assert "Running late, start without me" in email.get_body(("plain",)).get_content()


def test_the_sms_sender_listed_by_phone_number_gets_nothing_back(client, sms_channel, email_relay, clean_smtp_sink):
    subscribe(email_relay, "dora", "dora@example.test", addresses=[SENDER])
    message = receive_sms(client, "hello", "SM" + "d" * 32)
    run_stages(message)
    addresses = set(Delivery.objects.filter(message=message).values_list("address", flat=True))
    assert addresses == {"bob@example.test", "carol@example.test"}


def test_the_sms_sender_listed_by_synthetic_address_gets_nothing_back(client, sms_channel, email_relay):
    subscribe(email_relay, "dora", "dora@example.test", addresses=[f"{SENDER}@sms.mailgate.invalid"])
    message = receive_sms(client, "hello", "SM" + "e" * 32)
    run_stages(message)
    addresses = set(Delivery.objects.filter(message=message).values_list("address", flat=True))
    assert addresses == {"bob@example.test", "carol@example.test"}


def test_an_email_in_through_imap_goes_out_to_telegram_and_discord_but_not_to_its_sender(
        alice, dovecot, mail_user, clean_http_sink):
    telegram = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})
    discord = make_service(alice, "discord", {"api_base": clean_http_sink.base_url},
                           {"webhook_url": "https://discord.com/api/webhooks/42/hook-token"})
    route_everything(alice, telegram, discord)
    subscribe(telegram, "bob", "1001")
    subscribe(telegram, "dora", "1002", addresses=["dora@example.test"])  # she sent it
    subscribe(discord, "team channel", "")
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage",
                            Response(200, json={"ok": True, "result": {"message_id": 5}}))
    clean_http_sink.respond("/api/webhooks/42/hook-token", Response(200, json={"id": "777"}))
    account = create_account(owner=alice, email=f"{mail_user.name}@example.test", host="127.0.0.1",
                             port=dovecot.port, security=Account.Security.NONE, username=mail_user.name,
                             password=mail_user.password, display_name="Team inbox")
    assert sync_account_now(account, ignore_backoff=True).errors == []  # connected: what comes next is new
    dovecot.append(mail_user.name, "INBOX", eml(subject="Offsite agenda", sender="Dora <dora@example.test>",
                                                body="Agenda attached. See you at 9.00!\n"))
    assert sync_account_now(account, ignore_backoff=True).errors == []
    [message] = Message.objects.filter(account=account)
    assert run_stages(message) == ["standardized", "distributed", "sent", "sent"]
    [to_telegram] = clean_http_sink.wait_for(1, path=f"/bot{BOT_TOKEN}/sendMessage")
    assert to_telegram.json()["chat_id"] == "1001"
    assert to_telegram.json()["text"] == (
        "*Dora via Team inbox:*\nOffsite agenda\n\nAgenda attached\\. See you at 9\\.00\\!")
    [to_discord] = clean_http_sink.wait_for(1, path="/api/webhooks/42/hook-token")
    assert to_discord.json()["content"].startswith("**Dora via Team inbox:**\nOffsite agenda")
    assert set(Delivery.objects.filter(message=message).values_list("address", flat=True)) == {"1001", ""}
    # The timeline names where each went: the chat id, or the service of a delivery without one.
    queued = sorted(d.split(" at ")[0] for d in Event.objects.filter(message=message, kind="queued")
                    .values_list("detail", flat=True))
    assert queued == ["to 1001", f"to {discord.name}"]


def test_the_send_stage_waits_out_a_429_and_then_delivers(alice, clean_http_sink, monkeypatch):
    telegram = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})
    route_everything(alice, telegram)
    subscribe(telegram, "bob", "1001")
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage", [
        Response(429, json={"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 30",
                            "parameters": {"retry_after": 30}}, headers={"Retry-After": "30"}),
        Response(200, json={"ok": True, "result": {"message_id": 8}}),
    ])
    from pipeline.ingest import ingest_raw

    message, _ = ingest_raw(owner=alice, raw=eml(), identity="relay-429", source="import")
    assert run_stages(message) == ["standardized", "distributed", "retrying"]
    [delivery] = Delivery.objects.filter(message=message)
    start = clock.now()
    assert delivery.not_before >= start + datetime.timedelta(seconds=29)
    assert ratelimit.take_token(telegram) > 25  # every worker sees the service blocked
    assert tasks.send(str(delivery.pk)) == "skipped"  # not due yet: nothing is sent early
    assert len(clean_http_sink.requests) == 1

    later = delivery.not_before + datetime.timedelta(seconds=1)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert tasks.send(str(delivery.pk)) == "sent"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.remote_id) == (Delivery.Status.SENT, "8")
    assert len(clean_http_sink.requests) == 2
    assert time.time() - start.timestamp() < 10  # waited by the clock, not by sleeping
