"""HTTP keep-alive (outgoing/keepalive.py): requests to one server share a connection, and one
the server closed costs nothing but a new connection: never an error, never a second copy."""

import pytest

from outgoing import egress, http, keepalive
from outgoing.errors import TransportError
from tests.servers.http import Response


@pytest.fixture(autouse=True)
def nothing_kept():
    keepalive.close_all()
    yield
    keepalive.close_all()


def post(sink, n: int) -> None:
    assert http.request("POST", sink.url("/hook"), b'{"n": %d}' % n, {}).status == 200


def test_requests_to_one_server_share_one_connection(clean_http_sink):
    for n in range(5):
        post(clean_http_sink, n)
    requests = clean_http_sink.wait_for(5)
    assert [r.json()["n"] for r in requests] == [0, 1, 2, 3, 4]
    assert len({r.peer for r in requests}) == 1


def test_a_connection_the_server_closed_while_kept_is_not_used_again(clean_http_sink):
    clean_http_sink.respond("/hook", [Response(200, json={}, close_after=True), Response(200, json={})])
    post(clean_http_sink, 0)
    post(clean_http_sink, 1)
    first, second = clean_http_sink.wait_for(2)
    assert first.peer != second.peer
    assert [r.json()["n"] for r in clean_http_sink.requests] == [0, 1]  # each once


def test_a_connection_closed_just_as_the_request_goes_is_retried_once_on_a_new_one(clean_http_sink, monkeypatch):
    # The server closes the kept connection after the check that would have found it closed.
    clean_http_sink.respond("/hook", [Response(200, json={}, close_after=True), Response(200, json={})])
    post(clean_http_sink, 0)
    clean_http_sink.wait_for(1)
    monkeypatch.setattr(keepalive, "_closed", lambda conn: False)
    post(clean_http_sink, 1)
    assert [r.json()["n"] for r in clean_http_sink.wait_for(2)] == [0, 1]  # each once


def test_a_kept_connection_does_not_outlive_the_egress_rule_it_was_opened_under(clean_http_sink, settings):
    post(clean_http_sink, 0)
    setattr(settings, egress.SETTING, False)
    with pytest.raises(TransportError, match="loopback address"):
        post(clean_http_sink, 1)
    assert len(clean_http_sink.requests) == 1


def test_a_connection_whose_answer_was_not_read_to_the_end_is_not_kept(clean_http_sink):
    clean_http_sink.respond("/big", Response(200, body=b"x" * 2000))
    response = http.request("POST", clean_http_sink.url("/big"), b"{}", {}, max_bytes=1000)
    assert len(response.body) == 1000
    post(clean_http_sink, 1)
    big, small = clean_http_sink.wait_for(2)
    assert big.peer != small.peer  # the rest of the big body was never read on a kept connection


# SMTP: a session is kept the same way (outgoing/transports/smtp.py).

@pytest.fixture
def relay(alice, clean_smtp_sink):
    from tests.builders import smtp_service

    return smtp_service(alice, clean_smtp_sink)


def send_test(service, n: int):
    from outgoing import sending

    ok, text = sending.send_test(service, f"reader{n}@example.test")
    assert ok, text


@pytest.mark.django_db
def test_messages_to_one_smtp_server_share_one_session(relay, clean_smtp_sink):
    for n in range(4):
        send_test(relay, n)
    received = clean_smtp_sink.wait_for(4)
    assert [m.rcpt_tos for m in received] == [[f"reader{n}@example.test"] for n in range(4)]
    assert len({m.peer for m in received}) == 1


@pytest.mark.django_db
def test_an_smtp_session_the_server_ended_is_replaced_and_the_message_goes_once(relay, clean_smtp_sink, monkeypatch):
    send_test(relay, 0)
    [(key, [(session, _)])] = keepalive._kept.items()
    session.smtp.docmd("QUIT")  # the server ends it (an idle timeout), unseen by the next send...
    monkeypatch.setattr(keepalive, "_closed", lambda conn: False)  # ...even by the look before use
    send_test(relay, 1)
    first, second = clean_smtp_sink.wait_for(2)
    assert first.peer != second.peer
    assert [m.rcpt_tos for m in clean_smtp_sink.messages] == [["reader0@example.test"], ["reader1@example.test"]]


@pytest.mark.django_db
def test_an_smtp_session_is_not_shared_with_another_login(relay, clean_smtp_sink):
    send_test(relay, 0)
    relay.config = {**relay.config, "from_address": "other@mailgate.test"}  # the same login: shared
    send_test(relay, 1)
    relay.set_secrets({"password": "another"})  # sessions are keyed by the login they were opened with
    send_test(relay, 2)
    first, second, third = clean_smtp_sink.wait_for(3)
    assert first.peer == second.peer != third.peer
