"""Putting pipeline work on the Django Q queue: which stage, which rows. Imports no stage.

The stages (standardize.py, distribute.py, sending.py) queue a row's next stage with
enqueue_on_commit() inside the transaction that makes it ready (the task row commits with it), or
enqueue()/enqueue_many() after it; django-q then calls the thin entry points in
pipeline/tasks.py by their dotted names. Every task is idempotent (claims + unique constraints), so
the sweeper may enqueue a row again at any time.
"""

import dataclasses
import enum
import threading

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from pipeline.broker import BACKGROUND_RANK, channel, later_key, stage_key


class Stage(enum.StrEnum):
    """A pipeline stage, named as its entry point in pipeline/tasks.py; a task takes a batch of
    row ids (pipeline/tasks.py)."""

    STANDARDIZE = "standardize"  # a message's raw bytes → its standard fields (message ids)
    DISTRIBUTE = "distribute"  # a standardized message → one delivery per subscription (message ids)
    SEND = "send"  # one due delivery → the outgoing service (delivery ids)
    EMBED = "embed"  # standardized messages' vectors (message ids; pipeline/semantic/embed.py)

    @property
    def task_path(self) -> str:
        return f"pipeline.tasks.{self.value}"

    @property
    def rank(self) -> int:
        """Order within a lane (pipeline/broker.py): the stage nearest the sink goes first."""
        # Vectors last, as background work (broker.BACKGROUND_RANK): a message is found by its
        # words at once, by meaning when the lane has no pipeline work left.
        return {Stage.SEND: 1, Stage.DISTRIBUTE: 2, Stage.STANDARDIZE: 3, Stage.EMBED: BACKGROUND_RANK}[self]

    @property
    def batch(self) -> int:
        """Most rows one task takes (settings MAILGATE_STAGE_BATCH / MAILGATE_SEND_BATCH)."""
        size = settings.MAILGATE_SEND_BATCH if self is Stage.SEND else settings.MAILGATE_STAGE_BATCH
        return max(1, size)


class Lane(enum.StrEnum):
    """Which cluster runs a task (docs/pipeline.md "Lanes"). LIVE: mail that just arrived (an IDLE
    push, new UIDs above history, inbound webhooks) and its deliveries. BULK: what was there before
    (a first sync's history, imports, a history relay), which must never delay LIVE."""

    LIVE = "live"
    BULK = "bulk"

    @property
    def cluster(self) -> str:
        return Conf.PREFIX if self is Lane.LIVE else f"{Conf.PREFIX}-bulk"


def current_lane() -> Lane:
    """The lane of the cluster this process works for (LIVE outside a worker): a stage's next
    stage stays in the lane its first stage ran in."""
    return Lane.BULK if Conf.CLUSTER_NAME == Lane.BULK.cluster else Lane.LIVE


def lane_of(arrival: str, source: str) -> Lane:
    """The lane a message's work starts in: history (a first sync, kept but not relayed) and
    imports are bulk; everything else just arrived."""
    return Lane.BULK if arrival == "history" or source == "import" else Lane.LIVE


def in_lane(lane: Lane, via: str = "") -> Q:
    """lane_of as a query: the messages whose work belongs to `lane`. `via` is the lookup path
    from the queried model to its message ("message__"; "" to filter messages themselves)."""
    bulk = Q(**{f"{via}arrival": "history"}) | Q(**{f"{via}source": "import"})
    return bulk if lane is Lane.BULK else ~bulk


# django-q options per stage. save=False: no Success receipt for a stage that succeeded (failures
# are still kept). The Event rows are our record (save_limit prunes receipts anyway), and saving a
# receipt makes the cluster's monitor re-read every kept receipt inside a write transaction to
# prune them: ~10-15 ms of SQLite write lock per task.
TASK_OPTIONS = {"save": False}


class _PackageCollector:
    """Stands in for the broker inside django_q's async_task: keeps the signed package instead of
    pushing it, so each task is built and signed exactly as async_task builds it."""

    def __init__(self, list_key):
        self.list_key = list_key  # async_task logs it
        self.packages = []

    def enqueue(self, package):
        self.packages.append(package)
        return f"(bulk insert, #{len(self.packages)})"


def enqueue(stage: Stage | str, object_id, lane: Lane | None = None) -> None:
    """Put one stage of one row on the task queue (call after commit), in a task of its own."""
    enqueue_many(stage, [object_id], lane)


