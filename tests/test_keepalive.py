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
