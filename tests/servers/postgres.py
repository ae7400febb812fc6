"""A private PostgreSQL cluster for tests that restart the database (never the system one).

    with PrivatePostgres.start() as pg:
        pg.url("mailgate")          # postgres://postgres@127.0.0.1:PORT/mailgate
        pg.restart()                # pg_ctl restart -m fast: every client's connection drops

initdb/pg_ctl come from Debian's /usr/lib/postgresql/<version>/bin and run as the `postgres`
user (initdb refuses root). The cluster lives in a temp dir on a free port, trusts loopback,
runs without fsync (a test cluster), and is stopped and removed by stop().
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from . import leftovers
from .ports import HOST, free_port
from .procs import PrivateServer

OWNER = "postgres"


def binaries() -> str | None:
    """The newest installed server's bin dir, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def unavailable() -> str | None:
    """Why a private cluster cannot be made here (for pytest.skip), or None."""
    if binaries() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        return f"no {OWNER!r} user to run initdb as"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != OWNER:
        return f"must run as root or {OWNER!r} to start a cluster as {OWNER!r}"
    return None


class PrivatePostgres(PrivateServer):
    def __init__(self) -> None:
        self.bin = binaries()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mailgate-pg-")
        leftovers.remember(self.dir)  # the postmaster's command line names its data dir
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.log_paths = (self.log,)
        self.running = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", OWNER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    @classmethod
    def start(cls) -> "PrivatePostgres":
        self = cls()
        with self._stopped_on_failure():
            entry = pwd.getpwnam(OWNER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._run(f"{self.bin}/initdb", "-D", self.data, "-U", OWNER, "-A", "trust", "--no-sync",
                      "-E", "UTF8", "--locale=C.UTF-8")
            self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run(f"{self.bin}/pg_ctl", action, "-D", self.data, "-l", self.log, "-w", "-t", "30",
                  "-o", options, *extra)
        self.running = True

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{OWNER}@{HOST}:{self.port}/{database}"

    def restart(self) -> None:
        """Fast shutdown (every session is terminated, open transactions roll back), then start."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if self.running and os.path.isdir(self.data):
            self._run(f"{self.bin}/pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", check=False)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)