def enqueue_on_commit(stage: Stage | str, object_ids, lane: Lane | None = None) -> None:
    """enqueue_many so that the tasks exist exactly when the current transaction commits: nothing
    if it rolls back, no task before the rows it names are visible.

    With the ORM broker in the database being written, the queue rows are inserted right here,
    inside that transaction: they commit or roll back with the rows they name, so no enqueue can
    be lost between a commit and its callback, and a transaction that readies many rows (a
    backlog's 2,000 messages) costs no BEGIN/COMMIT per task (it cost 3.5 s after the commit,
    bench/pipeline.py --backlog). Otherwise (another broker, another database, no transaction,
    the sync mode that runs the task in process) after the commit, as Django's on_commit."""
    ids = list(object_ids)
    if not ids:
        return
    lane = Lane(lane) if lane else current_lane()
    if _queue_rows_commit_with_the_caller(lane):
        _enqueue_in_transaction(Stage(stage), [str(pk) for pk in ids], lane)
    else:
        transaction.on_commit(lambda: enqueue_many(stage, ids, lane))


def _orm_queue(lane: Lane) -> bool:
    """Whether `lane`'s tasks are rows of the ORM broker's table (not run in process, sync mode)."""
    return not Conf.SYNC and isinstance(get_broker(lane.cluster), ORM)


def _queue_rows_commit_with_the_caller(lane: Lane) -> bool:
    alias = Conf.ORM or "default"
    return transaction.get_connection(alias).in_atomic_block and _orm_queue(lane)


# The task each transaction queued last per queue key, while it has room for more rows: a backlog
# stored one message per call (ingest_raw) in one transaction fills tasks of Stage.batch rows,
# not one task each. 2,000 one-message tasks were each polled, locked, run and deleted, only for
# 1,960 of them to find their message already taken as another's batch companion: a tenth of the
# bulk lane's CPU in bench/pipeline.py --backlog. Per thread, as Django's connections are.
_open_tasks = threading.local()


@dataclasses.dataclass
class _OpenTask:
    transaction: tuple  # _transaction_token() when it was queued
    pk: int
    lock: object  # as written: the compare-and-set that keeps a pusher from taking a stale payload
    ids: list[str]


def _transaction_token(connection) -> tuple:
    """Names the caller's transaction: its outermost atomic block that is not a test's wrapper
    (a test runs inside a transaction of its own, and each of its "transactions" is a savepoint,
    whose id is then part of the token), so tests see exactly the tasks production queues."""
    blocks = connection.atomic_blocks
    for depth, block in enumerate(blocks):
        if not getattr(block, "_from_testcase", False):
            return id(block), connection.savepoint_ids[depth - 1] if depth else None
    return id(blocks[-1]), None


def _enqueue_in_transaction(stage: Stage, ids: list[str], lane: Lane) -> None:
    """enqueue_many inside the caller's transaction, the ids first filling the task this
    transaction queued last for the same stage and lane (one UPDATE of its payload instead of an
    INSERT). The UPDATE is a compare-and-set on the row's `lock` as written, and sets a new one:
    if the row is gone (its savepoint rolled back) or was taken or re-queued since, it matches
    nothing and the ids go in a row of their own; a pusher that read the row before the UPDATE
    finds its own compare-and-set on `lock` failing and reads it again (pipeline/broker.py)."""
    alias = Conf.ORM or "default"
    key = stage_key(lane.cluster, stage.rank, stage.value)
    token = _transaction_token(transaction.get_connection(alias))
    tasks = _open_tasks.__dict__.setdefault("by_key", {})
    task = tasks.get((alias, key))
    if task is not None and task.transaction == token and len(task.ids) + len(ids) <= stage.batch:
        joined, lock = task.ids + ids, timezone.now()
        [package] = _packages(stage, [joined], lane)
        if OrmQ.objects.using(alias).filter(pk=task.pk, key=key, lock=task.lock).update(payload=package, lock=lock):
            task.ids, task.lock = joined, lock
            return
    rows = _insert(stage, ids, lane)
    last = rows[-1]
    if len(last.ids) < stage.batch and last.pk is not None:  # pk: read back on SQLite ≥ 3.35, PostgreSQL
        tasks[(alias, key)] = _OpenTask(token, last.pk, last.lock, last.ids)
        # Nothing merges into a committed task; after a rollback the compare-and-set fails anyway.
        transaction.on_commit(lambda: tasks.pop((alias, key), None), using=alias)
    else:
        tasks.pop((alias, key), None)


