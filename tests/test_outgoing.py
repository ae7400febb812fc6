"""Each outgoing kind against a local server that answers like the real API (tests/servers)."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.base import ContentFile

from outgoing import formatting, signatures
from outgoing.registry import transport_for
from outgoing.errors import TransportError
from pipeline.models import Attachment
from tests.builders import BOT_TOKEN, due_delivery, import_message, ingest, make_service, send
from tests.servers.http import Response
from tests.servers.smtp import SmtpSink

pytestmark = pytest.mark.django_db

TWILIO_SID = "AC" + "0123456789abcdef" * 2


def add_attachment(message, filename, data: bytes, content_type="application/pdf") -> Attachment:
    attachment = Attachment(message=message, position=message.attachments.count(), filename=filename,
                            content_type=content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    attachment.file.save(filename, ContentFile(data), save=True)
    return attachment


def form(request) -> dict[str, list[str]]:
    return parse_qs(request.body.decode(), keep_blank_values=True)


# ------------------------------------------------------------------ Telegram


@pytest.fixture
def telegram(alice, clean_http_sink):
    return make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})


def test_telegram_sends_markdownv2_to_the_bots_sendmessage_method(alice, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage",
                            Response(200, json={"ok": True, "result": {"message_id": 42, "chat": {"id": 7}}}))
    remote_id, _ = send(telegram, import_message(alice), address="7")
    [request] = clean_http_sink.requests
    assert (request.method, request.path) == ("POST", f"/bot{BOT_TOKEN}/sendMessage")
    assert request.header("Content-Type") == "application/json"
    assert request.json() == {
        "chat_id": "7", "parse_mode": "MarkdownV2", "link_preview_options": {"is_disabled": True},
        "text": "*Bob Example via Import:*\nLunch?\n\nMeet at 12\\.30 \\(usual place\\)\\!",
    }
    assert remote_id == "42"


def test_telegram_splits_at_4096_characters_and_sends_files_with_senddocument(alice, telegram, clean_http_sink):
    clean_http_sink.default = Response(200, json={"ok": True, "result": {"message_id": 1}})
    message = import_message(alice, text_body="\n".join("Line. " * 20 for _ in range(80)))  # ~9,600 chars
    add_attachment(message, "menu.pdf", b"%PDF-1.4 menu")
    remote_id, delivery = send(telegram, message, address="7")
    texts = [r.json()["text"] for r in clean_http_sink.requests if r.path.endswith("/sendMessage")]
    assert len(texts) == 3
    for text in texts:
        plain = text.replace("\\", "")
        assert len(plain) <= 4096
    [document] = [r for r in clean_http_sink.requests if r.path.endswith("/sendDocument")]
    assert document.header("Content-Type").startswith("multipart/form-data; boundary=")
    assert b'name="document"; filename="menu.pdf"' in document.body and b"%PDF-1.4 menu" in document.body
    assert b'name="chat_id"\r\n\r\n7\r\n' in document.body
    assert remote_id == "1,1,1,1"
    delivery.refresh_from_db()
    assert delivery.remote_id == "1,1,1,1"  # progress is kept on the row


def test_a_retried_telegram_delivery_does_not_resend_the_parts_already_sent(alice, telegram, clean_http_sink):
    path = f"/bot{BOT_TOKEN}/sendMessage"
    clean_http_sink.respond(path, [Response(200, json={"ok": True, "result": {"message_id": 1}}),
                                   Response(502, body=b"Bad Gateway"),
                                   Response(200, json={"ok": True, "result": {"message_id": 2}})])
    message = import_message(alice, text_body="word " * 1500)  # two parts
    delivery = due_delivery(telegram, message, "7")
    with pytest.raises(TransportError) as failed:
        transport_for(telegram).send(message, delivery)
    assert not failed.value.permanent
    assert transport_for(telegram).send(message, delivery) == "1,2"
    texts = [r.json()["text"] for r in clean_http_sink.requests]
    assert len(texts) == 3 and texts[1] == texts[2] != texts[0]  # part one went out once


def test_telegram_errors_carry_its_description(alice, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage", Response(400, json={
        "ok": False, "error_code": 400, "description": "Bad Request: chat not found"}))
    with pytest.raises(TransportError) as failed:
        send(telegram, import_message(alice), address="999")
    assert failed.value.permanent
    assert "Bad Request: chat not found" in failed.value.message
    assert BOT_TOKEN not in failed.value.message


def test_telegram_429_gives_the_retry_after_from_its_body(alice, telegram, clean_http_sink):
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage", Response(429, json={
        "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7}}))
    with pytest.raises(TransportError) as failed:
        send(telegram, import_message(alice), address="7")
    assert (failed.value.permanent, failed.value.retry_after) == (False, 7.0)


# ------------------------------------------------------------------ Discord


@pytest.fixture
def discord(alice, clean_http_sink):
    return make_service(alice, "discord", {"api_base": clean_http_sink.base_url},
                        {"webhook_url": "https://discord.com/api/webhooks/1122/tok-en"})


def test_discord_posts_content_and_an_embed_and_pings_nobody(alice, discord, clean_http_sink):
    clean_http_sink.respond("/api/webhooks/1122/tok-en", Response(200, json={"id": "998877", "content": "…"}))
    remote_id, _ = send(discord, import_message(alice, text_body="@everyone look: 2*3"))
    [request] = clean_http_sink.requests
    assert request.path == "/api/webhooks/1122/tok-en" and request.query == {"wait": ["true"]}
    body = request.json()
    assert body["content"] == "**Bob Example via Import:**\nLunch?\n\n@everyone look: 2\\*3"
    assert body["allowed_mentions"] == {"parse": []}
    assert body["embeds"][0]["title"] == "Lunch?" and body["embeds"][0]["author"] == {"name": "Bob Example"}
    assert remote_id == "998877"


def test_discord_sends_files_as_multipart_with_payload_json(alice, discord, clean_http_sink):
    clean_http_sink.respond("/api/webhooks/1122/tok-en", Response(200, json={"id": "1"}))
    message = import_message(alice)
    add_attachment(message, "photo.png", b"\x89PNG data", "image/png")
    send(discord, message)
    [request] = clean_http_sink.requests
    assert request.header("Content-Type").startswith("multipart/form-data")
    assert b'name="files[0]"; filename="photo.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG data' in request.body
    payload = request.body.split(b'name="payload_json"\r\n\r\n')[1].split(b"\r\n--")[0]
    assert json.loads(payload)["attachments"] == [{"id": 0, "filename": "photo.png"}]


def test_discord_content_is_split_at_2000_characters(alice, discord, clean_http_sink):
    clean_http_sink.respond("/api/webhooks/1122/tok-en", Response(200, json={"id": "1"}))
    send(discord, import_message(alice, text_body="word " * 1000))
    contents = [r.json()["content"] for r in clean_http_sink.requests]
    assert len(contents) == 3 and all(len(c) <= 2000 for c in contents)
    assert "embeds" in clean_http_sink.requests[0].json() and "embeds" not in clean_http_sink.requests[1].json()


def test_discord_404_fails_at_once_with_discords_message(alice, discord, clean_http_sink):
    clean_http_sink.respond("/api/webhooks/1122/tok-en",
                            Response(404, json={"message": "Unknown Webhook", "code": 10015}))
    with pytest.raises(TransportError) as failed:
        send(discord, import_message(alice))
    assert failed.value.permanent and "Unknown Webhook (code 10015)" in failed.value.message
    assert "tok-en" not in failed.value.message


def test_discord_429_honours_the_retry_after_header(alice, discord, clean_http_sink):
    clean_http_sink.respond("/api/webhooks/1122/tok-en", Response(
        429, json={"message": "You are being rate limited.", "retry_after": 1.5, "global": False},
        headers={"Retry-After": "2"}))
    with pytest.raises(TransportError) as failed:
        send(discord, import_message(alice))
    assert (failed.value.permanent, failed.value.retry_after) == (False, 2.0)


# ------------------------------------------------------------------ Slack


@pytest.fixture
def slack(alice, clean_http_sink):
    return make_service(alice, "slack", {"api_base": clean_http_sink.base_url},
                        {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX"})


def test_slack_posts_mrkdwn_text_with_attachments_as_links(alice, slack, clean_http_sink, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://relay.example.test"
    clean_http_sink.respond("/services/T000/B000/XXXX",
                            Response(200, body=b"ok", headers={"Content-Type": "text/plain"}))
    message = import_message(alice, text_body="a <b> & c")
    add_attachment(message, "menu.pdf", b"x" * 2048)
    assert send(slack, message)[0] == ""
    [request] = clean_http_sink.requests
    body = request.json()
    assert body["text"].startswith("*Bob Example via Import:*\nLunch?\n\na &lt;b&gt; &amp; c\n\nAttachments:\n")
    assert "- menu.pdf (2.0 KB): https://relay.example.test/hooks/files/" in body["text"]
    assert body["unfurl_links"] is False


def test_an_attachment_link_downloads_the_file_and_a_forged_one_is_not_found(alice, client):
    message = import_message(alice)
    attachment = add_attachment(message, "menu.pdf", b"%PDF-1.4 menu")
    path = urlsplit(formatting.attachment_url(attachment)).path
    assert path.startswith("/hooks/files/")
    response = client.get(path)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"%PDF-1.4 menu"
    assert response["Content-Disposition"] == 'attachment; filename="menu.pdf"'
    assert client.post(path).status_code == 405
    assert client.get(path[:-2] + "x/").status_code == 404


def test_an_attachment_link_to_hostile_html_is_an_opaque_sandboxed_download(alice, client):
    message = import_message(alice)
    hostile = add_attachment(message, "invoice.html", b"<script>alert(document.cookie)</script>",
                             content_type="text/html; charset=utf-8")
    response = client.get(urlsplit(formatting.attachment_url(hostile)).path)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="invoice.html"'
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, no-store"
    picture = add_attachment(message, "photo.png", b"\x89PNG", content_type="image/png")
    response = client.get(urlsplit(formatting.attachment_url(picture)).path)
    assert response["Content-Type"] == "image/png"  # on the safe list: still an attachment, sandboxed
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_slack_errors_are_its_plain_text_answers(alice, slack, clean_http_sink):
    clean_http_sink.respond("/services/T000/B000/XXXX", Response(404, body=b"no_service"))
    with pytest.raises(TransportError) as failed:
        send(slack, import_message(alice))
    assert failed.value.permanent and failed.value.message.endswith("HTTP 404: no_service")


def test_slack_5xx_is_transient(alice, slack, clean_http_sink):
    clean_http_sink.respond("/services/T000/B000/XXXX", Response(503, body=b"upstream connect error"))
    with pytest.raises(TransportError) as failed:
        send(slack, import_message(alice))
    assert not failed.value.permanent and failed.value.retry_after is None


# ------------------------------------------------------------------ Twilio


@pytest.fixture
def twilio(alice, clean_http_sink):
    return make_service(alice, "twilio", {"api_base": clean_http_sink.base_url, "account_sid": TWILIO_SID,
                                          "from_number": "+15005550006"}, {"auth_token": "tw-token"})


def twilio_created(sid="SM" + "1" * 32):
    return Response(201, json={"sid": sid, "status": "queued", "num_segments": "1", "error_code": None})


def test_twilio_posts_a_form_to_the_messages_api_with_basic_auth(alice, twilio, clean_http_sink):
    path = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    clean_http_sink.respond(path, twilio_created())
    remote_id, _ = send(twilio, import_message(alice, text_body="It\u2019s at 12.30"), address="+15551234567")
    [request] = clean_http_sink.requests
    assert request.path == path
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert request.header("Authorization") == "Basic " + base64.b64encode(f"{TWILIO_SID}:tw-token".encode()).decode()
    assert form(request) == {"To": ["+15551234567"], "From": ["+15005550006"],
                             "Body": ["Bob Example via Import: Lunch?\nIt's at 12.30"]}
    assert remote_id == "SM" + "1" * 32


def test_a_long_sms_is_truncated_to_1600_characters_with_a_note(alice, twilio, clean_http_sink):
    clean_http_sink.respond(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", twilio_created())
    send(twilio, import_message(alice, text_body="word " * 1000), address="+15551234567")
    [request] = clean_http_sink.requests
    body = form(request)["Body"][0]
    assert len(body) <= 1600
    assert body.endswith(" more chars]") and "\n[truncated: " in body


def test_a_long_sms_can_be_split_into_several_messages_instead(alice, twilio, clean_http_sink):
    twilio.config.update(long_messages="split", max_parts=3)
    twilio.save()
    clean_http_sink.respond(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
                            [twilio_created("SMa"), twilio_created("SMb")])
    remote_id, _ = send(twilio, import_message(alice, text_body="word " * 500), address="+15551234567")
    bodies = [form(r)["Body"][0] for r in clean_http_sink.requests]
    assert len(bodies) == 2 and all(len(b) <= 1600 for b in bodies)
    assert "truncated" not in bodies[-1]
    assert remote_id == "SMa,SMb"


def test_twilio_400_fails_with_twilios_message(alice, twilio, clean_http_sink):
    clean_http_sink.respond(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", Response(400, json={
        "code": 21211, "message": "The 'To' number +15551234567 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}))
    with pytest.raises(TransportError) as failed:
        send(twilio, import_message(alice), address="+15551234567")
    assert failed.value.permanent
    assert "The 'To' number +15551234567 is not a valid phone number. (code 21211)" in failed.value.message


def test_twilio_429_with_retry_after_is_retried_later(alice, twilio, clean_http_sink):
    clean_http_sink.respond(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", Response(
        429, json={"code": 20429, "message": "Too Many Requests", "status": 429}, headers={"Retry-After": "30"}))
    with pytest.raises(TransportError) as failed:
        send(twilio, import_message(alice), address="+15551234567")
    assert (failed.value.permanent, failed.value.retry_after) == (False, 30.0)


# ------------------------------------------------------------------ generic webhook


def test_the_webhook_is_a_signed_json_post_keyed_by_the_delivery_id(alice, clean_http_sink):
    service = make_service(alice, "webhook", {"url": clean_http_sink.url("/incoming")}, {"signing_secret": "whsec"})
    clean_http_sink.respond("/incoming", Response(200, json={"id": "evt_1"}))
    message = import_message(alice)
    add_attachment(message, "menu.pdf", b"%PDF")
    remote_id, delivery = send(service, message)
    [request] = clean_http_sink.requests
    timestamp = request.header("X-Mailgate-Timestamp")
    assert request.header("X-Mailgate-Signature") == signatures.sign("whsec", timestamp, request.body)
    assert request.header("Idempotency-Key") == str(delivery.pk)
    body = request.json()
    assert (body["delivery_id"], body["message_id"], body["subject"]) == (str(delivery.pk), str(message.pk), "Lunch?")
    assert body["from"] == {"name": "Bob Example", "address": "bob@example.test"}
    assert body["attachments"][0]["filename"] == "menu.pdf" and "/hooks/files/" in body["attachments"][0]["url"]
    assert remote_id == "evt_1"


def test_an_unreachable_webhook_is_a_transient_network_error(alice):
    service = make_service(alice, "webhook", {"url": "http://127.0.0.1:9/hook", "timeout": 2},
                           {"signing_secret": "whsec"})
    with pytest.raises(TransportError) as failed:
        send(service, import_message(alice))
    assert not failed.value.permanent and "network error talking to 127.0.0.1" in failed.value.message


# ------------------------------------------------------------------ SMTP


@pytest.fixture
def smtp(alice, clean_smtp_sink):
    return make_service(alice, "smtp", {"host": clean_smtp_sink.host, "port": clean_smtp_sink.port,
                                        "security": "none", "from_address": "relay@mailgate.example.test"}, {})


def test_smtp_relays_text_html_and_attachments_with_the_loop_marking_header(alice, smtp, clean_smtp_sink, settings):
    settings.MAILGATE_INSTANCE_ID = "gate-1"
    message = import_message(alice)
    add_attachment(message, "menu.pdf", b"%PDF-1.4 menu")
    remote_id, delivery = send(smtp, message, address="carol@example.test")
    [received] = clean_smtp_sink.wait_for(1, timeout=5)
    email = received.message
    assert received.rcpt_tos == ["carol@example.test"] and received.mail_from == "relay@mailgate.example.test"
    assert email["From"] == "Bob Example via Import <relay@mailgate.example.test>"
    assert email["Reply-To"] == "bob@example.test"
    assert email["Subject"] == "Lunch?"
    assert email["X-Mailgate-Relay"] == f"gate-1;{delivery.pk}"
    assert email["List-Id"].endswith(".gate-1.mailgate.invalid>")
    assert email["References"] == "<lunch@example.test>"
    assert email.get_body(("plain",)).get_content().strip() == "Meet at 12.30 (usual place)!"
    assert email.get_body(("html",)).get_content().strip() == "<p>Meet at <b>12.30</b></p>"
    [part] = list(email.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("menu.pdf", b"%PDF-1.4 menu")
    assert remote_id == email["Message-ID"]


def test_every_attempt_of_one_delivery_has_the_same_message_id(alice, smtp, clean_smtp_sink):
    message = import_message(alice)
    delivery = due_delivery(smtp, message, address="carol@example.test")
    clean_smtp_sink.fail_next(1, 451)  # the first attempt fails after the message was built
    with pytest.raises(TransportError):
        transport_for(smtp).send(message, delivery)
    first = transport_for(smtp).send(message, delivery)
    second = transport_for(smtp).send(message, delivery)  # as after a lost answer to DATA
    received = clean_smtp_sink.wait_for(2, timeout=5)
    assert first == second == f"<{delivery.pk}@mailgate.example.test>"
    assert [r.message["Message-ID"] for r in received] == [first, first]
    # Another delivery of the same message is another Message-ID.
    other, _ = send(smtp, message, address="dan@example.test")
    assert other != first


def test_relay_marks_of_earlier_installs_travel_on_so_a_loop_between_two_installs_is_caught(
        alice, smtp, clean_smtp_sink, settings):
    from pipeline import tasks
    from pipeline.ingest import store_raw

    # Gate B relayed a message into a mailbox gate A reads; gate A relays it on by SMTP.
    settings.MAILGATE_INSTANCE_ID = "gate-a"
    arrived = (b"From: Carol <carol@example.test>\r\nTo: team@example.test\r\nSubject: Hello\r\n"
               b"X-Mailgate-Relay: gate-b;11111111-1111-1111-1111-111111111111\r\n\r\nHi\r\n")
    name, sha = store_raw(arrived)
    message = import_message(alice, raw=name, raw_sha256=sha)
    _, delivery = send(smtp, message, address="team-b@example.test")
    [received] = clean_smtp_sink.wait_for(1, timeout=5)
    assert received.message["X-Mailgate-Relay"] == (f"gate-b;11111111-1111-1111-1111-111111111111, "
                                                     f"gate-a;{delivery.pk}")
    # Back at gate B, the mail is recognised as its own and not relayed a second time.
    settings.MAILGATE_INSTANCE_ID = "gate-b"
    back = ingest(alice, received.message.as_bytes())
    tasks.standardize(str(back.pk))
    back.refresh_from_db()
    assert back.status == "suppressed"
    assert back.suppressed_reason.startswith("loop: relayed by this mailgate")


def test_a_line_break_in_a_header_value_is_refused_and_nothing_is_sent(alice, smtp, clean_smtp_sink):
    with pytest.raises(TransportError) as failed:
        send(smtp, import_message(alice, subject="Hi\r\nBcc: everyone@example.test"), address="carol@example.test")
    assert failed.value.permanent and "Subject header would contain a line break" in failed.value.message
    with pytest.raises(TransportError):
        send(smtp, import_message(alice), address="carol@example.test\nBcc: x@example.test")
    assert clean_smtp_sink.messages == []


def test_smtp_4xx_is_transient_and_5xx_permanent(alice, smtp, clean_smtp_sink):
    clean_smtp_sink.fail_next(1, 451)
    with pytest.raises(TransportError) as failed:
        send(smtp, import_message(alice), address="carol@example.test")
    assert not failed.value.permanent and "451" in failed.value.message
    clean_smtp_sink.fail_next(1, 550, stage="RCPT")
    with pytest.raises(TransportError) as failed:
        send(smtp, import_message(alice), address="carol@example.test")
    assert failed.value.permanent and "550" in failed.value.message


def test_smtp_uses_starttls_and_logs_in(alice):
    sink = SmtpSink.start(require_auth=True, username="relay", password="pw", starttls=True, require_starttls=True)
    try:
        service = make_service(alice, "smtp", {
            "host": sink.host, "port": sink.port, "security": "starttls", "username": "relay",
            "cafile": sink.cafile, "from_address": "relay@mailgate.example.test"}, {"password": "pw"})
        send(service, import_message(alice), address="carol@example.test")
        [received] = sink.wait_for(1, timeout=5)
        assert (received.tls, received.auth_user) == (True, "relay")
    finally:
        sink.stop()


def test_smtp_builds_one_tls_context_per_ca_file_and_none_without_tls(alice, clean_smtp_sink, monkeypatch):
    from outgoing.transports import smtp as smtp_module

    sink = SmtpSink.start(starttls=True, require_starttls=True)
    try:
        service = make_service(alice, "smtp", {
            "host": sink.host, "port": sink.port, "security": "starttls", "cafile": sink.cafile,
            "from_address": "relay@mailgate.example.test"}, {})
        send(service, import_message(alice), address="carol@example.test")
        context = smtp_module.tls_context(sink.cafile)
        send(service, import_message(alice), address="dan@example.test")
        assert len(sink.wait_for(2, timeout=5)) == 2
        assert smtp_module.tls_context(sink.cafile) is context  # the CA file was loaded once
    finally:
        sink.stop()

    def no_context(*args, **kwargs):
        raise AssertionError("security none must not build a TLS context")

    monkeypatch.setattr(smtp_module.ssl, "create_default_context", no_context)
    plain = make_service(alice, "smtp", {"host": clean_smtp_sink.host, "port": clean_smtp_sink.port,
                                         "security": "none", "from_address": "relay@mailgate.example.test"}, {})
    send(plain, import_message(alice), address="carol@example.test")
    assert clean_smtp_sink.wait_for(1, timeout=5)[0].rcpt_tos == ["carol@example.test"]
