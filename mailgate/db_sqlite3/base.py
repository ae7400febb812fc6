"""Django's SQLite backend, plus a write gate: the bulk lane yields SQLite's one write lock.

SQLite lets one connection write at a time, and a writer that finds the lock taken does not queue:
its busy handler sleeps and tries again (1, 2, 5 ... then every 100 ms). While a first sync of
20,000 messages ran, the bulk lane's two workers and its sync took turns holding the lock and
took it back the moment they committed, so a pushed message's few short writes lost that race
again and again: APPEND -> webhook p99 was 2-4 s above Dovecot's push on SQLite, 0.5 s on
PostgreSQL in the same bench (bench/idle_latency.py --under-load).

So the pipeline's workers also queue on two flocks beside the database, where the kernel wakes
a waiter the moment a lock is free. Each process has a role (MAILGATE_SQLITE_WRITER, set by
`manage.py worker` for its two clusters):
- `live` (the live lane's workers) holds `<database>.writers` shared from BEGIN to COMMIT (or
  around one autocommit write), and before BEGIN waits for `<database>.bulk` (shared, then lets
  go): it starts the moment the bulk transaction under way ends, not on a busy handler's retry.
- `bulk` (the bulk lane's workers) waits before each write until it could take `.writers`
  exclusively, that is until no live worker writes or waits to, for MAILGATE_SQLITE_YIELD_MAX
  seconds at most (a flood of live mail slows a backfill, never stops it); then it holds `.bulk`
  exclusively for its transaction, so the lane's own writers queue there too.
- anyone else (web, IDLE managers, commands): no gate, SQLite's busy handler as before. The IDLE
  managers' heartbeats of a thousand accounts must not hold a first sync back; their writes for
  a push run inside priority.live_writes(), as a live worker's.
Nothing waits in a cycle: whoever waits for a lock holds SQLite's lock no longer (a live writer
holds only the shared first lock, which no bulk writer in a transaction waits for). The gate only
orders writers; SQLite's own lock still decides, so a writer outside it is safe.
"""

import fcntl
import logging
import os
import time

from django.conf import settings
from django.db.backends.sqlite3 import base

from mailgate.db_sqlite3.priority import in_live_writes

log = logging.getLogger(__name__)

# Autocommit statements that take the write lock on their own (outside BEGIN ... COMMIT).
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")
YIELD_POLL = 0.002  # seconds between a yielding process's tries


class WriteGate:
    """One connection's end of the gate. The files are opened lazily and again after a fork: a
    forked child must not share its parent's locks (an flock belongs to the open file, which fork
    shares)."""

    def __init__(self, database_path: str, role: str, yield_max: float):
        self.paths = (f"{database_path}.writers", f"{database_path}.bulk")
        self.role = role  # "live", "bulk", or "" (live inside priority.live_writes(), else no gate)
        self.yield_max = yield_max
        self.files = None
        self.pid = None
        self.held = None  # the file whose lock this connection holds until the write ends

    def _files(self) -> tuple[int, int] | None:
        if self.files is None or self.pid != os.getpid():
            if self.files and self.pid != os.getpid():
                # This process's copies of its parent's files: kept open, they would keep a lock
                # the parent held alive after the parent died (an flock lasts while any copy is open).
                for fd in self.files:
                    os.close(fd)
            self.pid, self.held = os.getpid(), None
            try:
                self.files = tuple(os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in self.paths)
            except OSError as exc:  # a read-only data dir: writes go on in SQLite's own order
                log.warning("SQLite write gate off: cannot open %s: %s", self.paths[0], exc)
                self.files = ()
        return self.files or None

    def enter(self) -> None:
        """Before a write (BEGIN, or an autocommit write)."""
        role = self.role or ("live" if in_live_writes() else "")
        if not role:
            return
        files = self._files()  # first: after a fork, the parent's `held` is not this process's
        if files is None or self.held is not None:
            return
        writers, bulk = files
        if role == "bulk":
            self._yield(writers)
            fcntl.flock(bulk, fcntl.LOCK_EX)  # the bulk lane's writers queue here, not on busy retries
            self.held = bulk
        else:
            fcntl.flock(writers, fcntl.LOCK_SH)  # blocks only for the instant a bulk writer tests it
            self.held = writers
            fcntl.flock(bulk, fcntl.LOCK_SH)  # until the bulk transaction under way ends
            fcntl.flock(bulk, fcntl.LOCK_UN)

    def _yield(self, writers: int) -> None:
        deadline = time.monotonic() + self.yield_max
        while True:
            try:
                fcntl.flock(writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(YIELD_POLL)
            else:
                fcntl.flock(writers, fcntl.LOCK_UN)
                return

    def exit(self) -> None:
        if self.held is not None and self.pid == os.getpid():
            fcntl.flock(self.held, fcntl.LOCK_UN)
        self.held = None

    def close(self) -> None:
        if self.files and self.pid == os.getpid():
            for fd in self.files:
                os.close(fd)  # releases a lock still held
        self.files, self.held = None, None


class GatedCursor(base.SQLiteCursorWrapper):
    """Takes the gate around a write that runs outside a transaction (a lone conditional UPDATE)."""

    gate: WriteGate | None = None

    def execute(self, query, params=None):
        return self._gated(super().execute, query, params)

    def executemany(self, query, param_list):
        return self._gated(super().executemany, query, param_list)

    def _gated(self, run, query, params):
        if self.gate is None or self.connection.in_transaction or not query.lstrip()[:6].upper().startswith(WRITES):
            return run(query, params)
        self.gate.enter()
        try:
            return run(query, params)
        finally:
            if not self.connection.in_transaction:
                self.gate.exit()


class DatabaseWrapper(base.DatabaseWrapper):
    gate: WriteGate | None = None  # this connection's (None: in-memory, or not connected yet)

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        self.close_gate()
        if not self.is_in_memory_db():
            self.gate = WriteGate(str(self.settings_dict["NAME"]), settings.MAILGATE_SQLITE_WRITER,
                                  settings.MAILGATE_SQLITE_YIELD_MAX)
        return connection

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=GatedCursor)
        cursor.gate = self.gate
        return cursor

    def _start_transaction_under_autocommit(self):
        if self.gate is not None:
            self.gate.enter()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._leave_gate()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._leave_gate()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._leave_gate()

    def _close(self):
        try:
            return super()._close()
        finally:
            self.close_gate()

    def _leave_gate(self):
        if self.gate is not None:
            self.gate.exit()

    def close_gate(self):
        if self.gate is not None:
            self.gate.close()
        self.gate = None
