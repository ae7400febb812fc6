"""Pipeline stages as Django Q tasks: the entry points django-q calls by dotted name.

ingest (pipeline/ingest.py) → standardize → distribute (+ queue per subscriber) → send, each put
on the queue by pipeline/queue.py after the transaction that made its row ready commits. The
logic lives in the stage modules; these only name it for django-q.
"""

from mailgate import metrics
from pipeline import distribute as distribute_stage
from pipeline import orphans, retention, sending, standardize as standardize_stage, sweeper


@metrics.timed("standardize")
def standardize(message_id: str) -> str:
    return standardize_stage.standardize(message_id)


@metrics.timed("distribute")
def distribute(message_id: str) -> str:
    return distribute_stage.distribute(message_id)


@metrics.timed("send")
def send(delivery_id: str) -> str:
    return sending.send(delivery_id)


def sweep() -> dict:
    return sweeper.sweep()


def purge() -> dict:
    """The daily retention job: expired messages, then stored objects no row points to."""
    counts = retention.purge()
    counts["orphans"] = orphans.sweep()["orphans"]
    return counts
