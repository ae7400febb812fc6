"""django-q2's ORM broker, taking a lane's queued tasks downstream stage first.

The stock ORM broker hands out a queue's rows in table order, so a backlog ran stage by stage:
2,000 standardize tasks all before the first distribute, and the first webhook left only when
the last message was parsed (issue #19). pipeline/queue.py files each stage's tasks under a
sub-key of the lane's queue, `<cluster>|<rank><stage>`; this broker takes the lowest key first,
then the oldest row:

  1. `<cluster>`  everything queued through async_task: folder syncs (an IDLE push), the sweeper,
     schedules. Few, short, and a push waits on them.
  2. send, 3. distribute, 4. standardize  (pipeline.queue.Stage.rank).

So a worker finishes what is in flight before it starts more: a sent webhook is never behind
parsing the rest of the backlog. Claims, leases and acknowledgement are the stock broker's.
"""

from time import sleep

from django.db import connections
from django.db.models import Q
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

SEPARATOR = "|"
_KEY, _LOCK = '"key"', '"lock"'  # OrmQ's columns, quoted alike on SQLite and PostgreSQL


def stage_key(cluster: str, rank: int, stage: str) -> str:
    """The queue key of one stage in one lane; sorts after the lane's own key, by rank."""
    return f"{cluster}{SEPARATOR}{rank}{stage}"[:100]


class StageOrderedORM(ORM):
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
        rows = self._ready(connection, table)
        if not rows:
            sleep(Conf.POLL)  # empty queue: spare the CPU, as the stock broker does
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

    def _table(self):
        queryset = self.get_connection()  # also closes a stale connection first, as the stock broker
        connection = connections[queryset.db]
        return connection, connection.ops.quote_name(OrmQ._meta.db_table)

    def _ready(self, connection, table: str) -> list:
        """Up to Conf.BULK of this queue's unlocked rows, (id, payload, lock as stored), by key then id."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, payload, {_LOCK} FROM {table} WHERE ({_KEY} = %s OR ({_KEY} > %s AND {_KEY} < %s)) "
                f"AND {_LOCK} < %s ORDER BY {_KEY}, id LIMIT %s",
                [*self._keys(), connection.ops.adapt_datetimefield_value(timezone.now()), Conf.BULK])
            return cursor.fetchall()
