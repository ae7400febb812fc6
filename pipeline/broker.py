"""django-q2's ORM broker, taking a lane's queued tasks downstream stage first.

The stock ORM broker hands out a queue's rows in table order, so a backlog ran stage by stage:
2,000 standardize tasks all before the first distribute, and the first webhook left only when
the last message was parsed (issue #19). pipeline/queue.py files each stage's tasks under a
sub-key of the lane's queue, `<cluster>|<rank><stage>`; this broker takes the lowest key first,
then the oldest row:

  1. `<cluster>`  everything queued through async_task: folder syncs (an IDLE push), the sweeper,
     schedules. Few, short, and a push waits on them.
  2. send, 3. distribute, 4. standardize  (pipeline.queue.Stage.rank).
  5. background stages (rank BACKGROUND_RANK and up: a message's vectors): only while the lane
     has no pipeline task at all, neither waiting nor taken by a worker.

A task queued to run later (a send held back by its service's rate limit, pipeline.queue.enqueue_at)
is a row whose lock is its time, keyed after its stage's ready tasks (`-later`): handed out
once due, and not holding back background work while it waits.

So a worker finishes what is in flight before it starts more: a sent webhook is never behind
parsing the rest of the backlog. Claims, leases and acknowledgement are the stock broker's.
Background work waits for the whole pipeline, not just for its waiting tasks: in a backlog, a
worker that found no standardize task left took a batch of 512 messages' vectors while the other
worker's last batches still had to be distributed and sent, and embedding took 2-3 s of the
backlog's 13-15 s at the sink (bench/pipeline.py --backlog on PostgreSQL, with and without it).

On PostgreSQL a pusher that finds its queue empty does not poll it again every Conf.POLL: it
LISTENs on its cluster's channel and sleeps until a transaction that queued a task for the
cluster commits (`notify`, called by whatever inserts queue rows), or NOTIFY_WAIT passes (a task
whose lease expired is ready again without any notification). An idle live lane polled ~100 times
a second, each poll a query: in a bench/pipeline.py backlog on PostgreSQL, 1,100 of the server's
statements went to polling a queue that held nothing. SQLite has no notifications and keeps polling.
"""

import contextlib
import hashlib
import logging
from time import monotonic, sleep

from django import db
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

log = logging.getLogger(__name__)

SEPARATOR = "|"
_KEY, _LOCK = '"key"', '"lock"'  # OrmQ's columns, quoted alike on SQLite and PostgreSQL


def stage_key(cluster: str, rank: int, stage: str) -> str:
    """The queue key of one stage in one lane; sorts after the lane's own key, by rank."""
    return f"{cluster}{SEPARATOR}{rank}{stage}"[:100]


# Stages of this rank and up run only when their lane has no pipeline task (pipeline.queue.Stage.rank).
BACKGROUND_RANK = 4
# A task queued to run later (pipeline.queue.enqueue_at: a send that waits for its service's rate
# limit) is a row whose `lock` is that time, under its stage's key with this suffix: it sorts just
# after its stage's ready tasks, and while it waits it does not hold back background work.
LATER = "-later"


def later_key(cluster: str, rank: int, stage: str) -> str:
    return stage_key(cluster, rank, stage + LATER)

# The longest an idle pusher sleeps between looks at its queue on PostgreSQL.
NOTIFY_WAIT = 1.0
# How often a broker closes its stale connections (one past CONN_MAX_AGE, one with errors), which
# the stock broker does before every query: with CONN_HEALTH_CHECKS each then costs a `SELECT 1`.
STALE_CHECK_EVERY = 1.0


def channel(cluster: str) -> str:
    """The LISTEN/NOTIFY channel of one cluster's queue (a lane, every key it serves)."""
    return "mailgate_queue_" + hashlib.sha256(cluster.encode()).hexdigest()[:20]


def notify(cluster: str, using: str | None = None) -> None:
    """Wake the pushers of `cluster` (PostgreSQL: at the commit of the current transaction, so a
    pusher never looks before the rows are there; at once outside one)."""
    connection = connections[using or Conf.ORM or "default"]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {channel(cluster)}")


