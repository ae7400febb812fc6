"""Inbound webhooks: Twilio, Telegram and signed JSON calls become messages in the pipeline."""

from __future__ import annotations

import io
import json
import math
import time
from urllib.parse import urlencode

import pytest

from inbound.channels.base import Reject, read_body
from inbound.models import InboundChannel, WebhookReplay
from inbound.registry import CHANNELS, channel_class
from outgoing import signatures
from outgoing.http import basic_auth
from pipeline import tasks
from pipeline.ingest import read_raw
from pipeline.models import Message
from pipeline.senders import sender_ids
from tests.builders import (GENERIC_PAYLOAD, TWILIO_PARAMS, TWILIO_SIGNATURE, make_channel, parsed, post_signed,
                            post_telegram, telegram_update, text_of)
from tests.servers.http import HttpSink, Response

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------ Twilio


@pytest.fixture
def twilio_channel(alice, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://mycompany.com"
    return make_channel(alice, "twilio", {"auth_token": "12345"}, token="tw-abc", public_url="/myapp.php")


def post_twilio(client, params=None, signature=TWILIO_SIGNATURE, query="foo=1&bar=2", token="tw-abc", **headers):
    return client.post(f"/hooks/twilio/{token}/?{query}", data=urlencode(params or TWILIO_PARAMS),
                       content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature,
                       **headers)


def test_twilios_documented_example_is_accepted(client, twilio_channel):
    response = post_twilio(client)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode() == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    [message] = Message.objects.filter(channel=twilio_channel)
    assert (message.identity, message.source, message.status) == (
        "twilio:CA1234567890ABCDE", "webhook", Message.Status.RECEIVED)
    raw = parsed(message)
    assert raw["From"].addresses[0].addr_spec == "+12349013030@sms.mailgate.invalid"
    assert raw["Subject"] == "Call from +12349013030"
    assert raw["Message-ID"].startswith("<sms.") and "CA1234567890ABCDE" in raw["Message-ID"]


@pytest.mark.parametrize("change", ["url", "param", "token", "signature"])
def test_changing_any_part_of_twilios_example_is_refused_and_creates_nothing(client, twilio_channel, change):
    kwargs = {}
    if change == "url":
        kwargs["query"] = "foo=1&bar=3"
    elif change == "param":
        kwargs["params"] = {**TWILIO_PARAMS, "Digits": "9999"}
    elif change == "token":
        twilio_channel.set_secrets({"auth_token": "54321"})
        twilio_channel.save()
    else:
        kwargs["signature"] = "1" + TWILIO_SIGNATURE[1:]
    response = post_twilio(client, **kwargs)
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_the_signed_url_comes_from_settings_never_from_host_or_forwarded_headers(alice, client, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    settings.ALLOWED_HOSTS = ["*"]  # as behind a proxy that passes any Host through
    make_channel(alice, "twilio", {"auth_token": "tok"}, token="tw-1")
    params = {"MessageSid": "SM" + "a" * 32, "From": "+15551230000", "To": "+15559990000", "Body": "hello"}
    forged_url = "https://evil.example.test/hooks/twilio/tw-1/"
    forged = signatures.twilio_signature(forged_url, params.items(), "tok")
    response = client.post("/hooks/twilio/tw-1/", data=urlencode(params),
                           content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=forged, HTTP_HOST="evil.example.test",
                           HTTP_X_FORWARDED_HOST="evil.example.test", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 403
    good = signatures.twilio_signature("https://gate.example.test/hooks/twilio/tw-1/", params.items(), "tok")
    response = client.post("/hooks/twilio/tw-1/", data=urlencode(params),
                           content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=good)
    assert response.status_code == 200
    [message] = Message.objects.all()
    raw = parsed(message)
    assert raw["Subject"] == "SMS from +15551230000"
    assert raw.get_body(("plain",)).get_content().strip() == "hello"


FAKE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def post_mms(client, media_urls, token="tw-mms"):
    params = {"MessageSid": "MM" + "b" * 32, "AccountSid": "AC" + "c" * 32, "From": "+15551230000",
              "To": "+15559990000", "Body": "see picture", "NumMedia": str(len(media_urls))}
    for index, url in enumerate(media_urls):
        params[f"MediaUrl{index}"], params[f"MediaContentType{index}"] = url, "image/png"
    url = f"https://gate.example.test/hooks/twilio/{token}/"
    signature = signatures.twilio_signature(url, params.items(), "tok")
    return client.post(f"/hooks/twilio/{token}/", data=urlencode(params),
                       content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def mms_channel(alice, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    settings.MAILGATE_TWILIO_MEDIA_HOSTS = ["api.twilio.com", HttpSink.host]  # the local server plays Twilio
    return make_channel(alice, "twilio", {"auth_token": "tok"}, token="tw-mms")


def test_an_mms_picture_is_fetched_through_twilios_redirect_and_attached(client, mms_channel, clean_http_sink):
    media = "/2010-04-01/Accounts/AC/Messages/MM/Media/ME1"
    clean_http_sink.respond(media, Response(302, headers={"Location": "/storage/ME1?signed=1"}))
    clean_http_sink.respond("/storage/ME1", Response(body=FAKE_PNG, headers={"Content-Type": "image/png"}))
    assert post_mms(client, [clean_http_sink.url(media)]).status_code == 200

    [message] = Message.objects.filter(channel=mms_channel)
    raw = parsed(message)
    assert text_of(raw) == "see picture\n\nMedia:\n- image/png: attached as media-1.png"
    [attachment] = raw.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == ("media-1.png", FAKE_PNG)
    api, storage = clean_http_sink.wait_for(2)
    assert api.header("Authorization") == basic_auth("AC" + "c" * 32, "tok")
    assert storage.query == {"signed": ["1"]} and storage.header("Authorization") is None  # stays with Twilio


def test_an_mms_picture_that_cannot_be_fetched_keeps_its_link_and_the_reason(client, mms_channel, clean_http_sink):
    missing = clean_http_sink.url("/2010-04-01/Accounts/AC/Messages/MM/Media/ME404")
    clean_http_sink.respond("/2010-04-01/Accounts/AC/Messages/MM/Media/ME404", Response(404, json={
        "code": 20404, "message": "The requested resource was not found"}))
    assert post_mms(client, [missing, "http://media.example.test/x.png"]).status_code == 200
    [message] = Message.objects.filter(channel=mms_channel)
    lines = text_of(parsed(message)).splitlines()
    assert lines[3].startswith(f"- image/png: {missing} (not downloaded: 127.0.0.1 answered HTTP 404:")
    assert lines[4] == ("- image/png: http://media.example.test/x.png (not downloaded: MediaUrl: plain http "
                        "is only allowed to a loopback host; use https)")
    assert list(parsed(message).iter_attachments()) == []


def test_slow_media_stop_at_the_time_budget_and_the_sms_is_still_answered_and_stored(
        client, mms_channel, clean_http_sink, settings):
    # Twilio waits 15 s for the answer: every download of the call shares one budget.
    settings.MAILGATE_WEBHOOK_MEDIA_SECONDS = 1
    slow, next_one = "/2010-04-01/Accounts/AC/Messages/MM/Media/SLOW", "/2010-04-01/Accounts/AC/Messages/MM/Media/ME2"
    clean_http_sink.respond(slow, Response(body=FAKE_PNG, headers={"Content-Type": "image/png"}, delay=3))
    clean_http_sink.respond(next_one, Response(body=FAKE_PNG, headers={"Content-Type": "image/png"}))
    started = time.monotonic()
    assert post_mms(client, [clean_http_sink.url(slow), clean_http_sink.url(next_one)]).status_code == 200
    assert time.monotonic() - started < 3  # answered before the slow server would have been
    [message] = Message.objects.filter(channel=mms_channel)
    lines = text_of(parsed(message)).splitlines()
    assert lines[3] == f"- image/png: {clean_http_sink.url(slow)} (not downloaded: network error talking to 127.0.0.1: timed out)"
    assert lines[4] == (f"- image/png: {clean_http_sink.url(next_one)} (not downloaded: no time left: this webhook "
                        "call's MAILGATE_WEBHOOK_MEDIA_SECONDS are used up)")
    assert [r.path for r in clean_http_sink.requests] == [slow]  # the second was never started
    assert list(parsed(message).iter_attachments()) == []


def test_the_same_sms_twice_stores_one_message(alice, client, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    make_channel(alice, "twilio", {"auth_token": "tok"}, token="tw-1")
    params = {"MessageSid": "SM" + "b" * 32, "From": "+15551230000", "Body": "once"}
    signature = signatures.twilio_signature("https://gate.example.test/hooks/twilio/tw-1/", params.items(), "tok")
    for _ in range(2):
        assert client.post("/hooks/twilio/tw-1/", data=urlencode(params),
                           content_type="application/x-www-form-urlencoded",
                           HTTP_X_TWILIO_SIGNATURE=signature).status_code == 200
    assert Message.objects.count() == 1


# ------------------------------------------------------------------ the common gate


def test_only_post_is_allowed(client, twilio_channel):
    assert client.get("/hooks/twilio/tw-abc/").status_code == 405


def test_a_disabled_or_unknown_channel_is_not_found(client, twilio_channel):
    twilio_channel.enabled = False
    twilio_channel.save()
    assert post_twilio(client).status_code == 404
    assert post_twilio(client, token="nope").status_code == 404
    assert client.post("/hooks/telegram/tw-abc/", data="{}", content_type="application/json").status_code == 404


def test_every_channel_kind_has_its_class_in_the_registry():
    assert set(CHANNELS) == set(InboundChannel.Kind.values)
    assert all(channel_class(kind).kind == kind for kind in CHANNELS)


def test_a_body_over_the_limit_is_refused_before_it_is_read(client, twilio_channel, settings):
    settings.MAILGATE_WEBHOOK_MAX_BYTES = 100
    response = post_twilio(client, params={**TWILIO_PARAMS, "Body": "x" * 200})
    assert response.status_code == 413
    assert not Message.objects.exists()


class _Unsized:
    """A request whose body arrives without Content-Length (chunked): only reading tells its size."""

    def __init__(self, body: bytes):
        self.META = {}
        self._stream = io.BytesIO(body)

    def read(self, size=-1):
        return self._stream.read(size)


def test_a_body_without_content_length_is_cut_off_at_the_limit(settings):
    settings.MAILGATE_WEBHOOK_MAX_BYTES = 100
    assert read_body(_Unsized(b"x" * 100)) == b"x" * 100
    with pytest.raises(Reject) as refused:
        read_body(_Unsized(b"x" * 101))
    assert refused.value.status == 413


# ------------------------------------------------------------------ Telegram


@pytest.fixture
def telegram_channel(alice):
    return make_channel(alice, "telegram", {"secret_token": "tg-secret_1"}, token="tg-abc")


def test_a_telegram_message_becomes_a_standard_message(client, telegram_channel):
    response = post_telegram(client, telegram_update())
    assert (response.status_code, response.json()) == (200, {"ok": True})
    [message] = Message.objects.filter(channel=telegram_channel)
    assert message.identity == "tg:1001"
    raw = parsed(message)
    [sender] = raw["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Ada Lovelace (@ada)", "tg-424242@telegram.mailgate.invalid")
    assert raw["Subject"] == "Telegram from Ada Lovelace (@ada)"
    assert raw["Date"].datetime.timestamp() == 1714557600
    assert raw.get_body(("plain",)).get_content().strip() == "Hi there. Lunch?"


CHANNEL_BOT_TOKEN = "123456:AAE-bot-token"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8


@pytest.fixture
def telegram_bot(alice, clean_http_sink):
    """A channel with the bot token, its Bot API played by a local HTTP server."""
    make_channel(alice, "telegram", {"secret_token": "tg-secret_1", "bot_token": CHANNEL_BOT_TOKEN},
                 token="tg-bot", api_base=clean_http_sink.base_url)
    return clean_http_sink


def photo_update(update_id=2001):
    return telegram_update(update_id, text="", caption="Our whiteboard", photo=[
        {"file_id": "small-id", "file_unique_id": "AQADsmall", "width": 90, "height": 60, "file_size": 900},
        {"file_id": "big-id", "file_unique_id": "AQADbig", "width": 1280, "height": 960, "file_size": len(JPEG)}])


def test_a_photo_sent_to_the_bot_is_downloaded_attached_and_stored(client, telegram_bot):
    telegram_bot.respond(f"/bot{CHANNEL_BOT_TOKEN}/getFile", Response(json={"ok": True, "result": {
        "file_id": "big-id", "file_unique_id": "AQADbig", "file_size": len(JPEG), "file_path": "photos/file_7.jpg"}}))
    telegram_bot.respond(f"/file/bot{CHANNEL_BOT_TOKEN}/photos/file_7.jpg", Response(body=JPEG))

    assert post_telegram(client, photo_update(), token="tg-bot").status_code == 200
    assert post_telegram(client, photo_update(), token="tg-bot").status_code == 200  # Telegram's retry
    [get_file] = telegram_bot.wait_for(1, path=f"/bot{CHANNEL_BOT_TOKEN}/getFile")
    assert get_file.json() == {"file_id": "big-id"}  # the largest size, fetched once

    [message] = Message.objects.filter(identity="tg:2001")
    raw = parsed(message)
    assert text_of(raw) == "Our whiteboard\n\n[photo attached: photo-AQADbig.jpg]"
    [attachment] = raw.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content_type()) == ("photo-AQADbig.jpg", "image/jpeg")
    assert attachment.get_content() == JPEG

    tasks.standardize(str(message.pk))
    [stored] = message.attachments.all()
    assert (stored.filename, stored.size) == ("photo-AQADbig.jpg", len(JPEG))


def test_a_file_that_cannot_be_downloaded_is_named_and_the_message_still_arrives(client, telegram_bot):
    telegram_bot.respond(f"/bot{CHANNEL_BOT_TOKEN}/getFile", Response(400, json={
        "ok": False, "error_code": 400, "description": "Bad Request: file is too big"}))
    document = {"file_id": "doc-id", "file_unique_id": "AQADdoc", "file_name": "report.pdf",
                "mime_type": "application/pdf", "file_size": 30_000_000}
    response = post_telegram(client, telegram_update(2002, text="", document=document), token="tg-bot")
    assert response.status_code == 200
    [message] = Message.objects.filter(identity="tg:2002")
    raw = parsed(message)
    text = text_of(raw)
    assert text.startswith("[document: report.pdf; not downloaded: 127.0.0.1 answered HTTP 400:")
    assert "file is too big" in text
    assert list(raw.iter_attachments()) == []
    assert CHANNEL_BOT_TOKEN not in read_raw(message).decode()  # the token-bearing URL is never quoted


def test_without_a_bot_token_the_photo_is_noted_not_fetched(client, telegram_channel):
    assert post_telegram(client, photo_update()).status_code == 200
    [message] = Message.objects.filter(channel=telegram_channel)
    assert text_of(parsed(message)) == (
        "Our whiteboard\n\n[photo: photo-AQADbig.jpg; not downloaded: the channel has no bot token]")


@pytest.mark.parametrize("api_base, error", [
    ("http://api.example.test", "config.api_base: plain http is only allowed to a loopback host; use https"),
    ("ftp://api.example.test", "config.api_base: must be an http(s) URL with a host"),
])
def test_a_telegram_api_base_must_be_https(alice, api_base, error):
    from inbound.forms import InboundChannelForm

    form = InboundChannelForm(data={"owner": alice.pk, "name": "bot", "kind": "telegram", "enabled": "on",
                                    "token": "", "config": json.dumps({"api_base": api_base}),
                                    "secret_token": "s3cret"})
    assert not form.is_valid()
    assert form.errors["config"] == [error]


def test_the_same_update_id_twice_stores_one_message(client, telegram_channel):
    assert post_telegram(client, telegram_update()).status_code == 200
    assert post_telegram(client, telegram_update()).status_code == 200
    assert Message.objects.filter(channel=telegram_channel).count() == 1


@pytest.mark.parametrize("secret", [None, "", "tg-secret_2", "tg-secret_1x"])
def test_a_wrong_or_missing_telegram_secret_is_refused(client, telegram_channel, secret):
    assert post_telegram(client, telegram_update(), secret=secret).status_code == 403
    assert not Message.objects.exists()


def test_updates_without_a_message_are_acknowledged_and_ignored(client, telegram_channel):
    response = post_telegram(client, {"update_id": 7, "callback_query": {"id": "1", "data": "x"}})
    assert response.status_code == 200 and not Message.objects.exists()


def test_malformed_telegram_updates_get_400(client, telegram_channel):
    assert post_telegram(client, "{not json").status_code == 400
    response = post_telegram(client, {"message": {"text": "no update id"}})
    assert response.status_code == 400 and "update_id" in response.json()["error"]


# ------------------------------------------------------------------ signed JSON


@pytest.fixture
def generic_channel(alice):
    return make_channel(alice, "generic", {"current": "new-secret", "previous": "old-secret"}, token="gen-abc")


def test_a_signed_json_call_is_accepted_with_the_new_message_id(client, generic_channel):
    response = post_signed(client, GENERIC_PAYLOAD)
    assert response.status_code == 202
    [message] = Message.objects.filter(channel=generic_channel)
    assert response.json() == {"ok": True, "message_id": str(message.pk), "duplicate": False}
    assert message.identity == "generic:evt-1"
    raw = parsed(message)
    assert (str(raw["From"]), raw["Subject"]) == ("Ada <ada@example.test>", "Build failed")
    assert raw.get_body(("html",)).get_content().strip() == "<p>Job <b>42</b> failed.</p>"


def test_the_previous_secret_still_works_while_it_rotates(client, generic_channel):
    assert post_signed(client, GENERIC_PAYLOAD, secret="old-secret").status_code == 202
    assert post_signed(client, {**GENERIC_PAYLOAD, "id": "evt-2"}, secret="older-secret").status_code == 403


def test_a_replayed_signature_has_no_effect(client, generic_channel):
    timestamp = str(int(time.time()))
    first = post_signed(client, GENERIC_PAYLOAD, timestamp=timestamp)
    again = post_signed(client, GENERIC_PAYLOAD, timestamp=timestamp)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"ok": True, "duplicate": True, "message_id": first.json()["message_id"]}
    assert Message.objects.count() == 1 and WebhookReplay.objects.count() == 1


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_outside_five_minutes_is_refused(client, generic_channel, offset):
    # Whole seconds on the wire, a float clock on the server: round away from now so the request
    # is at least 301 s off when the server reads its clock, whatever the fraction.
    now = time.time()
    timestamp = math.ceil(now) + offset if offset > 0 else math.floor(now) + offset
    assert post_signed(client, GENERIC_PAYLOAD, timestamp=str(timestamp)).status_code == 403


def test_a_bad_signature_is_refused_before_anything_is_stored(client, generic_channel):
    response = post_signed(client, b"{not even json", signature="0" * 64)
    assert response.status_code == 403
    assert not WebhookReplay.objects.exists() and not Message.objects.exists()


def test_a_signed_but_malformed_payload_gets_400_naming_the_field(client, generic_channel):
    response = post_signed(client, {"from": "not an address", "text": "x"})
    assert response.status_code == 400 and response.json()["error"] == "from: not an email address"
    response = post_signed(client, {"subject": "nothing to say"})
    assert response.status_code == 400 and response.json()["error"].startswith("text: required")
    assert not Message.objects.exists()


# ------------------------------------------------------------------ sender identities


def test_synthetic_sender_addresses_also_stand_for_the_number_or_chat_id():
    assert sender_ids("+15551230000@sms.mailgate.invalid") == {"+15551230000@sms.mailgate.invalid", "+15551230000"}
    assert sender_ids("tg-4242@telegram.mailgate.invalid") == {"tg-4242@telegram.mailgate.invalid", "tg-4242", "4242"}
    assert sender_ids("Bob@Example.test") == {"bob@example.test"}
