"""Pipeline stages as Django Q tasks: thin entry points over the stage modules.

ingest (pipeline/ingest.py) → standardize → distribute (+ queue) → send, each enqueued after the
transaction that made its row ready commits. Every task is idempotent (claims + unique
constraints), so the sweeper may enqueue a row again at any time.
"""

from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

STAGES = ("standardize", "distribute", "send")

# django-q options per stage. save=False: no Success receipt for a stage that succeeded (failures
# are still kept). The Event rows are our record (save_limit prunes receipts anyway), and saving a
# receipt makes the cluster's monitor re-read every kept receipt inside a write transaction to
# prune them: ~10-15 ms of SQLite write lock per task.
STAGE_OPTIONS = {stage: {"save": False} for stage in STAGES}


class _PackageCollector:
    """Stands in for the broker inside django_q's async_task: keeps the signed package instead of
    pushing it, so each task is built and signed exactly as async_task builds it."""

    def __init__(self, list_key):
        self.list_key = list_key  # async_task logs it
        self.packages = []

    def enqueue(self, package):
        self.packages.append(package)
        return f"(bulk insert, #{len(self.packages)})"


def enqueue(stage: str, object_id) -> None:
    """Put one stage of one row on the task queue (call after commit; see ingest.enqueue_standardize)."""
    enqueue_many(stage, [object_id])


def enqueue_many(stage: str, object_ids) -> None:
    """Put one stage of several rows on the task queue (call after commit).

    With the ORM broker all queue rows go in with one INSERT, instead of an INSERT, a signal and
    two close_old_connections() per task (which reopened SQLite each time with CONN_MAX_AGE=0).
    If this fails after the commit, the rows stay in their waiting state and the sweeper queues
    them again.
    """
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.conf import Conf
    from django_q.models import OrmQ

    if stage not in STAGES:
        raise ValueError(f"unknown pipeline stage {stage!r}; known: {', '.join(STAGES)}")
    ids = [str(object_id) for object_id in object_ids]
    if not ids:
        return
    broker = get_broker()
    if Conf.SYNC or not isinstance(broker, ORM):
        # Tests/dev without a cluster run each task in process; other brokers take one at a time.
        with transaction.atomic():
            for object_id in ids:
                async_task(f"pipeline.tasks.{stage}", object_id, task_name=f"{stage}:{object_id}"[:100],
                           **STAGE_OPTIONS[stage])
        return
    collector = _PackageCollector(broker.list_key)
    for object_id in ids:
        async_task(f"pipeline.tasks.{stage}", object_id, task_name=f"{stage}:{object_id}"[:100],
                   broker=collector, **STAGE_OPTIONS[stage])
    now = timezone.now()
    key = broker.list_key or Conf.CLUSTER_NAME
    OrmQ.objects.using(Conf.ORM or "default").bulk_create(
        [OrmQ(key=key, payload=package, lock=now) for package in collector.packages])


def standardize(message_id: str) -> str:
    from pipeline.standardize import standardize as run

    return run(message_id)


def distribute(message_id: str) -> str:
    from pipeline.queueing import distribute as run

    return run(message_id)


def send(delivery_id: str) -> str:
    from pipeline.sending import send as run

    return run(delivery_id)


def sweep() -> dict:
    from pipeline.sweeper import sweep as run

    return run()


def purge() -> dict:
    from pipeline.retention import purge as run

    return run()
