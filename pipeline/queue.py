"""Putting pipeline work on the Django Q queue: which stage, which rows. Imports no stage.

The stages (standardize.py, distribute.py, sending.py) call enqueue()/enqueue_many() after the
transaction that made a row ready commits; django-q then calls the thin entry points in
pipeline/tasks.py by their dotted names. Every task is idempotent (claims + unique constraints), so
the sweeper may enqueue a row again at any time.
"""

import enum

from django.db import transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task


class Stage(enum.StrEnum):
    """A pipeline stage that runs as one task per row, named as its entry point in pipeline/tasks.py."""

    STANDARDIZE = "standardize"  # a message's raw bytes → its standard fields (message id)
    DISTRIBUTE = "distribute"  # a standardized message → one delivery per subscription (message id)
    SEND = "send"  # one due delivery → the outgoing service (delivery id)
    EMBED = "embed"  # a standardized message's vectors, in batches (message id; pipeline/semantic/embed.py)

    @property
    def task_path(self) -> str:
        return f"pipeline.tasks.{self.value}"


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


def enqueue(stage: Stage | str, object_id) -> None:
    """Put one stage of one row on the task queue (call after commit)."""
    enqueue_many(stage, [object_id])


def enqueue_on_commit(stage: Stage | str, object_ids) -> None:
    """enqueue_many once the current transaction commits (nothing if it rolls back)."""
    ids = list(object_ids)
    if ids:
        transaction.on_commit(lambda: enqueue_many(stage, ids))


def enqueue_many(stage: Stage | str, object_ids) -> None:
    """Put one stage of several rows on the task queue (call after commit).

    With the ORM broker all queue rows go in with one INSERT, instead of an INSERT, a signal and
    two close_old_connections() per task (which reopened SQLite each time with CONN_MAX_AGE=0).
    If this fails after the commit, the rows stay in their waiting state and the sweeper queues
    them again.
    """
    try:
        stage = Stage(stage)
    except ValueError:
        raise ValueError(f"unknown pipeline stage {stage!r}; known: {', '.join(Stage)}") from None
    ids = [str(object_id) for object_id in object_ids]
    if not ids:
        return
    broker = get_broker()
    if Conf.SYNC or not isinstance(broker, ORM):
        # Tests/dev without a cluster run each task in process; other brokers take one at a time.
        with transaction.atomic():
            for object_id in ids:
                async_task(stage.task_path, object_id, task_name=f"{stage}:{object_id}"[:100], **TASK_OPTIONS)
        return
    collector = _PackageCollector(broker.list_key)
    for object_id in ids:
        async_task(stage.task_path, object_id, task_name=f"{stage}:{object_id}"[:100],
                   broker=collector, **TASK_OPTIONS)
    now = timezone.now()
    key = broker.list_key or Conf.CLUSTER_NAME
    OrmQ.objects.using(Conf.ORM or "default").bulk_create(
        [OrmQ(key=key, payload=package, lock=now) for package in collector.packages])
