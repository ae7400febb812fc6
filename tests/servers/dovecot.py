"""A private, throw-away Dovecot IMAP server for tests.

    with Dovecot.start() as dc:
        alice = dc.add_user("alice", "secret")
        uid = dc.append("alice", "INBOX", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")

Everything lives in a fresh temp dir (config, cert, passwd-file, homes, base_dir,
state_dir, log). /etc/dovecot is never read: Dovecot always gets ``-c <our
config>`` and so does every doveadm call.

How the instance is guaranteed to go away, in order of preference:
  * ``stop()`` / the context manager / the pytest fixture;
  * an atexit hook for every instance still running;
  * PR_SET_PDEATHSIG: the kernel SIGTERMs the master if the test process dies
    without running atexit (SIGKILL, OOM);
  * on the next ``start()``, temp dirs of earlier runs whose owner process is
    gone are reaped (their master is killed by PID, the dir removed).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import glob
import imaplib
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from . import leftovers
from .ports import (
    HOST,
    free_ports,
    make_self_signed_cert,
    pid_alive,
    wait_for_port,
)
from .procs import ChildServer

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
DH_PARAMS = "/usr/share/dovecot/dh.pem"  # shipped by dovecot-core on Debian

# Each user gets its own uid/gid: inotify instances are limited per real uid
# (fs.inotify.max_user_instances = 128), and every IDLEing imap process holds
# one, so with a shared uid the 129th IDLE session silently degrades.
FIRST_USER_UID = 20000
_DIR_PREFIX = "mailgate-dovecot-"

# --------------------------------------------------------------------------
# IMAP modified UTF-7 (RFC 3501 section 5.1.3)
# --------------------------------------------------------------------------


# Kept independent of imap/utf7.py on purpose: the harness is the oracle that the sync tests
# compare mailgate's own encoder against, so a shared bug could not cancel itself out.
def encode_mutf7(name: str) -> str:
    """Encode a mailbox name to IMAP modified UTF-7.

    Printable ASCII stays as is, except ``&`` which becomes ``&-``; every run of
    other characters becomes ``&`` + base64 (with ``,`` for ``/``, no padding)
    of its UTF-16BE bytes + ``-``. Astral characters (emoji) turn into
    surrogate pairs through the UTF-16 encoding, as the RFC requires.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Inverse of :func:`encode_mutf7`."""

    def repl(m: re.Match) -> str:
        body = m.group(1)
        if not body:
            return "&"
        b64 = body.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        return base64.b64decode(b64).decode("utf-16-be")

    return re.sub(r"&([A-Za-z0-9+,]*)-", repl, name)


def _quote(s: str) -> str:
    """IMAP quoted string (imaplib passes mailbox arguments through raw)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.+)$')


def _parse_list_name(raw: bytes) -> str:
    raw = raw.strip()
    if raw.startswith(b'"'):
        raw = re.sub(rb'\\(.)', rb"\1", raw[1:-1])
    return decode_mutf7(raw.decode("ascii"))


# --------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    password: str
    uid: int
    gid: int
    home: str

    @property
    def maildir(self) -> str:
        return os.path.join(self.home, "Maildir")


