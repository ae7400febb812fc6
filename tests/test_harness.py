"""Proves the real-server harness (tests/servers/) against the real servers.

Plain pytest: no database, no Django. Servers come from tests/servers/fixtures.py
(session-scoped); tests that stop/restart a server start a private one.
"""

from __future__ import annotations

import asyncio
import email.policy
import imaplib
import json
import os
import pwd
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import pytest

from tests.servers.dovecot import Dovecot, decode_mutf7, encode_mutf7
from tests.servers.http import Response
from tests.servers.ports import free_port, pid_alive
from tests.servers.procs import started_by_a_killed_parent
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpSink
from tests.servers.waiting import eventually

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sample_message(subject="Hello", to="bob@example.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Body text\n")
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as on the wire


# ---------------------------------------------------------------- Dovecot


def test_free_port_is_bindable():
    port = free_port()
    assert port > 1024
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_dovecot_system_accounts_exist():
    # The config relies on the accounts created by Debian's dovecot-core.
    pwd.getpwnam("dovecot")
    pwd.getpwnam("dovenull")


def test_dovecot_starts_on_private_ports(dovecot):
    assert dovecot.running
    assert dovecot.host == "127.0.0.1"
    assert len({dovecot.port, dovecot.tls_port, 143, 993}) == 4
    assert dovecot.config_path.startswith(dovecot.root)
    assert "/etc/dovecot" not in open(dovecot.config_path).read()


def test_plain_login_and_capabilities(dovecot, mail_user):
    conn = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        typ, _ = conn.login(mail_user.name, mail_user.password)
        assert typ == "OK"
        # imaplib keeps the pre-login list; ask again for the logged-in one.
        caps = set(conn.capability()[1][0].decode().split())
        assert {"IDLE", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "UIDPLUS", "MOVE"} <= caps
    finally:
        conn.logout()


def test_wrong_password_is_rejected(dovecot, mail_user):
    conn = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            conn.login(mail_user.name, "wrong")
    finally:
        conn.shutdown()


def test_tls_login_verifies_against_cafile(dovecot, mail_user):
    ctx = ssl.create_default_context(cafile=dovecot.cafile)  # verifies cert + hostname
    conn = imaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=ctx, timeout=10)
    try:
        assert conn.login(mail_user.name, mail_user.password)[0] == "OK"
        assert conn.sock.version().startswith("TLSv1.")
    finally:
        conn.logout()
    # ...and an unverified default context must refuse the self-signed cert.
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.tls_port, ssl_context=ssl.create_default_context(), timeout=10)


def test_starttls_on_plain_port(dovecot, mail_user):
    conn = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        assert "STARTTLS" in conn.capabilities
        conn.starttls(ssl.create_default_context(cafile=dovecot.cafile))
        assert isinstance(conn.sock, ssl.SSLSocket)
        assert conn.login(mail_user.name, mail_user.password)[0] == "OK"
    finally:
        conn.logout()


def test_append_returns_uid_and_flags_are_readable(dovecot, mail_user):
    uid1 = dovecot.append(mail_user.name, "INBOX", sample_message("one"))
    uid2 = dovecot.append(
        mail_user.name, "INBOX", sample_message("two"),
        flags=(r"\Seen", r"\Flagged", "$Label1"), date=1_700_000_000,
    )
    assert uid2 > uid1 > 0
    assert dovecot.flags(mail_user.name, "INBOX") == {uid1: set(), uid2: {r"\Seen", r"\Flagged", "$Label1"}}
    # Reading flags must not have marked anything \Seen.
    assert dovecot.flags(mail_user.name, "INBOX")[uid1] == set()
    # append() creates a missing folder on the way.
    uid = dovecot.append(mail_user.name, "Archive/2024", sample_message("old"))
    assert dovecot.flags(mail_user.name, "Archive/2024") == {uid: set()}


def test_mutf7_encoder_matches_rfc3501_examples():
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert encode_mutf7("Tom & Jerry") == "Tom &- Jerry"
    assert encode_mutf7("Привет") == "&BB8EQAQ4BDIENQRC-"
    assert encode_mutf7("📬") == "&2D3c7A-"  # surrogate pair D83D DCEC
    for name in ("~peter/mail/台北/日本語", "a&b", "Привет 📬 & co", "plain", "&&", "ÿ/x"):
        assert decode_mutf7(encode_mutf7(name)) == name


