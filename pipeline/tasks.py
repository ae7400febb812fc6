"""Pipeline stages as Django Q tasks: the entry points django-q calls by dotted name.

ingest (pipeline/ingest.py) → standardize → distribute (+ queue per subscriber) → send, each put
on the queue by pipeline/queue.py after the transaction that made its row ready commits. The
logic lives in the stage modules; these only name it for django-q.
"""

from pipeline import distribute as distribute_stage
from pipeline import retention, sending, standardize as standardize_stage, sweeper
from pipeline.semantic import embed as embed_stage


def standardize(message_id: str) -> str:
    return standardize_stage.standardize(message_id)


def distribute(message_id: str) -> str:
    return distribute_stage.distribute(message_id)


def send(delivery_id: str) -> str:
    return sending.send(delivery_id)


def embed(message_id: str) -> str:
    return embed_stage.embed(message_id)


def sweep() -> dict:
    return sweeper.sweep()


def purge() -> dict:
    return retention.purge()
