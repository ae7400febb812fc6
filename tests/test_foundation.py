"""The project as a whole: migrations match the models, the admin bootstrap, and README's run
command bringing up web, worker and IDLE manager with /healthz all green (the embedded Redis has
tests/test_embedded_redis.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from mailgate import embedded_redis
from tests.builders import fresh_env, manage
from tests.servers.leftovers import processes_naming
from tests.servers.ports import free_port
from tests.servers.procs import ROOT
from tests.servers.waiting import eventually

def test_the_migrations_match_the_models(tmp_path):
    result = manage(tmp_path, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, f"models changed without a migration:\n{result.stdout}{result.stderr}"


def test_migrate_builds_a_fresh_database_and_bootstrap_admin_prints_the_password_once(tmp_path):
    migrated = manage(tmp_path, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    first = manage(tmp_path, "bootstrap_admin")
    assert first.returncode == 0, first.stderr
    assert "created admin user 'admin' with password " in first.stdout
    password = first.stdout.split("with password ", 1)[1].split()[0]
    check = manage(tmp_path, "shell", "-c",
                   f"from django.contrib.auth import authenticate; print(bool(authenticate(username='admin', "
                   f"password={password!r})))")
    assert check.stdout.strip().endswith("True"), check.stderr
    again = manage(tmp_path, "bootstrap_admin")
    assert again.stdout.strip() == "admin user exists" and password not in again.stdout


def test_bootstrap_admin_takes_the_password_from_the_environment(tmp_path):
    assert manage(tmp_path, "migrate", "--noinput").returncode == 0
    result = manage(tmp_path, "bootstrap_admin", MAILGATE_ADMIN_PASSWORD="from-the-env-123")
    assert "with the password from MAILGATE_ADMIN_PASSWORD" in result.stdout
    assert "from-the-env-123" not in result.stdout + result.stderr


def get_json(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_run_command_serves_a_green_healthz_and_ctrl_c_stops_everything(tmp_path):
    """README's first command, as a person runs it: ./scripts/run, wait for /healthz, then Ctrl-C."""
    data_dir, port = tmp_path / "var", free_port()
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/run"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=fresh_env(data_dir, PORT=str(port), MAILGATE_ADMIN_PASSWORD="smoke-test-pw"),
            start_new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
        )
    sock = data_dir / "redis.sock"
    try:
        deadline = time.monotonic() + 120
        status, body = None, {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = get_json(f"http://127.0.0.1:{port}/healthz")
                if status == 200:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        output = log_path.read_text(errors="replace")
        assert status == 200, f"/healthz: {status} {body}\n--- scripts/run output ---\n{output[-6000:]}"
        assert all(body[part]["ok"] for part in ("database", "queue", "channel_layer", "idle_manager"))
        assert body["channel_layer"]["backend"] == "RedisChannelLayer"  # the embedded Redis, across processes
        assert body["channel_layer"]["redis"]["kind"] == "embedded"
        assert embedded_redis.answers(sock)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5) as response:
            assert response.status == 200 and b"mailgate administration" in response.read()
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            pytest.fail("scripts/run did not stop within 30 s of Ctrl-C")
        output = log_path.read_text(errors="replace")
    assert "SIGKILL" not in output, output[-4000:]  # every process stopped on honcho's SIGTERM
    # The embedded Redis goes on its own a few seconds after the last process using it.
    eventually(lambda: not processes_naming(data_dir), timeout=embedded_redis.GRACE + 5,
               what=f"the embedded Redis gone: {processes_naming(data_dir)}")
    assert not embedded_redis.answers(sock)
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid), "a process of scripts/run outlived Ctrl-C"


def test_installing_dovecot_left_no_system_server_on_the_imap_ports(dovecot):
    """scripts/system-packages installs dovecot-imapd with service starts refused: the only
    Dovecot on this machine is the tests' private one, on its own high ports."""
    import socket

    for port in (143, 993):
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"something listens on port {port}"
    assert dovecot.port > 1024 and dovecot.tls_port > 1024