def test_unicode_folder_round_trips_through_create_and_list(dovecot, mail_user):
    name = "Tom & Jerry/Привет 📬"
    dovecot.create_folder(mail_user.name, name)
    assert name in dovecot.folders(mail_user.name)
    # On the wire the server lists exactly our modified UTF-7 encoding.
    conn = dovecot.imap(mail_user.name)
    try:
        _, data = conn.list('""', "*")
    finally:
        conn.logout()
    assert any(b'"Tom &- Jerry/&BB8EQAQ4BDIENQRC- &2D3c7A-"' in line for line in data), data
    uid = dovecot.append(mail_user.name, name, sample_message())
    assert dovecot.flags(mail_user.name, name) == {uid: set()}
    dovecot.delete_folder(mail_user.name, name)
    assert name not in dovecot.folders(mail_user.name)


def test_special_use_folders_are_flagged(dovecot, mail_user):
    for folder in ("Sent", "Trash", "Drafts", "Junk"):
        dovecot.create_folder(mail_user.name, folder)
    conn = dovecot.imap(mail_user.name)
    try:
        _, data = conn.list('""', "*")
    finally:
        conn.logout()
    listing = b"\n".join(data)
    for folder in (b"Sent", b"Trash", b"Drafts", b"Junk"):
        assert b"\\" + folder + b")" in listing or b"\\" + folder + b" " in listing, listing


def test_each_user_has_its_own_uid(dovecot, mail_user):
    other = dovecot.add_user(mail_user.name + "-other", "x-password")
    assert mail_user.uid != other.uid
    assert os.stat(mail_user.home).st_uid == mail_user.uid
    assert os.stat(other.home).st_uid == other.uid
    # The mailbox files are written by the user's own uid (not root/dovecot).
    dovecot.append(other.name, "INBOX", sample_message())
    assert os.stat(other.maildir).st_uid == other.uid


def test_set_password_takes_effect_while_running(dovecot, mail_user):
    dovecot.set_password(mail_user.name, "new-Пароль")  # non-ASCII on purpose
    conn = dovecot.imap(mail_user.name)  # AUTHENTICATE PLAIN with the new one
    conn.logout()
    old = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            old.login(mail_user.name, "pw-does-not-matter")
    finally:
        old.shutdown()


