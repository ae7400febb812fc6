"""The embed step: after standardize, a message's chunks become vectors (pipeline.tasks.embed).

standardize writes a PendingEmbedding row in its own transaction and queues one embed task per
message (Stage.EMBED). Each task takes a batch of pending messages, oldest first, with its own
among them: the model call and the inserts cost per batch, not per message, and a task whose
message an earlier batch already took returns "skipped". Running a batch twice writes the same
vectors (they are deterministic; the old ones are deleted first, duplicates ignored), so workers
may race on one without harm, and a lost task is picked up by the next batch (oldest first) or by
`manage.py reindex_vectors`.

A failure (the model missing from a broken install) leaves the rows pending and raises, so
django-q records the failed task; no message is held back by it: words search and relaying do
not wait for vectors.
"""

import logging

from django.db import transaction
from django.db.models import F

from pipeline import clock, queue
from pipeline.models import Message
from pipeline.queue import Stage
from pipeline.semantic import chunking, model
from pipeline.semantic.models import MessageVector, PendingEmbedding, VectorScope

log = logging.getLogger(__name__)

BATCH = 512
# Mail not standardized yet has no text; it is embedded after standardize.
NOT_READY = [Message.Status.HEADERS, Message.Status.RECEIVED]


def scope_key(account_id, owner_id) -> str:
    """The index a message's vectors belong to: its account's, or its owner's mail without one."""
    return f"a{account_id}" if account_id is not None else f"u{owner_id}"


def queue_after_standardize(messages) -> None:
    """Inside standardize's transaction: remember the messages (a batch of the stage) as pending
    and queue their task once the transaction commits."""
    if not messages:
        return
    now = clock.now()
    PendingEmbedding.objects.bulk_create([PendingEmbedding(message_id=m.pk, queued_at=now) for m in messages],
                                         ignore_conflicts=True)
    queue.enqueue_on_commit(Stage.EMBED, [m.pk for m in messages])


def embed(message_id) -> str:
    """One message's task (tests, benches); see embed_batch."""
    return embed_batch([message_id])


def embed_batch(message_ids) -> str:
    """Task body: embed those of `message_ids` still pending, filled up to BATCH with the oldest
    other pending messages of this worker's lane (a task whose messages another task already took
    says "skipped")."""
    mine = [str(pk) for pk in PendingEmbedding.objects.filter(message_id__in=list(message_ids))
            .values_list("message_id", flat=True)]
    if not mine:
        return "skipped"
    # Companions from this lane only: a live message's task that filled its batch with a backfill's
    # history spent ~0.5 s of a live worker per pushed message on 511 old ones, and every live
    # stage behind it waited (bench/idle_latency.py --under-load, py-spy on the live workers).
    others = list(PendingEmbedding.objects.exclude(message_id__in=mine)
                  .filter(queue.in_lane(queue.current_lane(), via="message__")).order_by("queued_at")
                  .values_list("message_id", flat=True)[:max(0, BATCH - len(mine))])
    count = embed_messages([*mine, *others])
    return f"embedded {count}"


def embed_messages(message_ids) -> int:
    """Write the vectors of these messages (replacing any they had) and clear them from pending.
    Returns how many messages were embedded."""
    rows = list(Message.objects.filter(pk__in=list(message_ids)).exclude(status__in=NOT_READY)
                .values("id", "subject", "text_body", "account_id", "owner_id", "arrived_at"))
    texts, owners = [], []
    for row in rows:
        for position, text in enumerate(chunking.chunks(row["subject"], row["text_body"])):
            texts.append(text)
            owners.append((row, position))
    vectors = model.quantize(model.embed_texts(texts))
    new = [MessageVector(message_id=row["id"], position=position, account_id=row["account_id"],
                         owner_id=row["owner_id"], date=row["arrived_at"], vector=vector.tobytes())
           for (row, position), vector in zip(owners, vectors)]
    ids = [row["id"] for row in rows]
    with transaction.atomic():
        replaced = set(MessageVector.objects.filter(message_id__in=ids).values_list("account_id", "owner_id")
                       .distinct())
        if replaced:
            MessageVector.objects.filter(message_id__in=ids).delete()
            bump({scope_key(account, owner) for account, owner in replaced})
        # A concurrent batch may have written the same (identical) vectors first.
        MessageVector.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
        PendingEmbedding.objects.filter(message_id__in=list(message_ids)).delete()
    return len(rows)


def bump(keys) -> None:
    """Every process rebuilds its index of these scopes on its next query (vectors went away)."""
    for key in keys:
        if not VectorScope.objects.filter(key=key).update(generation=F("generation") + 1):
            VectorScope.objects.bulk_create([VectorScope(key=key, generation=1)], ignore_conflicts=True)


def reindex(account_id=None, progress=None) -> int:
    """Embed every standardized message again (of one account, or all), in batches; `progress`
    is called with each batch's size. Returns the count."""
    messages = Message.objects.exclude(status__in=NOT_READY)
    if account_id is not None:
        messages = messages.filter(account_id=account_id)
    done, last = 0, None
    while True:
        page = messages.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        ids = list(page.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return done
        done += embed_messages(ids)
        last = ids[-1]
        if progress:
            progress(len(ids))
