"""The embedded Redis lives exactly as long as the mailgate processes that use it (issue 20).

A process holds it by using it; whichever process starts it, it is gone a few seconds after the
last one of its data dir exits, SIGKILLed or not, and a one-shot command leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailgate import embedded_redis
from tests.servers.leftovers import processes_naming
from tests.servers.ports import pid_alive
from tests.servers.procs import ROOT
from tests.servers.waiting import eventually
from tests.builders import manage

# Stopping takes GRACE after the last user, one watchdog poll, and redis-server's own shutdown.
GONE_WITHIN = embedded_redis.GRACE + 5

# A process that uses the embedded Redis of argv[1]'s data dir until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from mailgate import embedded_redis
print(embedded_redis.ensure_running(Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, sock: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(sock)], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # Its first line is printed once it holds the server: a real event to wait on.
        self.started = self.proc.stdout.readline().strip() == "True"

    def exit(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def wait_until_no_process_names(data_dir: Path, but: tuple[int, ...] = ()) -> None:
    def others():
        return [(pid, cmd) for pid, cmd in processes_naming(data_dir) if pid not in but]

    eventually(lambda: not others(), timeout=GONE_WITHIN, what=f"every process naming {data_dir} gone")


def test_it_is_shared_per_data_dir_and_stopped_cleanly(tmp_path):
    sock = tmp_path / "redis.sock"
    try:
        assert embedded_redis.ensure_running(sock) is True
        assert embedded_redis.ensure_running(sock) is False  # a second use reuses it
        assert embedded_redis.started_here(sock)
        pid = embedded_redis.server_pid(sock)
        assert pid_alive(pid) and embedded_redis.answers(sock)
        assert oct(sock.stat().st_mode & 0o777) == "0o700"  # only this user's processes may talk to it
    finally:
        stopped = embedded_redis.stop(sock)
        embedded_redis.release()
    assert stopped and not embedded_redis.answers(sock)
    eventually(lambda: not pid_alive(pid), timeout=5, what="redis-server exited")
    wait_until_no_process_names(tmp_path)  # its watchdog too


def test_it_stops_a_few_seconds_after_the_last_process_using_it_exits(tmp_path):
    sock = tmp_path / "redis.sock"
    first, second = Holder(sock), Holder(sock)
    try:
        assert (first.started, second.started) == (True, False)
        first.exit()  # the one that started it goes; the other still uses it
        # Nothing to wait on for "did not stop": give the watchdog twice its grace to get it wrong.
        time.sleep(2 * embedded_redis.GRACE + embedded_redis.POLL)
        assert embedded_redis.answers(sock)
        second.exit()
        wait_until_no_process_names(tmp_path)
        assert not sock.exists()
    finally:
        first.kill()
        second.kill()


def test_a_sigkilled_owner_does_not_leave_it_running(tmp_path):
    sock = tmp_path / "redis.sock"
    owner = Holder(sock)
    assert owner.started and embedded_redis.answers(sock)
    owner.kill()
    wait_until_no_process_names(tmp_path)
    # The next user starts a fresh one over the stale files.
    again = Holder(sock)
    try:
        assert again.started and embedded_redis.answers(sock)
    finally:
        again.exit()
    wait_until_no_process_names(tmp_path)


def test_a_sigkilled_watchdog_takes_its_redis_server_with_it(tmp_path):
    sock = tmp_path / "redis.sock"
    owner = Holder(sock)
    try:
        watchdogs = [pid for pid, cmd in processes_naming(tmp_path) if "mailgate.embedded_redis watch" in cmd]
        assert len(watchdogs) == 1, processes_naming(tmp_path)
        os.kill(watchdogs[0], signal.SIGKILL)
        # The kernel's PDEATHSIG stopped redis-server, though its user still runs.
        wait_until_no_process_names(tmp_path, but=(owner.proc.pid,))
    finally:
        owner.exit()


@pytest.mark.slow
def test_one_shot_commands_against_a_fresh_data_dir_leave_no_redis_behind(tmp_path, dovecot, mail_user):
    """As the issue found it: `manage.py sync` and friends, each followed by a look at `ps`."""
    data_dir = tmp_path / "var"
    dovecot.append(mail_user.name, "INBOX", b"From: a@example.test\r\nSubject: hello\r\n\r\nbody\r\n")
    password_file = tmp_path / "password"
    password_file.write_text(mail_user.password)
    commands = [
        ["migrate", "--noinput"],
        ["bootstrap_admin"],
        ["add_account", "--owner", "admin", "--email", f"{mail_user.name}@example.test", "--host", "127.0.0.1",
         "--port", str(dovecot.port), "--security", "none", "--username", mail_user.name,
         "--password-file", str(password_file), "--disabled"],
        ["sync", "--all"],  # nothing enabled yet: a command that publishes nothing starts nothing
        ["shell", "-c", "from imap.models import Account; Account.objects.update(enabled=True)"],
        ["sync", "--all"],
        ["shell", "-c", "from mailgate.realtime import channel_layer; channel_layer()"],
    ]
    for args in commands:
        result = manage(data_dir, *args, MAILGATE_ADMIN_PASSWORD="admin-pw-123")
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        wait_until_no_process_names(data_dir)
    log = (data_dir / embedded_redis.LOG_FILE).read_text()
    assert log.count("ready to accept connections") >= 2, log  # the sync and the shell did start one