class RawImap:
    """Minimal line-based IMAP client, to hold an IDLE without any library."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")

    def command(self, tag: str, text: str) -> list[bytes]:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                assert line.split()[1] == b"OK", lines
                return lines

    def idle(self) -> None:
        self.sock.sendall(b"i IDLE\r\n")
        while not (line := self.file.readline()).startswith(b"+ "):
            assert line, "connection closed before IDLE continuation"

    def read_until_eof(self) -> list[bytes]:
        lines = []
        while line := self.file.readline():
            lines.append(line)
        return lines

    def close(self):
        self.file.close()
        self.sock.close()


def test_who_sees_idle_session_and_kick_closes_it(dovecot, mail_user):
    client = RawImap(dovecot.host, dovecot.port)
    try:
        client.command("a", f'LOGIN "{mail_user.name}" "{mail_user.password}"')
        client.command("b", "SELECT INBOX")
        client.idle()
        assert eventually(lambda: (mail_user.name, 1) in dovecot.who(), 5.0, interval=0.02)
        dovecot.kick(mail_user.name)
        rest = client.read_until_eof()  # returns only once the server closed
        assert any(b"BYE" in line for line in rest), rest
        assert eventually(lambda: mail_user.name not in dict(dovecot.who()), 5.0, interval=0.02)
    finally:
        client.close()


def test_aioimaplib_idle_gets_push_and_sees_kick(dovecot, mail_user):
    import aioimaplib

    async def scenario():
        lost = asyncio.get_running_loop().create_future()
        client = aioimaplib.IMAP4(
            dovecot.host, dovecot.tls_port,
            ssl_context=ssl.create_default_context(cafile=dovecot.cafile),
            conn_lost_cb=lambda exc: lost.done() or lost.set_result(exc),
        )
        await client.wait_hello_from_server()
        assert (await client.login(mail_user.name, mail_user.password)).result == "OK"
        assert (await client.select("INBOX")).result == "OK"
        idle = await client.idle_start(timeout=30)
        # Another session appends; the IDLEing one gets EXISTS pushed.
        await asyncio.to_thread(dovecot.append, mail_user.name, "INBOX", sample_message())
        push = await asyncio.wait_for(client.wait_server_push(), 10)
        assert any(b"EXISTS" in (line if isinstance(line, bytes) else str(line).encode()) for line in push), push
        assert (mail_user.name, 1) in await asyncio.to_thread(dovecot.who)
        await asyncio.to_thread(dovecot.kick, mail_user.name)
        await asyncio.wait_for(lost, 10)
        idle.cancel()

    asyncio.run(scenario())


def test_restart_keeps_ports_and_mail_and_drops_clients():
    with Dovecot.start() as dc:
        dc.add_user("carol", "carol-pw")
        uid = dc.append("carol", "INBOX", sample_message(), flags=(r"\Answered",))
        ports, old_pid = (dc.port, dc.tls_port), dc.master_pid
        client = RawImap(dc.host, dc.port)
        client.command("a", 'LOGIN "carol" "carol-pw"')
        dc.restart()
        assert client.read_until_eof() is not None  # server side closed it
        client.close()
        assert (dc.port, dc.tls_port) == ports
        assert dc.master_pid != old_pid and not pid_alive(old_pid)
        assert dc.flags("carol", "INBOX") == {uid: {r"\Answered"}}
        new_pid = dc.master_pid
    assert not pid_alive(new_pid)
    assert not os.path.exists(dc.root)


def test_stop_kills_master_and_children_and_removes_dir():
    dc = Dovecot.start()
    dc.add_user("dave", "dave-pw")
    client = RawImap(dc.host, dc.port)
    client.command("a", 'LOGIN "dave" "dave-pw"')
    pid, root = dc.master_pid, dc.root
    dc.stop()
    client.close()
    assert not pid_alive(pid)
    assert not os.path.exists(root)
    # Nothing of that instance is left: no process still names its config.
    leftovers = subprocess.run(["pgrep", "-f", root], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    dc.stop()  # idempotent


def test_dovecot_dies_with_a_killed_test_process(tmp_path):
    """PDEATHSIG: even a SIGKILLed test process takes its Dovecot along."""
    pid, root = started_by_a_killed_parent("from tests.servers.dovecot import Dovecot\ndc = Dovecot.start()",
                                           "dc.master_pid, dc.root")
    eventually(lambda: not pid_alive(pid), 5.0, interval=0.02)
    # Its temp dir is left behind (nobody ran stop()); the next start() reaps it.
    Dovecot.start().stop()
    assert not os.path.exists(root)


# ---------------------------------------------------------------- SMTP


def test_smtp_sink_receives_message(clean_smtp_sink):
    sink = clean_smtp_sink
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.sendmail("alice@example.test", ["bob@example.test", "carol@example.test"], sample_message("Hi Bob"))
    [msg] = sink.wait_for(1, timeout=5)
    assert msg.mail_from == "alice@example.test"
    assert msg.rcpt_tos == ["bob@example.test", "carol@example.test"]
    assert msg.message["Subject"] == "Hi Bob"
    assert msg.message.get_content() == "Body text\n"
    assert msg.raw.startswith(b"From: alice@example.test")


def test_smtp_sink_wait_for_times_out(clean_smtp_sink):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        clean_smtp_sink.wait_for(1, timeout=0.2)
    assert time.monotonic() - t0 < 2


def test_smtp_fail_next_makes_sender_see_error(clean_smtp_sink):
    sink = clean_smtp_sink
    sink.fail_next(2, code=451)
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as err:
                client.sendmail("a@example.test", ["b@example.test"], sample_message())
            assert err.value.smtp_code == 451
        client.sendmail("a@example.test", ["b@example.test"], sample_message("third"))
    [msg] = sink.wait_for(1)
    assert msg.message["Subject"] == "third"
    assert sink.rejected == 2

    sink.fail_next(1, code=550, stage="RCPT")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@example.test", ["b@example.test"], sample_message())


def test_smtp_sink_with_starttls_and_auth():
    with SmtpSink.start(require_auth=True, username="relay", password="relay-pw", starttls=True) as sink:
        ctx = ssl.create_default_context(cafile=sink.cafile)
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.ehlo()
            with pytest.raises(smtplib.SMTPException):
                client.login("relay", "relay-pw")  # AUTH needs TLS first
            client.starttls(context=ctx)
            client.ehlo()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("relay", "wrong")
            client.login("relay", "relay-pw")
            client.sendmail("a@example.test", ["b@example.test"], sample_message())
        [msg] = sink.wait_for(1)
        assert msg.auth_user == "relay" and msg.tls
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.starttls(context=ctx)
            with pytest.raises(smtplib.SMTPSenderRefused) as err:
                client.sendmail("a@example.test", ["b@example.test"], sample_message())
            assert err.value.smtp_code == 530


# ---------------------------------------------------------------- Redis


def test_redis_server_answers_ping(clean_redis):
    import redis

    assert clean_redis.port != 6379
    assert clean_redis.url == f"redis://127.0.0.1:{clean_redis.port}/0"
    client = redis.Redis.from_url(clean_redis.url)
    try:
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()


def test_redis_server_stop_kills_its_pid():
    server = RedisServer.start()
    pid = server.pid
    assert pid_alive(pid)
    server.stop()
    assert not pid_alive(pid)
    assert not os.path.exists(server.dir)


# ---------------------------------------------------------------- the session-end check

LEAVES_A_DAEMON = """
import os, subprocess, sys, time

