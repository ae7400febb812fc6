"""Pipeline stages as Django Q tasks: the entry points django-q calls by dotted name.

ingest (pipeline/ingest.py) → standardize → distribute (+ queue per subscriber) → send, each put
on the queue by pipeline/queue.py with the transaction that made its rows ready. A task
takes one row id or a batch of them (a list; pipeline.queue.Stage.batch). The logic lives in the
stage modules; these only name it for django-q.
"""

from mailgate import metrics
from pipeline import distribute as distribute_stage
from pipeline import orphans, retention, sending, standardize as standardize_stage, sweeper
from pipeline.semantic import embed as embed_stage


def _ids(object_ids) -> list[str]:
    return [object_ids] if isinstance(object_ids, str) else [str(pk) for pk in object_ids]


# Durations are per task: one message alone, or a batch (pipeline.queue.Stage.batch).
@metrics.timed("standardize")
def standardize(message_ids: str | list[str]) -> str:
    return standardize_stage.standardize_batch(_ids(message_ids))


@metrics.timed("distribute")
def distribute(message_ids: str | list[str]) -> str:
    return distribute_stage.distribute_batch(_ids(message_ids))


@metrics.timed("send")
def send(delivery_ids: str | list[str]) -> str:
    return sending.send_batch(_ids(delivery_ids))


def embed(message_ids: str | list[str]) -> str:
    return embed_stage.embed_batch(_ids(message_ids))


def sweep() -> dict:
    return sweeper.sweep()


def purge() -> dict:
    """The daily retention job: expired messages, then stored objects no row points to."""
    counts = retention.purge()
    counts["orphans"] = orphans.sweep()["orphans"]
    return counts
