"""The SQLite write gate (mailgate/db_sqlite3/base.py): the bulk lane's writers let live mail's
writers go first, and a live writer starts the moment the bulk transaction under way ends.

Real flocks on real files, real Django connections and a real `manage.py` process of the bulk
lane; the negative checks ("still waiting") give the other side a fair chance to run first."""

import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from mailgate.db_sqlite3.base import WriteGate
from mailgate.db_sqlite3.priority import live_writes
from tests.builders import ROOT, fresh_env

STILL_WAITING = 0.3  # seconds a blocked side is given to (wrongly) get through


def in_thread(action) -> threading.Event:
    done = threading.Event()

    def run():
        action()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


@pytest.fixture
def database(tmp_path) -> str:
    return str(tmp_path / "mailgate.sqlite3")


def test_a_bulk_write_waits_while_another_writer_writes_or_waits(database):
    live = WriteGate(database, role="live", yield_max=30)
    bulk = WriteGate(database, role="bulk", yield_max=30)
    live.enter()
    bulk_in = in_thread(bulk.enter)
    assert not bulk_in.wait(STILL_WAITING)
    live.exit()
    assert bulk_in.wait(10)


def test_a_live_write_waits_for_the_bulk_transaction_under_way_and_the_next_bulk_write_waits_for_it(database):
    bulk, other_bulk = (WriteGate(database, role="bulk", yield_max=30) for _ in range(2))
    live = WriteGate(database, role="live", yield_max=30)
    bulk.enter()
    live_in = in_thread(live.enter)
    assert not live_in.wait(STILL_WAITING)  # one bulk transaction at a time, live or not
    other_in = in_thread(other_bulk.enter)
    bulk.exit()
    assert live_in.wait(10)
    assert not other_in.wait(STILL_WAITING)  # the live writer goes before the next bulk write
    live.exit()
    assert other_in.wait(10)
    other_bulk.exit()


def test_a_stream_of_live_writes_delays_a_bulk_write_by_the_yield_limit_at_most(database):
    live = WriteGate(database, role="live", yield_max=30)
    bulk = WriteGate(database, role="bulk", yield_max=0.2)
    live.enter()
    started = time.monotonic()
    bulk.enter()  # returns with the live writer still holding its lock
    assert 0.2 <= time.monotonic() - started < 5
    bulk.exit()
    live.exit()


def test_live_writers_do_not_wait_for_each_other_at_the_gate(database):
    first, second = (WriteGate(database, role="live", yield_max=30) for _ in range(2))
    first.enter()
    assert in_thread(second.enter).wait(10)  # SQLite's own lock orders them, as before
    first.exit()
    second.exit()


def test_a_forked_child_does_not_keep_its_parents_lock_alive(database):
    gate = WriteGate(database, role="live", yield_max=30)
    gate.enter()  # the parent holds the live lock, then forks (django-q forks its workers)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            gate.enter()  # the child's first write opens files of its own
            gate.exit()
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)
        for fd in gate.files:  # the parent dies without unlocking
            os.close(fd)
        gate.files, gate.held = None, None
        bulk = WriteGate(database, role="bulk", yield_max=30)
        # Had the child kept its copies of the parent's files, the lock would outlive the parent.
        assert in_thread(bulk.enter).wait(10)
        bulk.exit()
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)


def test_an_unwritable_data_dir_turns_the_gate_off_instead_of_failing_writes(tmp_path):
    gate = WriteGate(str(tmp_path / "missing" / "mailgate.sqlite3"), role="live", yield_max=30)
    gate.enter()
    assert gate.held is None
    gate.exit()


@pytest.fixture
def live_worker_connection(settings):
    """This process's database connection as a live-lane worker's (a role is read on connecting)."""
    if connection.vendor != "sqlite":
        pytest.skip("the gate is SQLite's: PostgreSQL has no single write lock")
    settings.MAILGATE_SQLITE_WRITER = "live"
    connection.close()
    yield connection
    settings.MAILGATE_SQLITE_WRITER = ""
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_writer_outside_the_lanes_does_not_hold_the_bulk_lane_back():
    # The web's or an IDLE manager's writes (heartbeats of a thousand accounts) must not stall a
    # first sync: they have no part in the gate.
    if connection.vendor != "sqlite":
        pytest.skip("the gate is SQLite's: PostgreSQL has no single write lock")
    connection.close()
    bulk = WriteGate(str(connection.settings_dict["NAME"]), role="bulk", yield_max=30)
    with transaction.atomic():
        connection.cursor().execute("SELECT 1")
        assert connection.gate.held is None
        assert in_thread(bulk.enter).wait(10)
    bulk.exit()
    # Its writes for a push go first, as a live worker's (imap.queue.enqueue_folder_sync).
    with live_writes(), transaction.atomic():
        connection.cursor().execute("SELECT 1")
        bulk_in = in_thread(bulk.enter)
        assert not bulk_in.wait(STILL_WAITING)
    assert bulk_in.wait(10)
    bulk.exit()


@pytest.mark.django_db(transaction=True)
def test_a_live_workers_transaction_holds_the_live_lock_from_begin_to_commit(live_worker_connection):
    bulk = WriteGate(str(connection.settings_dict["NAME"]), role="bulk", yield_max=30)
    with transaction.atomic():
        connection.cursor().execute("SELECT 1")
        bulk_in = in_thread(bulk.enter)
        assert not bulk_in.wait(STILL_WAITING)
    assert bulk_in.wait(10)
    bulk.exit()
    assert connection.gate.held is None


def test_the_bulk_lanes_process_yields_its_writes_to_a_live_writer(tmp_path):
    """A `manage.py` process of the bulk lane (a bare qcluster's Q_CLUSTER_NAME), its own SQLite file."""
    data = tmp_path / "data"
    script = ("from django.conf import settings\n"
              "from django.db import connection, transaction\n"
              "print('role', settings.MAILGATE_SQLITE_WRITER, flush=True)\n"
              "with transaction.atomic():\n"
              "    connection.cursor().execute('CREATE TABLE t (x)')\n"
              "print('wrote', flush=True)\n")
    env = fresh_env(data, Q_CLUSTER_NAME="mailgate-bulk", MAILGATE_SQLITE_YIELD_MAX="60")
    data.mkdir()
    live = WriteGate(str(data / "mailgate.sqlite3"), role="live", yield_max=30)
    live.enter()
    child = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        while line and not line.startswith("role"):  # after shell's "N objects imported"
            line = child.stdout.readline()
        assert line.split() == ["role", "bulk"]
        assert not select.select([child.stdout], [], [], STILL_WAITING * 3)[0]
        live.exit()
        assert child.stdout.readline().strip() == "wrote"
        assert child.wait(60) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert Path(data / "mailgate.sqlite3").exists()


def test_an_unknown_writer_role_stops_start_up_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env=fresh_env(tmp_path / "data", MAILGATE_SQLITE_WRITER="fast"), timeout=60)
    assert result.returncode != 0
    assert "MAILGATE_SQLITE_WRITER='fast' is not one of '', 'live', 'bulk'" in result.stderr
    assert "Traceback" not in result.stderr
