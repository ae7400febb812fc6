"""One IDLE connection (imap/idle/client.py) against the real Dovecot: TLS, STARTTLS, pushes, BYE.

No database: these drive the aioimaplib client directly, so they are fast and show the protocol
facts the manager relies on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time

import pytest

from imap import errors
from imap.idle.client import ConnectionLost, IdleClient, push_kinds

TIMEOUT = 5.0


def message(subject: str) -> bytes:
    return f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode()


def client_for(dovecot, tls: str) -> IdleClient:
    context = ssl.create_default_context(cafile=dovecot.cafile) if tls != "none" else None
    port = dovecot.tls_port if tls == "ssl" else dovecot.port
    return IdleClient(dovecot.host, port, tls=tls, ssl_context=context, timeout=TIMEOUT)


async def next_push(client: IdleClient, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        lines = await client.wait_push(remaining)
        if any(push_kinds(lines)):
            return lines
    pytest.fail("no push within the deadline")


@pytest.mark.parametrize("tls", ["ssl", "starttls", "none"])
def test_an_append_is_pushed_as_exists_over_every_kind_of_connection(dovecot, mail_user, tls):
    async def scenario():
        client = client_for(dovecot, tls)
        await client.open(mail_user.name, mail_user.password, "INBOX")
        await client.start_idle()
        await asyncio.to_thread(dovecot.append, mail_user.name, "INBOX", message("pushed"))
        lines = await next_push(client)
        await client.close(TIMEOUT)
        return lines

    assert push_kinds(asyncio.run(scenario()))[0] is True


def test_flag_changes_are_pushed_as_changes(dovecot, mail_user):
    uid = dovecot.append(mail_user.name, "INBOX", message("to be flagged"))

    def flag_it():
        conn = dovecot.imap(mail_user.name)
        try:
            conn.select("INBOX")
            conn.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
        finally:
            conn.logout()

    async def scenario():
        client = client_for(dovecot, "none")
        await client.open(mail_user.name, mail_user.password, "INBOX")
        await client.start_idle()
        await asyncio.to_thread(flag_it)
        lines = await next_push(client)
        await client.close(TIMEOUT)
        return lines

    new, changed, _ = push_kinds(asyncio.run(scenario()))
    assert (new, changed) == (False, True)


def test_renewing_idle_keeps_a_push_that_arrives_with_the_done_answer(dovecot, mail_user):
    async def scenario():
        client = client_for(dovecot, "none")
        await client.open(mail_user.name, mail_user.password, "INBOX")
        await client.start_idle()
        # Appended while idling but collected only at DONE: it must come back from stop_idle/noop.
        await asyncio.to_thread(dovecot.append, mail_user.name, "INBOX", message("during renewal"))
        # Give Dovecot's push (~0.5 s after a change) time to land in the socket, so DONE's answer
        # carries it. Not a race to win: had it not arrived, the NOOP below reports it.
        await asyncio.sleep(1.0)
        lines = await client.stop_idle()
        lines += await client.noop()
        await client.start_idle()  # the renewed IDLE works
        await client.close(TIMEOUT)
        return lines

    assert push_kinds(asyncio.run(scenario()))[0] is True


def test_a_kicked_connection_ends_the_wait_at_once(dovecot, mail_user):
    async def scenario():
        client = client_for(dovecot, "ssl")
        await client.open(mail_user.name, mail_user.password, "INBOX")
        await client.start_idle()
        await asyncio.to_thread(dovecot.kick, mail_user.name)
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            while True:  # Dovecot may send "* BYE" before closing: push_kinds reports it
                lines = await client.wait_push(30)
                if push_kinds(lines)[2]:
                    raise ConnectionLost("BYE")
        await client.close(TIMEOUT)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 3


def test_a_wrong_password_is_an_authentication_failure(dovecot, mail_user):
    async def scenario():
        client = client_for(dovecot, "none")
        try:
            await client.open(mail_user.name, "wrong password", "INBOX")
        finally:
            client.abort()

    with pytest.raises(errors.AuthenticationFailed):
        asyncio.run(scenario())


def test_a_certificate_we_do_not_trust_is_refused(dovecot, mail_user):
    async def scenario():
        client = IdleClient(dovecot.host, dovecot.tls_port, tls="ssl", ssl_context=ssl.create_default_context(),
                            timeout=TIMEOUT)
        try:
            await client.open(mail_user.name, mail_user.password, "INBOX")
        finally:
            client.abort()

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(scenario())


def test_a_non_ascii_password_logs_in(dovecot):
    user = dovecot.add_user(f"idle-utf8-{time.monotonic_ns()}", "pässwörd-✓")

    async def scenario():
        client = client_for(dovecot, "none")
        await client.open(user.name, user.password, "INBOX")
        await client.close(TIMEOUT)

    asyncio.run(scenario())


def test_a_server_that_never_answers_times_out(dovecot):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        async def scenario():
            client = IdleClient("127.0.0.1", server.getsockname()[1], tls="none", ssl_context=None, timeout=0.5)
            try:
                await client.open("user", "pw", "INBOX")
            finally:
                client.abort()

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            asyncio.run(scenario())
        assert time.monotonic() - started < 2
    finally:
        server.close()


@pytest.fixture(scope="module")
def dovecot_without_sasl_ir():
    """A second private Dovecot whose capabilities lack SASL-IR, so the client logs in with LOGIN
    (the path aioimaplib's own scrub got wrong for quoted passwords)."""
    from tests.servers.dovecot import Dovecot

    server = Dovecot.start(extra_config="protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ IDLE\n}\n")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("server", ["dovecot_without_sasl_ir", "dovecot"])
def test_no_log_record_at_debug_holds_a_password_with_quotes_and_backslashes(request, server, caplog):
    dovecot = request.getfixturevalue(server)
    password = 'pa"ss\\word-SECRET'
    user = dovecot.add_user(f"idle-quoted-{time.monotonic_ns()}", password)
    caplog.set_level(logging.DEBUG, logger="aioimaplib")

    async def scenario():
        client = client_for(dovecot, "none")
        await client.open(user.name, password, "INBOX")  # logs in: the password went over the wire
        await client.close(TIMEOUT)
        wrong = client_for(dovecot, "none")
        try:
            with pytest.raises(errors.AuthenticationFailed):
                await wrong.open(user.name, password + '"\\-WRONG', "INBOX")
        finally:
            wrong.abort()

    asyncio.run(scenario())
    sent = [r.getMessage() for r in caplog.records if r.name.startswith("aioimaplib")]
    command = "LOGIN" if server == "dovecot_without_sasl_ir" else "AUTHENTICATE"
    assert sum(f" {command} " in text for text in sent) == 2, sent  # the path under test was taken
    assert not [text for text in caplog.text.splitlines() if "SECRET" in text or "ss\\" in text]
    tokens = [base64.b64encode(f"\0{user.name}\0{pw}".encode()).decode() for pw in (password, password + '"\\-WRONG')]
    assert not [text for text in sent if "SECRET" in text or "WRONG" in text or any(t in text for t in tokens)]
