"""The single door into the pipeline for every source (IMAP sync, import, inbound webhooks).

Raw bytes are stored content-addressed (sha256) through Django's storage API (mailgate/storage.py:
the local files dir or an S3-compatible bucket), so the same bytes are written once.
"""

import hashlib

from django.db import IntegrityError, transaction

from mailgate import metrics, storage
from mailgate.bulk_update import update_each
from pipeline import audit, events, queue
from pipeline.models import Event, Message, PurgedIdentity
from pipeline.queue import Stage


def raw_name(sha256: str) -> str:
    return f"raw/{sha256[:2]}/{sha256}.eml"


def address(raw: bytes) -> tuple[str, str]:
    """(storage name, sha256 hex) of raw bytes: where they are kept, by their content."""
    digest = hashlib.sha256(raw).hexdigest()
    return raw_name(digest), digest


def store_raw(raw: bytes) -> tuple[str, str]:
    """Store raw RFC 822 bytes once; returns (storage name, sha256 hex). Complete when this
    returns, so the caller's row may point at it from then on (mailgate/storage.py)."""
    name, digest = address(raw)
    storage.write_once(name, raw)
    return name, digest


def read_raw(message: Message) -> bytes:
    return storage.read_bytes(message.raw.name)


def enqueue_standardize(message_id, lane: queue.Lane | None = None) -> None:
    """Start the pipeline for a message once the surrounding transaction commits."""
    queue.enqueue_on_commit(Stage.STANDARDIZE, [message_id], lane)


def enqueue_standardize_many(message_ids, lane: queue.Lane | None = None) -> None:
    """Start the pipeline for many messages once the surrounding transaction commits, with one
    INSERT for all their queue rows (batches of pipeline.queue.Stage.batch)."""
    queue.enqueue_on_commit(Stage.STANDARDIZE, [str(pk) for pk in message_ids], lane)


def attach_raw_batch(pairs) -> int:
    """Phase 2 of sync: keep the bodies of one FETCH batch, [(message, raw), ...], and start the
    pipeline for each; returns how many messages advanced.

    Stores the raw files first (content-addressed, so a rollback leaves only reusable files), then
    in ONE transaction locks the batch's messages still in HEADERS and moves exactly those to
    RECEIVED with one conditional UPDATE (executemany, see _advance_to_received), and queues their
    standardize tasks in the same transaction, in one insert. Idempotent: a message already past HEADERS
    (another sync, a rerun) is neither changed nor queued again. A message listed twice keeps the
    first bytes.
    """
    stored: dict = {}
    writes: dict = {}
    for message, raw in pairs:
        if message.pk in stored:
            continue
        name, digest = address(raw)
        stored[message.pk] = (name, digest, len(raw))
        writes[name] = raw
    # All of them before the transaction below: in parallel where each write is a round trip.
    storage.write_many_once(list(writes.items()))
    if not stored:
        return 0
    with transaction.atomic():
        # FOR UPDATE (PostgreSQL) / the IMMEDIATE write lock (SQLite; with a DEFERRED transaction
        # a concurrent commit makes our UPDATE fail instead) keep a concurrent attach of the same
        # message from slipping between this read and the UPDATE: the ids read here are exactly
        # the rows the conditional UPDATE moves, hence exactly the ones to queue.
        # In pk order, so two syncs attaching the same messages lock them in one order.
        rows = list(Message.objects.select_for_update().filter(
            pk__in=list(stored), status=Message.Status.HEADERS).order_by("pk").values_list("pk", "arrival", "source"))
        waiting = [pk for pk, _, _ in rows]
        if waiting:
            _advance_to_received([(pk, *stored[pk]) for pk in waiting])
            _received(waiting)
            # New UIDs above history go to the live lane, a first sync's history to the bulk one.
            lanes: dict = {}
            for pk, arrival, source in rows:
                lanes.setdefault(queue.lane_of(arrival, source), []).append(pk)
            for lane, ids in lanes.items():
                enqueue_standardize_many(ids, lane)
    metrics.ingested(Message.Source.IMAP, len(waiting))  # phase 2 of IMAP sync is its only caller
    return len(waiting)


def _received(message_ids) -> None:
    """The audit rows and the live hints of messages whose raw bytes were just stored: two queries
    and one hint per audience, whatever the batch size."""
    rows = list(Message.objects.filter(pk__in=message_ids).values_list(
        "id", "owner_id", "account_id", "sender_address", "subject", "size"))
    audit.record_all([audit.event_for(Event.Kind.RECEIVED, pk, owner_id, sender=sender, subject=subject,
                                      detail=f"raw stored, {size} bytes")
                      for pk, owner_id, _, sender, subject, size in rows])
    batches: dict = {}
    for pk, owner_id, account_id, *_ in rows:
        batches.setdefault((account_id, None if account_id else owner_id), []).append(pk)
    for (account_id, owner_id), ids in batches.items():
        # The audience is the same for every message of one account: ask the model once.
        viewers = Message(account_id=account_id, owner_id=owner_id).viewer_ids()
        events.messages_stored(viewers, "message.updated", ids, account_id)