class StageOrderedORM(ORM):
    _stale_checked = float("-inf")
    _listening = None  # the raw connection this broker LISTENs on

    def get_connection(self, list_key: str = None):
        # As the stock broker, at most every STALE_CHECK_EVERY: a pusher asks on every poll and
        # the monitor on every acknowledgement. A query that fails on a connection the server
        # dropped marks it, and the next check replaces it.
        if monotonic() - self._stale_checked >= STALE_CHECK_EVERY and transaction.get_autocommit(using=Conf.ORM):
            db.close_old_connections()
            self._stale_checked = monotonic()
        return OrmQ.objects.using(Conf.ORM)

    def delete(self, task_id):
        # One autocommitted statement. QuerySet.delete() runs Django's deletion collector inside a
        # transaction (BEGIN, DELETE, COMMIT) for a table nothing references: most of the monitor's
        # CPU, which acknowledges every task (py-spy on a PostgreSQL backlog).
        connection, table = self._table()
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [task_id])

    def enqueue(self, task):
        pk = super().enqueue(task)
        notify(self._keys()[0])
        return pk

    def _keys(self) -> tuple[str, str, str]:
        """This queue's own key, and the bounds its stages' keys lie strictly between: a range,
        not LIKE 'key|%' (case-insensitive on SQLite, so no index): every key that starts with
        "<key>|" sorts between "<key>|" and "<key>}" ('}' follows '|' in ASCII)."""
        key = self.list_key or Conf.CLUSTER_NAME
        return key, f"{key}{SEPARATOR}", f"{key}{chr(ord(SEPARATOR) + 1)}"

    def _mine(self):
        key, low, high = self._keys()
        return self.get_connection().filter(Q(key=key) | Q(key__gt=low, key__lt=high))

    def queue_size(self) -> int:
        return self._mine().filter(lock__lte=timezone.now()).count()

    def lock_size(self) -> int:
        return self._mine().filter(lock__gt=timezone.now()).count()

    def purge_queue(self):
        return self._mine().delete()

    def dequeue(self):
        # As ORM.dequeue, ordered; the conditional UPDATE on `lock` still decides between clusters.
        # Both as prepared SQL: a live lane's pusher asks ~100 times a second, mostly of an empty
        # queue, and the ORM's building of this query cost 0.7 ms of CPU each time (7 % of a core
        # on an idle install).
        connection, table = self._table()
        try:
            listening = self._listen(connection)  # before the look: a commit after it wakes us
            rows = self._ready(connection, table)
            if not rows:
                if listening:
                    self._wait(connection)
                else:
                    sleep(Conf.POLL)  # empty queue: spare the CPU, as the stock broker does
                return None
        except Exception:
            # The database went away (a restart, a dropped connection): the stock broker's
            # check before every poll would have replaced the connection; ours is replaced here,
            # and the pusher carries on instead of dying and pausing its lane for 10 s.
            if connection.is_usable():
                raise
            log.warning("queue %s: database connection lost; reconnecting", self._keys()[0])
            with contextlib.suppress(Exception):
                connection.close()
            sleep(Conf.POLL)
            return None
        new_lock = connection.ops.adapt_datetimefield_value(self.timeout(None))
        taken = []
        with connection.cursor() as cursor:
            for pk, payload, lock in rows:
                # `lock` exactly as read (a string on SQLite): the compare-and-set between pushers.
                cursor.execute(f"UPDATE {table} SET {_LOCK} = %s WHERE id = %s AND {_LOCK} = %s", [new_lock, pk, lock])
                if cursor.rowcount:
                    taken.append((pk, payload))
        return taken

    def _listen(self, connection) -> bool:
        """LISTEN on this queue's channel, once per database connection (one that Django replaced
        for its age or an error has lost it); False where there is nothing to listen to."""
        if connection.vendor != "postgresql" or not connection.get_autocommit():
            return False  # inside a transaction (a test's) a LISTEN counts only at its commit
        connection.ensure_connection()
        if self._listening is not connection.connection:
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {channel(self._keys()[0])}")
            self._listening = connection.connection
        return True

    def _wait(self, connection) -> None:
        """Until a notification (one that came meanwhile counts at once) or NOTIFY_WAIT."""
        for _ in connection.connection.notifies(timeout=NOTIFY_WAIT, stop_after=1):
            pass

    def _table(self):
        queryset = self.get_connection()  # also closes a stale connection first, as the stock broker
        connection = connections[queryset.db]
        return connection, connection.ops.quote_name(OrmQ._meta.db_table)

    def _ready(self, connection, table: str) -> list:
        """Up to Conf.BULK of this queue's unlocked rows, (id, payload, lock as stored), by key then
        id; background rows only while no pipeline row (waiting or taken) sorts before them, but
        for tasks queued to run later (LATER) that are not due or are running."""
        key, low, high = self._keys()
        background = f"{low}{BACKGROUND_RANK}"
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, payload, {_LOCK} FROM {table} WHERE ({_KEY} = %s OR ({_KEY} > %s AND {_KEY} < %s)) "
                f"AND {_LOCK} < %s AND ({_KEY} < %s OR NOT EXISTS "
                f"(SELECT 1 FROM {table} WHERE {_KEY} > %s AND {_KEY} < %s "
                f"AND ({_LOCK} < %s OR {_KEY} NOT LIKE %s))) ORDER BY {_KEY}, id LIMIT %s",
                [key, low, high, now, background, low, background, now, f"%{LATER}", Conf.BULK])
            return cursor.fetchall()