DAEMON = "import os, sys, time\\nif os.fork():\\n    sys.exit(0)\\nos.setsid()\\n" \\
         "open(sys.argv[2], 'w').write(str(os.getpid()))\\ntime.sleep(600)\\n"

def test_it_starts_a_daemon_and_forgets_it(tmp_path):
    pid_file = os.environ["DAEMON_PID_FILE"]
    subprocess.run([sys.executable, "-c", DAEMON, str(tmp_path / "state"), pid_file], check=True)
    while not os.path.exists(pid_file) or not open(pid_file).read():
        time.sleep(0.01)
"""


def test_a_session_that_leaves_a_process_running_fails_and_the_process_is_stopped(tmp_path):
    """tests/servers/leftovers.py, run on a one-test session whose test forgets a daemon."""
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_inner.py").write_text(LEAVES_A_DAEMON)
    pid_file = tmp_path / "daemon.pid"
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATA_DIR"}  # its own, never ours
    env.update(PYTHONPATH=REPO, DJANGO_SETTINGS_MODULE="tests.settings", DAEMON_PID_FILE=str(pid_file),
               MAILGATE_LEFTOVERS_WAIT="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", os.devnull, "-p", "tests.servers.leftovers",
         "-p", "no:randomly", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'basetemp'}",
         str(tmp_path / "inner" / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    pid = int(pid_file.read_text())
    assert result.returncode == 1 and "1 passed" in output, output
    assert "processes left running" in output and f"pid {pid}:" in output, output
    eventually(lambda: not pid_alive(pid), timeout=5, what="the forgotten daemon killed")


# ---------------------------------------------------------------- HTTP


def _post(url, payload, timeout=10):
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Signature": "abc"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_http_sink_records_post(clean_http_sink):
    sink = clean_http_sink
    status, _, body = _post(sink.url("/hook?source=test&x="), {"event": "mail"})
    assert status == 200 and json.loads(body) == {}
    [req] = sink.wait_for(1)
    assert req.method == "POST" and req.path == "/hook"
    assert req.query == {"source": ["test"], "x": [""]}
    assert req.header("x-signature") == "abc"
    assert req.json() == {"event": "mail"}


def test_http_sink_scripted_responses_in_order(clean_http_sink):
    sink = clean_http_sink
    sink.respond("/api", [
        Response(429, headers={"Retry-After": "1"}, json={"error": "slow down"}),
        Response(200, json={"ok": True}),
    ])
    sink.respond("/down", 503)
    first = _post(sink.url("/api"), {})
    second = _post(sink.url("/api"), {})
    third = _post(sink.url("/api"), {})
    assert (first[0], first[1]["Retry-After"], json.loads(first[2])) == (429, "1", {"error": "slow down"})
    assert (second[0], json.loads(second[2])) == (200, {"ok": True})
    assert third[0] == 200  # the last scripted response repeats
    assert _post(sink.url("/down"), {})[0] == 503
    assert len(sink.wait_for(3, path="/api")) == 3
