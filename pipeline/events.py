"""Live hints to the browsers of everyone who may see the message (owner, account members),
published after the commit."""

from mailgate import realtime


def _message_data(message) -> dict:
    return {"id": str(message.pk), "status": message.status, "subject": (message.subject or "")[:200],
            "sender": message.sender_address, "thread": message.thread_id,
            "suppressed_reason": message.suppressed_reason, "account": message.account_id}


def message_new(message) -> None:
    realtime.publish_for_message(message, "message.new", _message_data(message))


def messages_new(messages) -> None:
    """message_new for each of a batch of messages of one audience (one owner and account or
    channel, as pipeline.ingest.ingest_raw_many stores them): its viewers are asked once."""
    if messages:
        viewers = messages[0].viewer_ids()
        for message in messages:
            realtime.publish(viewers, "message.new", _message_data(message))


def message_updated(message) -> None:
    realtime.publish_for_message(message, "message.updated", _message_data(message))


# What only the owner of the delivery's service sees (frontend/access.py manages_delivery).
_SERVICE_OWNERS_ONLY = ("address", "error")


def delivery_updated(delivery) -> None:
    """To everyone who sees the message; the address and error to the service's owner only."""
    data = {
        "id": str(delivery.pk), "message": str(delivery.message_id), "status": delivery.status,
        "service": delivery.service_id, "address": delivery.address, "attempts": delivery.attempts,
        "not_before": delivery.not_before.isoformat() if delivery.not_before else None,
        "error": (delivery.last_error or "")[:300],
    }
    viewers = delivery.message.viewer_ids()
    manager = delivery.service.owner_id
    realtime.publish([uid for uid in viewers if uid == manager], "delivery.updated", data)
    realtime.publish([uid for uid in viewers if uid != manager], "delivery.updated",
                     {k: v for k, v in data.items() if k not in _SERVICE_OWNERS_ONLY})


# A page refreshes up to this many messages by id; for more (a first sync's batch) it reloads.
MAX_IDS = 100


def messages_stored(viewer_ids, event_type: str, message_ids, account_id=None) -> None:
    """One hint for a batch of messages (sync's phase 1 and 2): their ids, or none and `"many":
    true` when there are too many to refresh one by one."""
    ids = [str(pk) for pk in message_ids]
    if ids:
        realtime.publish(viewer_ids, event_type, {"ids": ids if len(ids) <= MAX_IDS else [], "many": len(ids) > MAX_IDS,
                                         "account": account_id})


def messages_changed(messages, event_type: str) -> None:
    """One hint (messages_stored) per audience for a batch of messages: per account, or per owner
    of mail without one. A message page refreshes on its id among `ids`, deliveries included."""
    audiences: dict = {}
    for message in messages:
        audiences.setdefault((message.account_id, None if message.account_id else message.owner_id),
                             []).append(message)
    for (account_id, _), group in audiences.items():
        messages_stored(group[0].viewer_ids(), event_type, [m.pk for m in group], account_id)