def enqueue_many(stage: Stage | str, object_ids, lane: Lane | None = None) -> None:
    """Put one stage of several rows on the task queue (call after commit), in batches of
    `stage.batch` rows per task, in `lane` (default: the lane of the running worker).

    With the ORM broker all queue rows go in with one INSERT, instead of an INSERT, a signal and
    two close_old_connections() per task (which reopened SQLite each time with CONN_MAX_AGE=0).
    If this fails after the commit, the rows stay in their waiting state and the sweeper queues
    them again (one task per row, so a row that crashed its batch runs alone).
    """
    try:
        stage = Stage(stage)
    except ValueError:
        raise ValueError(f"unknown pipeline stage {stage!r}; known: {', '.join(Stage)}") from None
    ids = [str(object_id) for object_id in object_ids]
    if not ids:
        return
    lane = Lane(lane) if lane else current_lane()
    if not _orm_queue(lane):
        # Tests/dev without a cluster run each task in process; other brokers take one at a time.
        with transaction.atomic():
            for batch in _batches(stage, ids):
                async_task(stage.task_path, _argument(batch), task_name=_name(stage, batch),
                           cluster=lane.cluster, **TASK_OPTIONS)
        return
    _insert(stage, ids, lane)


def enqueue_at(stage: Stage | str, object_ids, at, lane: Lane | None = None) -> bool:
    """Queue one task for `object_ids` that no worker takes before `at` (a send waiting for its
    service's rate limit), in the current transaction: the ORM broker's `lock` is the time from
    which a row may be taken, so the row goes in with `at` as its lock, under its stage's LATER
    key (pipeline/broker.py). Returns False where there is no such queue (another broker, the
    sync mode): then nothing is queued and the sweeper must find the rows when they are due."""
    stage = Stage(stage)
    ids = [str(object_id) for object_id in object_ids]
    lane = Lane(lane) if lane else current_lane()
    if not ids or not _orm_queue(lane):
        return False
    _insert(stage, ids, lane, at=at)
    return True


def _batches(stage: Stage, ids: list[str]) -> list[list[str]]:
    return [ids[i:i + stage.batch] for i in range(0, len(ids), stage.batch)]


def _packages(stage: Stage, batches: list[list[str]], lane: Lane) -> list[str]:
    """The signed task of each batch, built exactly as async_task builds it."""
    collector = _PackageCollector(lane.cluster)  # the list_key of get_broker(lane.cluster)
    for batch in batches:
        async_task(stage.task_path, _argument(batch), task_name=_name(stage, batch),
                   broker=collector, **TASK_OPTIONS)
    return collector.packages


def _insert(stage: Stage, ids: list[str], lane: Lane, at=None) -> list[OrmQ]:
    """The ORM broker's queue rows for `ids`, in tasks of stage.batch, with one INSERT; each row
    gets `.ids`, the ids of its task. `at`: not to be taken before then (enqueue_at)."""
    batches = _batches(stage, ids)
    lock = at or timezone.now()  # the ORM broker hands a row out once its lock has passed
    key = (later_key if at else stage_key)(lane.cluster, stage.rank, stage.value)
    rows = [OrmQ(key=key, payload=package, lock=lock)
            for package in _packages(stage, batches, lane)]
    connection = connections[Conf.ORM or "default"]
    if connection.vendor == "postgresql":
        # The rows and the NOTIFY that wakes the lane's pushers at the commit (pipeline/broker.py),
        # in one statement: a NOTIFY of its own was one more statement a message for a webhook.
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_AND_NOTIFY.format(table=connection.ops.quote_name(OrmQ._meta.db_table)),
                           [channel(lane.cluster), [key] * len(rows), [r.payload for r in rows], [lock] * len(rows)])
            for row, (pk,) in zip(rows, cursor.fetchall()):
                row.pk = pk
    else:
        OrmQ.objects.using(connection.alias).bulk_create(rows)
    for row, batch in zip(rows, batches):
        row.ids = batch
    return rows


# The CTE is joined to the rows so that it runs (PostgreSQL skips an unreferenced SELECT CTE); the
# rows go in, and their ids come back, in the given order (as bulk_create's UNNEST relies on).
_INSERT_AND_NOTIFY = (
    "WITH woken AS (SELECT pg_notify(%s, '')) "
    'INSERT INTO {table} ("key", "payload", "lock") '
    "SELECT r.key, r.payload, r.lock FROM woken, "
    "UNNEST(%s::varchar[], %s::text[], %s::timestamptz[]) WITH ORDINALITY AS r (key, payload, lock, n) "
    "ORDER BY r.n RETURNING id")


def _argument(batch: list[str]):
    # One id stays a plain string: the task signature (and queued rows) of a single row unchanged.
    return batch[0] if len(batch) == 1 else batch


def _name(stage: Stage, batch: list[str]) -> str:
    more = f"+{len(batch) - 1}" if len(batch) > 1 else ""
    return f"{stage}:{batch[0]}{more}"[:100]