class Dovecot(ChildServer):
    """A running private Dovecot. Create with :meth:`start`."""

    host = HOST

    def __init__(self, root: str, port: int, tls_port: int):
        # Use Dovecot.start(); __init__ only lays out paths.
        self.root = root
        self.port = port
        self.tls_port = tls_port
        self.config_path = os.path.join(root, "dovecot.conf")
        self.base_dir = os.path.join(root, "run")
        self.state_dir = os.path.join(root, "state")
        self.log_path = os.path.join(root, "dovecot.log")
        self.stdout_path = os.path.join(root, "dovecot.stdout")
        self.passwd_dir = os.path.join(root, "passwd.d")
        self.homes = os.path.join(root, "home")
        self.users: dict[str, User] = {}
        self.log_paths = (self.log_path, self.stdout_path)
        self.cafile = ""
        self._lock = threading.Lock()  # guards passwd-file rewrites
        self.start_seconds = 0.0  # how long the last (re)start took
        self.oauth2_introspection_url: str | None = None
        self.oauth2_mechanisms: tuple[str, ...] = ()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, tmp_root: str | None = None, timeout: float = 10.0, extra_config: str = "", *,
              oauth2_introspection_url: str | None = None,
              oauth2_mechanisms: tuple[str, ...] = ("xoauth2", "oauthbearer")) -> "Dovecot":
        """Create a fresh temp dir under ``tmp_root`` (default: the system temp
        dir), write config/cert/passwd-file, start Dovecot and wait until both
        listeners accept connections. ``extra_config`` is appended to the
        config (e.g. ``imap_capability = ...`` for a server that lacks SASL-IR).

        With ``oauth2_introspection_url`` users may also sign in with SASL
        ``oauth2_mechanisms`` (XOAUTH2, OAUTHBEARER): an ``oauth2`` passdb
        posts the bearer token to that RFC 7662 endpoint and accepts it when
        the answer is ``{"active": true, "email": <user>}``
        (tests/servers/oauth_provider.py serves one)."""
        parent = tmp_root or tempfile.gettempdir()
        _reap_stale_instances(parent)
        _check_traversable(parent)
        root = tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=parent)
        leftovers.remember(root)  # its master's command line names the config in it
        # mkdtemp makes 0700; the auth process (user dovecot) must read the
        # passwd-file and every mail uid must reach its home below this dir.
        os.chmod(root, 0o755)
        with open(os.path.join(root, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        port, tls_port = free_ports(2)
        self = cls(root, port, tls_port)
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_mechanisms = tuple(oauth2_mechanisms)
        with self._stopped_on_failure():
            for d in (self.base_dir, self.state_dir, self.homes, self.passwd_dir):
                os.makedirs(d, mode=0o755)
            cert = make_self_signed_cert(root, "dovecot")
            self.cafile = cert.cafile
            self._write_config(cert.cert_path, cert.key_path, extra_config)
            self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        t0 = time.monotonic()
        # -F keeps the master in the foreground so it is our direct child:
        # PDEATHSIG works and Popen.wait() tells us when it has exited.
        self._spawn([DOVECOT, "-F", "-c", self.config_path], self.stdout_path)
        deadline = t0 + timeout
        alive = lambda: self._proc is not None and self._proc.poll() is None  # noqa: E731
        try:
            wait_for_port(self.host, self.port, deadline, alive)
            wait_for_port(self.host, self.tls_port, deadline, alive)
            self._wait_for_greeting(deadline, alive)
        except (TimeoutError, RuntimeError) as e:
            raise RuntimeError(f"{e}\n--- dovecot output ---\n{self.log_text()}") from None
        self.start_seconds = time.monotonic() - t0

    def _wait_for_greeting(self, deadline: float, alive) -> None:
        # imap-login accepts connections before the auth process is up, but
        # only greets ("* OK ... ready.") once auth answers. Waiting for the
        # greeting means the first login is not delayed, and a stop() right
        # after start() does not catch auth mid-start (master then waits 6 s).
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(256).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if not alive():
                raise RuntimeError("dovecot exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("dovecot never sent its IMAP greeting")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the master (SIGTERM, then SIGKILL of the whole process group)
        and remove the temp dir. Idempotent."""
        self._stop_processes()
        self._forget()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same ports with the same mail dirs
        (for client reconnect tests). Clients see their connections drop."""
        self._stop_processes()
        self._launch(timeout)

    @contextlib.contextmanager
    def down(self, timeout: float = 10.0):
        """Dovecot stopped inside the block (clients see their connections drop and connecting
        refused), started again on the same ports with the same mail dirs when it ends."""
        self._stop_processes()
        try:
            yield self
        finally:
            self._launch(timeout)

    def _stop_processes(self, grace: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the master leads its own group
        # SIGTERM to the whole group, not just the master: a master alone
        # takes 1 s to shut down (6 s if auth is still starting), waiting on
        # its children in turn. Signalled together, every process exits in a
        # few ms; imap processes still say "* BYE Server shutting down".
        _killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        # Anything left in the group (the master, or e.g. an imap process
        # stuck in a write) gets SIGKILL.
        _killpg(pgid, signal.SIGKILL)
        proc.wait()
        # The master removes master.pid on a clean exit; make sure a restart
        # never trips over a leftover one ("Dovecot is already running").
        try:
            os.unlink(os.path.join(self.base_dir, "master.pid"))
        except FileNotFoundError:
            pass

    @property
    def master_pid(self) -> int | None:
        return self.pid

    @property
    def running(self) -> bool:
        return self.master_pid is not None

    def __repr__(self) -> str:
        return f"<Dovecot {self.host}:{self.port} tls:{self.tls_port} root={self.root}>"

    # ------------------------------------------------------------ config

    def _oauth2_config(self) -> tuple[str, str]:
        """(extra auth mechanisms, passdb block) for the oauth2 option; its
        settings go to a private dovecot-oauth2.conf.ext beside the config."""
        if not self.oauth2_introspection_url:
            return "", ""
        path = os.path.join(self.root, "dovecot-oauth2.conf.ext")
        with open(path, "w") as f:
            f.write(f"""\
# Bearer tokens are checked by POSTing them to the test provider (RFC 7662).
introspection_mode = post
introspection_url = {self.oauth2_introspection_url}
username_attribute = email
active_attribute = active
active_value = true
""")
        os.chmod(path, 0o644)  # read by the auth process
        mechanisms = " ".join(self.oauth2_mechanisms)
        # After passwd-file: a token is no password, so passwd-file says "mismatch" and the
        # default result_failure=continue hands the attempt on to oauth2.
        passdb = f"""
passdb {{
  driver = oauth2
  mechanisms = {mechanisms}
  args = {path}
}}"""
        return mechanisms, passdb

    def _write_config(self, cert: str, key: str, extra: str = "") -> None:
        dh = f"ssl_dh = <{DH_PARAMS}" if os.path.exists(DH_PARAMS) else ""
        oauth2_mechanisms, oauth2_passdb = self._oauth2_config()
        config = f"""\
# Private test instance written by tests/servers/dovecot.py (not the system config).
instance_name = mailgate-test-{self.port}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
auth_verbose = yes

protocols = imap
listen = {self.host}

# Dovecot runs as root; these accounts come with the Debian package.
default_internal_user = dovecot
default_login_user = dovenull
# Test users have uids from {FIRST_USER_UID} up (one uid each, see dovecot.py).
first_valid_uid = 1000
last_valid_uid = 0
first_valid_gid = 1000
last_valid_gid = 0

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
{dh}
disable_plaintext_auth = no
auth_mechanisms = plain login {oauth2_mechanisms}

# One passwd-file per user, see _write_passwd() for why.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd_dir}/%u
}}{oauth2_passdb}
userdb {{
  driver = passwd-file
  args = {self.passwd_dir}/%u
}}
# Tests log in with wrong passwords on purpose: no 2 s failure delay, and no
# per-IP penalty that would slow every later login from 127.0.0.1 (2-15 s).
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

mail_location = maildir:~/Maildir
mail_fsync = never

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}

# Tests open many concurrent sessions (IDLE per folder per account); the
# defaults (10 per user+IP, 100 processes per service) are far too low.
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
    ssl = yes
  }}
  # High-performance mode: a couple of login processes serve everyone
  # instead of one fork per connection.
  service_count = 0
  process_min_avail = 1
  client_limit = 1000
}}
service imap {{
  process_limit = 1000
}}
"""
        with open(self.config_path, "w") as f:
            f.write(config + extra)

    # ------------------------------------------------------------ users

    def _passwd_file(self, name: str) -> str:
        # auth_username_format defaults to %Lu: Dovecot looks users up (and
        # expands %u in the passwd-file path) lower-cased.
        return os.path.join(self.passwd_dir, name.lower())

    def _write_passwd(self, user: User) -> None:
        """(Re)write the one-line passwd-file of ``user``.

        One file per user (``args = .../passwd.d/%u``) because passwd-file
        re-stats its file at most once per second (`last_sync_time ==
        ioloop_time` in db-passwd-file.c): a user added to a shared file in the
        same second as any other login would be "unknown" until the next
        second. A per-user path that was never looked up is always read fresh.
        """
        line = f"{user.name}:{{PLAIN}}{user.password}:{user.uid}:{user.gid}::{user.home}::\n"
        path = self._passwd_file(user.name)
        # Write + rename so the auth process never reads a half file; force a
        # new mtime because Dovecot reloads only on an mtime/size change and
        # two writes within one second with equal size would look unchanged.
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(line)
        os.chmod(tmp, 0o644)  # read by the auth process (user dovecot)
        old = os.stat(path).st_mtime if os.path.exists(path) else 0
        mtime = max(int(time.time()), int(old) + 1)
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)

    @staticmethod
    def _check_credential(value: str, what: str) -> None:
        if not value or any(c in value for c in ":\n\r\0"):
            raise ValueError(f"{what} {value!r}: empty, or contains ':'/newline/NUL (passwd-file)")
        if what == "user name" and ("/" in value or value.startswith(".") or "%" in value):
            raise ValueError(f"user name {value!r}: no '/', '%' or leading '.' (used as a file name)")

    def add_user(self, name: str, password: str) -> User:
        """Add a user with its own uid/gid and home; works while running."""
        self._check_credential(name, "user name")
        self._check_credential(password, "password")
        with self._lock:
            if name.lower() in (u.lower() for u in self.users):
                raise ValueError(f"user {name!r} exists")
            uid = FIRST_USER_UID + len(self.users)
            home = os.path.join(self.homes, name)
            os.makedirs(home, mode=0o700)
            os.chown(home, uid, uid)
            user = User(name, password, uid, uid, home)
            self.users[name] = user
            self._write_passwd(user)
        return user

    def set_password(self, name: str, password: str) -> None:
        """Change a password; effective for logins when this returns.

        Takes up to 1 s: Dovecot may have looked this user up earlier in the
        current second, and then serves its cached copy until the second
        ends (see _write_passwd)."""
        self._check_credential(password, "password")
        with self._lock:
            u = self.users[name]
            self.users[name] = user = User(u.name, password, u.uid, u.gid, u.home)
            self._write_passwd(user)
        now = time.time()
        time.sleep(math.ceil(now) - now + 0.01)

    # ------------------------------------------------------------ IMAP helpers

    def imap(self, user: str, tls: bool = False) -> imaplib.IMAP4:
        """A logged-in stdlib imaplib client (caller logs out).

        AUTHENTICATE PLAIN instead of LOGIN so non-ASCII passwords work
        (imaplib sends LOGIN arguments as ASCII)."""
        if tls:
            ctx = ssl.create_default_context(cafile=self.cafile)
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(self.host, self.tls_port, ssl_context=ctx, timeout=10)
        else:
            conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        password = self.users[user].password
        conn.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode("utf-8"))
        return conn

    @staticmethod
    def _ok(result, what: str):
        typ, data = result
        if typ != "OK":
            raise RuntimeError(f"IMAP {what} failed: {typ} {data!r}")
        return data

    def create_folder(self, user: str, name: str) -> None:
        """CREATE ``name`` (Unicode, '/' separates levels). Existing is fine."""
        conn = self.imap(user)
        try:
            self._create(conn, name)
        finally:
            conn.logout()

    def _create(self, conn: imaplib.IMAP4, name: str) -> None:
        if name.upper() == "INBOX":
            return
        typ, data = conn.create(_quote(encode_mutf7(name)))
        if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(data):
            raise RuntimeError(f"IMAP CREATE {name!r} failed: {typ} {data!r}")

    def delete_folder(self, user: str, name: str) -> None:
        conn = self.imap(user)
        try:
            self._ok(conn.delete(_quote(encode_mutf7(name))), f"DELETE {name!r}")
        finally:
            conn.logout()

    def folders(self, user: str) -> list[str]:
        """Decoded names from LIST "" "*"."""
        conn = self.imap(user)
        try:
            data = self._ok(conn.list('""', "*"), "LIST")
        finally:
            conn.logout()
        names = []
        for line in data:
            if isinstance(line, tuple):  # name sent as a literal
                names.append(line[1].decode("ascii"))
                continue
            m = _LIST_RE.match(line)
            if m:
                names.append(_parse_list_name(m.group("name")))
        return names

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags=(),
        date: datetime.datetime | float | None = None,
    ) -> int:
        """APPEND ``raw`` to ``folder`` (created if missing); return its UID.

        Note: imaplib normalises bare LF line endings to CRLF, as any IMAP
        client must.
        """
        conn = self.imap(user)
        try:
            self._create(conn, folder)
            flag_list = "(" + " ".join(flags) + ")" if flags else None
            when = imaplib.Time2Internaldate(date) if date is not None else None
            data = self._ok(conn.append(_quote(encode_mutf7(folder)), flag_list, when, raw), "APPEND")
        finally:
            conn.logout()
        # Tagged reply: b'[APPENDUID <uidvalidity> <uid>] Append completed.'
        m = re.search(rb"\[APPENDUID \d+ (\d+)\]", b" ".join(d for d in data if isinstance(d, bytes)))
        if not m:
            raise RuntimeError(f"no APPENDUID in {data!r}")
        return int(m.group(1))

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """{uid: {flags}} of every message. EXAMINE (read-only) + UID FETCH
        FLAGS never sets \\Seen. \\Recent is left out: it depends on which
        session looked first, so it would make assertions flaky."""
        conn = self.imap(user)
        try:
            data = self._ok(conn.select(_quote(encode_mutf7(folder)), readonly=True), "EXAMINE")
            if int(data[0]) == 0:
                return {}
            data = self._ok(conn.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH")
        finally:
            conn.logout()
        result: dict[int, set[str]] = {}
        for line in data:
            if not isinstance(line, bytes):
                continue
            uid = re.search(rb"UID (\d+)", line)
            fl = re.search(rb"FLAGS \(([^)]*)\)", line)
            if uid and fl:
                result[int(uid.group(1))] = set(fl.group(1).decode().split()) - {"\\Recent"}
        return result

    # ------------------------------------------------------------ doveadm

    def doveadm(self, *args: str, check: bool = True) -> str:
        """Run ``doveadm -c <our config> args...`` and return stdout."""
        proc = subprocess.run(
            [DOVEADM, "-c", self.config_path, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,  # doveadm exits; a pipe is fine here
            text=True,
            timeout=30,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def who(self) -> list[tuple[str, int]]:
        """[(user, connection count)] from ``doveadm who`` (anvil's view:
        logged-in sessions only)."""
        out = self.doveadm("-f", "tab", "who")
        rows = []
        for line in out.splitlines()[1:]:  # first line is the header
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1].strip().isdigit():
                rows.append((fields[0], int(fields[1])))
        return rows

    def login_attempts(self, user: str) -> int:
        """How many times ``user`` tried to log in so far, by the log (auth_verbose is on): each
        accepted login and each refused password is one line. The log is written in order, so once
        a later attempt shows, every earlier one has too."""
        text = self.log_text()
        return text.count(f"Login: user=<{user}>,") + text.count(f"passwd-file({user},")

    def kick(self, user: str) -> None:
        """Disconnect all of ``user``'s sessions (doveadm kick)."""
        # Exit code 68 (EX_NOUSER-ish) just means nobody was connected.
        self.doveadm("kick", user, check=False)


# --------------------------------------------------------------------------


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _check_traversable(parent: str) -> None:
    """Mail processes run as uid 20000+; they must be able to reach homes."""
    path = os.path.abspath(parent)
    while True:
        if not os.stat(path).st_mode & 0o001:
            raise ValueError(
                f"{path} is not world-traversable (o+x); Dovecot's per-user "
                f"processes could not reach homes below it. Use another tmp_root."
            )
        if path == "/":
            return
        path = os.path.dirname(path)


def _reap_stale_instances(parent: str) -> None:
    """Kill and remove instances left by test processes that no longer exist
    (e.g. a run killed by SIGKILL before PDEATHSIG could act on a restart)."""
    for root in glob.glob(os.path.join(parent, _DIR_PREFIX + "*")):
        try:
            with open(os.path.join(root, "owner.pid")) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        try:
            with open(os.path.join(root, "run", "master.pid")) as f:
                master = int(f.read().strip())
            with open(f"/proc/{master}/cmdline", "rb") as f:
                is_ours = root.encode() in f.read()  # "-c <root>/dovecot.conf"
            if is_ours:
                os.killpg(master, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(root, ignore_errors=True)
