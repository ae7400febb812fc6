"""Marking one piece of work as live mail's, for the SQLite write gate (base.py).

A process's role in the gate is fixed (MAILGATE_SQLITE_WRITER), but an IDLE manager does both
kinds of writes: heartbeats for every account, which must not hold a first sync back, and the
one UPDATE + enqueue of a push, the first step of live mail's path (under a backfill its p95 went
from 36 to 836 ms when it queued behind the bulk lane like the heartbeats). Writes inside
live_writes() go through the gate as a live worker's; elsewhere, and on PostgreSQL, it does nothing.
"""

import threading
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def live_writes():
    before = getattr(_local, "live", False)
    _local.live = True
    try:
        yield
    finally:
        _local.live = before


def in_live_writes() -> bool:
    return getattr(_local, "live", False)
