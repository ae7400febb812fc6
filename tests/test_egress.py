"""Outbound connections: one policy for every HTTP request and SMTP connection (outgoing/egress.py).

The suite runs with MAILGATE_ALLOW_PRIVATE_TARGETS on, since its servers listen on loopback; the
tests of the refusal turn it off. Whether anything connected is asked of a bare listening socket
(Listener): a connect() that returned has its connection in the listener's queue already, so no
waiting is needed to see that none came.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from inbound.registry import channel_class
from mailgate import checks
from outgoing import http, sending, signatures
from outgoing.egress import TargetRefused
from outgoing.errors import TransportError
from outgoing.http import basic_auth
from outgoing.models import Service
from outgoing.transports.telegram import TelegramTransport
from pipeline import tasks
from pipeline.models import Delivery, Event, Message
from tests.servers.http import HttpSink, Response
from tests.servers.ports import HOST
from tests.builders import (import_message, make_channel, parsed, queued_delivery, route_everything, send,
                            text_of)

pytestmark = pytest.mark.django_db

REFUSED_LOOPBACK = ("refused: 127.0.0.1 is a loopback address; mailgate only connects to public addresses "
                    "(MAILGATE_ALLOW_PRIVATE_TARGETS is off)")
PUBLIC_ADDRESS = "93.184.215.14"  # a global unicast address; never connected to here


class Listener:
    """A TCP port on loopback that answers nothing and counts who connected."""

    def __init__(self):
        self.sock = socket.create_server((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def listener():
    port = Listener()
    yield port
    port.sock.close()


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def private_refused(settings):
    settings.MAILGATE_ALLOW_PRIVATE_TARGETS = False


@pytest.fixture
def resolver(monkeypatch):
    """Names the test makes resolve where it wants: name -> list of answers, one per lookup (the
    last repeats). Every lookup is recorded; other names go to the real resolver."""
    real = socket.getaddrinfo
    names: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        answers = names.get(host)
        if answers is None:
            return real(host, port, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return SimpleNamespace(names=names, lookups=lookups)


def unchecked_service(owner, kind, config, secrets, name=None) -> Service:
    """A service stored as it was saved before these checks (or while the setting was on)."""
    service = Service(owner=owner, kind=kind, name=name or f"{kind} target", config=config)
    service.set_secrets(secrets)
    service.save()
    return service


# ------------------------------------------------------------------ private addresses


def test_a_webhook_on_a_loopback_port_is_refused_before_any_connection(alice, listener, private_refused):
    service = unchecked_service(alice, "webhook", {"url": f"http://127.0.0.1:{listener.port}/hook"},
                                {"signing_secret": "whsec"})
    with pytest.raises(TransportError) as failed:
        send(service, import_message(alice))
    assert isinstance(failed.value, TargetRefused) and failed.value.permanent
    assert failed.value.message == REFUSED_LOOPBACK
    assert listener.connections() == 0
    with pytest.raises(ValidationError) as invalid:
        service.full_clean()
    assert invalid.value.message_dict["config"] == [f"config.url: {REFUSED_LOOPBACK}"]


def test_staff_cannot_read_a_loopback_service_through_send_test(alice, clean_http_sink, private_refused):
    # The review's experiment: a Slack "webhook" aimed at a local admin API, its answer on the page.
    clean_http_sink.respond("/admin/api/keys", Response(200, json={"internal_admin_token": "s3cr3t-from-loopback"}))
    service = unchecked_service(alice, "slack", {}, {"webhook_url": clean_http_sink.url("/admin/api/keys?x=1")})
    ok, text = sending.send_test(service)
    assert not ok and text == f"Test message not sent: {REFUSED_LOOPBACK}"
    assert clean_http_sink.requests == []
    service.refresh_from_db()
    assert service.last_error == REFUSED_LOOPBACK


def test_a_name_that_resolves_to_loopback_is_refused_too(alice, listener, resolver, private_refused):
    resolver.names["intranet.example.test"] = ["127.0.0.1"]
    for host in ("localhost", "intranet.example.test"):
        service = unchecked_service(alice, "webhook", {"url": f"https://{host}:{listener.port}/hook"},
                                    {"signing_secret": "whsec"}, name=host)
        with pytest.raises(TargetRefused) as failed:
            send(service, import_message(alice))
        assert failed.value.message == (f"refused: {host} resolves to a loopback address; mailgate only connects "
                                        "to public addresses (MAILGATE_ALLOW_PRIVATE_TARGETS is off)")
        assert "127.0.0.1" not in failed.value.message  # a name's address is not the owner's to learn
    assert listener.connections() == 0


def test_a_name_rebound_to_loopback_after_it_was_checked_is_refused_when_connecting(
        alice, listener, resolver, private_refused):
    resolver.names["hooks.rebind.test"] = [PUBLIC_ADDRESS, "127.0.0.1"]
    service = Service(owner=alice, kind="webhook", name="rebinding",
                      config={"url": f"https://hooks.rebind.test:{listener.port}/hook"})
    service.set_secrets({"signing_secret": "whsec"})
    service.full_clean()  # the name was public when the service was saved
    service.save()
    with pytest.raises(TargetRefused):
        send(service, import_message(alice))
    assert resolver.lookups == ["hooks.rebind.test", "hooks.rebind.test"]
    assert listener.connections() == 0


@pytest.mark.parametrize("address,kind", [("10.0.0.7", "private"), ("169.254.169.254", "link-local"),
                                          ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
                                          ("::ffff:127.0.0.1", "loopback"), ("fd00::1", "private")])
def test_every_kind_of_non_public_address_is_refused(alice, resolver, private_refused, address, kind):
    resolver.names["internal.example.test"] = [address]
    with pytest.raises(TargetRefused) as failed:
        http.request("POST", "https://internal.example.test/x", b"{}", {})
    assert f"resolves to a {kind} address" in failed.value.message


@pytest.mark.parametrize("kind,config,secrets,field", [
    ("webhook", {"url": "http://127.0.0.1:9/x"}, {"signing_secret": "s"}, "config"),
    ("slack", {}, {"webhook_url": "http://127.0.0.1:9/services/T/B/X"}, "webhook_url"),
    ("discord", {}, {"webhook_url": "http://127.0.0.1:9/api/webhooks/1/t"}, "webhook_url"),
    ("telegram", {"api_base": "http://127.0.0.1:9"}, {"bot_token": "1:A"}, "config"),
    ("twilio", {"api_base": "http://127.0.0.1:9", "account_sid": "AC" + "0" * 32, "from_number": "+15005550006"},
     {"auth_token": "t"}, "config"),
    ("smtp", {"host": "127.0.0.1", "port": 9, "security": "none", "from_address": "a@example.test"}, {}, "config"),
])
def test_no_kind_of_service_can_be_saved_aimed_at_a_private_address(alice, private_refused, kind, config, secrets,
                                                                     field):
    service = Service(owner=alice, kind=kind, name=kind, config=config)
    service.set_secrets(secrets)
    with pytest.raises(ValidationError) as invalid:
        service.full_clean()
    assert any("refused: 127.0.0.1 is a loopback address" in m for m in invalid.value.message_dict[field])


def test_a_telegram_channel_cannot_be_given_a_private_bot_api(private_refused):
    errors = channel_class("telegram").config_errors({"api_base": "http://127.0.0.1:9"})
    assert errors == [f"config.api_base: {REFUSED_LOOPBACK}"]


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_an_smtp_server_on_a_private_address_is_refused_before_any_connection(alice, listener, private_refused,
                                                                              security):
    service = unchecked_service(alice, "smtp", {"host": "127.0.0.1", "port": listener.port, "security": security,
                                                "from_address": "relay@example.test"}, {})
    with pytest.raises(TargetRefused) as failed:
        send(service, import_message(alice), address="carol@example.test")
    assert failed.value.message == REFUSED_LOOPBACK
    assert listener.connections() == 0


@pytest.mark.parametrize("cafile", ["/nonexistent/ca.pem", __file__])
def test_an_smtp_ca_file_that_is_missing_or_not_pem_gives_one_answer(alice, clean_smtp_sink, cafile):
    # Otherwise the error would tell a service owner which paths exist on the server.
    service = unchecked_service(alice, "smtp", {"host": clean_smtp_sink.host, "port": clean_smtp_sink.port,
                                                "security": "starttls", "cafile": cafile,
                                                "from_address": "relay@example.test"}, {})
    with pytest.raises(TransportError) as failed:
        send(service, import_message(alice), address="carol@example.test")
    assert failed.value.message == "config.cafile: not a readable CA bundle (PEM)"


def test_the_connection_goes_to_the_checked_address_and_keeps_the_name(resolver, clean_http_sink):
    # Allowed here (the suite's setting): the name is resolved once and its address connected to,
    # while the server still sees the name it was asked for.
    resolver.names["api.example.test"] = [HttpSink.host]
    clean_http_sink.respond("/x", Response(200, json={"ok": True}))
    url = f"http://api.example.test:{clean_http_sink.port}/x"
    assert http.request("POST", url, b"{}", {}).json() == {"ok": True}
    [request] = clean_http_sink.requests
    assert request.header("Host") == f"api.example.test:{clean_http_sink.port}"
    assert resolver.lookups == ["api.example.test"]


def test_allowing_private_targets_on_an_install_others_reach_is_warned(settings):
    settings.MAILGATE_ALLOW_PRIVATE_TARGETS, settings.EXPOSED = True, "ALLOWED_HOSTS names mail.example.com"
    assert [w.id for w in checks.check_private_targets()] == ["mailgate.W001"]
    settings.MAILGATE_ALLOW_PRIVATE_TARGETS = False
    assert checks.check_private_targets() == []
    settings.MAILGATE_ALLOW_PRIVATE_TARGETS, settings.EXPOSED = True, ""
    assert checks.check_private_targets() == []  # a laptop install talking to its own test servers


# ------------------------------------------------------------------ redirects and sizes


def test_a_redirect_is_not_followed(alice, clean_http_sink):
    clean_http_sink.respond("/hook", Response(302, headers={"Location": "/elsewhere"}))
    service = unchecked_service(alice, "webhook", {"url": clean_http_sink.url("/hook")}, {"signing_secret": "s"})
    with pytest.raises(TransportError) as failed:
        send(service, import_message(alice))
    assert failed.value.permanent and "127.0.0.1 answered HTTP 302" in failed.value.message
    clean_http_sink.respond("/file", Response(302, headers={"Location": "/elsewhere"}))
    with pytest.raises(TransportError):  # a file download (Telegram's) follows none either
        http.get_file(clean_http_sink.url("/file"), {}, max_bytes=1024)
    assert [r.path for r in clean_http_sink.requests] == ["/hook", "/file"]


def test_an_oversized_response_body_is_cut_at_the_cap(clean_http_sink):
    clean_http_sink.respond("/big", Response(200, body=b"x" * (3 * http.MAX_RESPONSE_BYTES)))
    assert len(http.request("POST", clean_http_sink.url("/big"), b"{}", {}).body) == http.MAX_RESPONSE_BYTES
    clean_http_sink.respond("/big-error", Response(500, body=b"y" * (3 * http.MAX_RESPONSE_BYTES)))
    with pytest.raises(TransportError) as failed:
        http.request("POST", clean_http_sink.url("/big-error"), b"{}", {})
    assert len(failed.value.message) < 600
    with pytest.raises(TransportError) as failed:
        http.get_file(clean_http_sink.url("/big"), {}, max_bytes=1024 * 1024)
    assert failed.value.message == "larger than 1 MB"


# ------------------------------------------------------------------ Twilio media (finding 4)


def post_signed_mms(client, media_urls, token, sid="MM" + "d" * 32):
    params = {"MessageSid": sid, "AccountSid": "ACattacker", "From": "+15551230000", "To": "+15559990000",
              "Body": "look", "NumMedia": str(len(media_urls))}
    for index, url in enumerate(media_urls):
        params[f"MediaUrl{index}"], params[f"MediaContentType{index}"] = url, "image/png"
    signature = signatures.twilio_signature("https://gate.example.test/hooks/twilio/tw-rot/", params.items(), token)
    return client.post("/hooks/twilio/tw-rot/", data=urlencode(params),
                       content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def rotating_channel(alice, settings):
    settings.MAILGATE_PUBLIC_BASE_URL = "https://gate.example.test"
    return make_channel(alice, "twilio", {"auth_token": "NEW-SECRET", "previous_auth_token": "OLD-LEAKED"},
                        token="tw-rot")


def test_media_urls_outside_twilio_are_not_fetched_at_all(client, rotating_channel, clean_http_sink, resolver,
                                                          settings):
    settings.MAILGATE_TWILIO_MEDIA_HOSTS = ["api.twilio.com"]
    steal = clean_http_sink.url("/steal")
    assert post_signed_mms(client, [steal, "https://evil.example/x"], "OLD-LEAKED").status_code == 200
    lines = text_of(parsed(Message.objects.get(channel=rotating_channel))).splitlines()
    assert lines[-2:] == [f"- image/png: {steal} (not downloaded: not a Twilio media URL)",
                          "- image/png: https://evil.example/x (not downloaded: not a Twilio media URL)"]
    assert clean_http_sink.requests == []
    assert resolver.lookups == []  # not even a DNS query for the caller's host


def test_twilio_media_get_the_credentials_of_the_token_that_signed_the_call(client, rotating_channel,
                                                                            clean_http_sink, settings):
    settings.MAILGATE_TWILIO_MEDIA_HOSTS = [HttpSink.host]  # the local server plays api.twilio.com
    clean_http_sink.respond("/media", Response(body=b"png", headers={"Content-Type": "image/png"}))
    assert post_signed_mms(client, [clean_http_sink.url("/media")], "OLD-LEAKED").status_code == 200
    assert post_signed_mms(client, [clean_http_sink.url("/media")], "NEW-SECRET", sid="MM" + "e" * 32
                           ).status_code == 200
    old, new = clean_http_sink.wait_for(2)
    assert old.header("Authorization") == basic_auth("ACattacker", "OLD-LEAKED")
    assert new.header("Authorization") == basic_auth("ACattacker", "NEW-SECRET")


# ------------------------------------------------------------------ error texts (finding 11)


@pytest.fixture
def spaced_token_service(alice, clean_http_sink):
    # Saved before bot tokens were checked strictly; validation now refuses it.
    assert "bot_token" in dict(TelegramTransport.check({}, {"bot_token": "123:ABC DEF"}))
    service = unchecked_service(alice, "telegram", {"api_base": clean_http_sink.base_url},
                                {"bot_token": "123:ABC DEF"})
    route_everything(alice, service)
    return service


def test_a_token_with_a_space_never_reaches_the_error_texts(alice, spaced_token_service, clean_http_sink):
    delivery = queued_delivery(alice, spaced_token_service, address="7")
    assert tasks.send(str(delivery.pk)) == "failed"
    delivery.refresh_from_db(), spaced_token_service.refresh_from_db()
    assert delivery.last_error == "invalid URL or header for 127.0.0.1"
    details = list(Event.objects.filter(delivery=delivery).values_list("detail", flat=True))
    for text in [delivery.last_error, spaced_token_service.last_error, *details]:
        assert "ABC" not in text and "DEF" not in text
    assert clean_http_sink.requests == []


def test_send_test_answers_with_the_error_instead_of_a_500(admin_client_, spaced_token_service):
    response = admin_client_.post(reverse("admin:outgoing_service_send_test", args=[spaced_token_service.pk]),
                                  {"address": "7"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Test message not sent: invalid URL or header for 127.0.0.1" in page and "ABC DEF" not in page


def test_an_unexpected_error_is_recorded_by_its_type_and_a_redacted_message(alice, spaced_token_service,
                                                                            monkeypatch):
    def broken(self, message, delivery):  # the one seam: a transport bug quoting its URL
        raise RuntimeError("failed for https://api.telegram.org/bot123:SECRET/sendMessage with 'SECRET'")

    monkeypatch.setattr(TelegramTransport, "send", broken)
    delivery = queued_delivery(alice, spaced_token_service, address="7")
    assert tasks.send(str(delivery.pk)) == "retrying"
    delivery.refresh_from_db(), spaced_token_service.refresh_from_db()
    assert delivery.last_error == "unexpected error: RuntimeError: failed for … with …"
    details = list(Event.objects.filter(delivery=delivery).values_list("detail", flat=True))
    assert all("SECRET" not in text for text in [spaced_token_service.last_error, *details])
    ok, text = sending.send_test(spaced_token_service, "7")
    assert (ok, text) == (False, "Test message not sent: unexpected error: RuntimeError: failed for … with …")
    assert Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.RETRYING).exists()


def test_https_requests_share_one_verifying_tls_context(monkeypatch):
    """Building a TLS context loads the CA store (~30-60 ms): once per process, not per webhook."""
    import ssl

    from outgoing import tls

    sink = HttpSink.start(tls=True)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", sink.cafile)  # the system store, as OpenSSL reads it
        monkeypatch.setattr(tls, "_contexts", {})
        built, create = [], ssl.create_default_context
        monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: built.append(a) or create(*a, **k))
        for n in range(3):
            assert http.request("POST", sink.url("/hook"), b'{"n": %d}' % n, {}).status == 200
        assert [r.json()["n"] for r in sink.wait_for(3, timeout=5)] == [0, 1, 2]
        assert len(built) == 1
        # ...and it verifies: without the sink's certificate in the store, the sink is refused.
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.setattr(tls, "_contexts", {})
        with pytest.raises(TransportError, match="not trusted"):
            http.request("POST", sink.url("/hook"), b"{}", {})
    finally:
        sink.stop()