def _advance_to_received(rows) -> None:
    """UPDATE ... SET raw, raw_sha256, size, status=RECEIVED WHERE id = ? AND status = HEADERS for
    every (pk, name, digest, size), as one executemany (mailgate/bulk_update.py): the ORM's
    per-row CASE/WHEN form of this cost ~1 ms per message to compile (bench/sync.py), more than
    the rest of phase 2."""
    received, headers = str(Message.Status.RECEIVED), str(Message.Status.HEADERS)
    changed = update_each(Message, ["raw", "raw_sha256", "size", "status"], ["id", "status"],
                          [(name, digest, size, received, pk, headers) for pk, name, digest, size in rows])
    # Under the lock this cannot differ; if it ever did, roll back rather than queue a message
    # that did not move.
    if changed != len(rows):
        raise IntegrityError(f"attach_raw_batch: {len(rows) - changed} rows changed under the lock")


def ingest_raw(*, owner, raw: bytes, identity: str, source: str, account=None, folder=None,
               channel=None, **fields) -> tuple[Message, bool]:
    """Create a received message from complete raw bytes (import, webhooks) unless its identity
    is already known in that account or channel. Returns (message, created).

    An identity that retention purged (pipeline.PurgedIdentity) returns (None, False): the
    message was relayed already and is gone from mailgate, so it must not come back as new."""
    lookup = {"account": account} if account is not None else {"channel": channel}
    existing = Message.objects.filter(identity=identity, **lookup).first()
    if existing:
        return existing, False
    if (account is not None or channel is not None) and \
            PurgedIdentity.objects.filter(identity=identity, **lookup).exists():
        return None, False
    name, digest = store_raw(raw)
    try:
        with transaction.atomic():
            message = Message.objects.create(
                owner=owner, source=source, account=account, folder=folder, channel=channel,
                identity=identity, raw=name, raw_sha256=digest, size=len(raw),
                status=Message.Status.RECEIVED, **fields,
            )
            audit.record(Event.Kind.RECEIVED, message, detail=f"raw stored, {len(raw)} bytes ({source})")
            events.message_new(message)
            enqueue_standardize(message.pk, queue.lane_of(message.arrival, source))
    except IntegrityError:
        # Lost a race with a concurrent call for the same identity: the other one stored it.
        return Message.objects.get(identity=identity, **lookup), False
    metrics.ingested(source)
    return message, True


def ingest_raw_many(*, owner, items, source: str, account=None, folder=None,
                    channel=None) -> list[tuple[Message | None, bool]]:
    """ingest_raw for many messages of one owner and scope (an import's batch, a backlog): the
    same rows, audit trail, tasks and hints, with one SELECT for the identities already known, one
    for those purged, and in one transaction one INSERT each for the messages, their RECEIVED
    rows and their standardize tasks, and one numbering of the live hints at its commit.

    `items` are (raw, identity, fields) triples; returns what ingest_raw would return for each, in
    order. An identity listed twice is one message, with the first item's bytes."""
    lookup = {"account": account} if account is not None else {"channel": channel}
    identities = {identity for _, identity, _ in items}
    known = {m.identity: m for m in Message.objects.filter(identity__in=identities, **lookup)}
    purged = set()
    if account is not None or channel is not None:
        purged = set(PurgedIdentity.objects.filter(identity__in=identities - set(known), **lookup)
                     .values_list("identity", flat=True))
    new: dict[str, Message] = {}
    writes: dict[str, bytes] = {}
    for raw, identity, fields in items:
        if identity in known or identity in purged or identity in new:
            continue
        name, digest = address(raw)
        writes[name] = raw
        new[identity] = Message(owner=owner, source=source, account=account, folder=folder, channel=channel,
                                identity=identity, raw=name, raw_sha256=digest, size=len(raw),
                                status=Message.Status.RECEIVED, **fields)
    # Content-addressed, before the transaction: a rollback leaves only files a retry reuses.
    storage.write_many_once(list(writes.items()))
    if new:
        try:
            with transaction.atomic():
                _insert_received(list(new.values()), source)
        except IntegrityError:
            # A concurrent ingest stored one of these identities first: ingest_raw settles each
            # race on its own (the batch's transaction rolled back whole, so nothing is twice).
            return [ingest_raw(owner=owner, raw=raw, identity=identity, source=source, account=account,
                               folder=folder, channel=channel, **fields) for raw, identity, fields in items]
        metrics.ingested(source, len(new))
    results, seen = [], set()
    for _, identity, _ in items:
        if identity in known:
            results.append((known[identity], False))
        elif identity in purged:
            results.append((None, False))
        else:
            results.append((new[identity], identity not in seen))
            seen.add(identity)
    return results


def _insert_received(messages: list[Message], source: str) -> None:
    """The rows ingest_raw writes for each message, one INSERT per table for all of them."""
    Message.objects.bulk_create(messages)
    audit.record_all([audit.event_for(Event.Kind.RECEIVED, m.pk, m.owner_id, sender=m.sender_address,
                                      subject=m.subject, detail=f"raw stored, {m.size} bytes ({source})")
                      for m in messages])
    events.messages_new(messages)  # numbered and sent together at the commit (mailgate/realtime.py)
    lanes: dict = {}
    for message in messages:
        lanes.setdefault(queue.lane_of(message.arrival, source), []).append(message.pk)
    for lane, ids in lanes.items():
        enqueue_standardize_many(ids, lane)
