"""Live hints to the browsers of everyone who may see the message (owner, account members),
published after the commit."""

from mailgate.realtime import publish_for_message


def _message_data(message) -> dict:
    return {"id": str(message.pk), "status": message.status, "subject": (message.subject or "")[:200],
            "sender": message.sender_address, "thread": message.thread_id,
            "suppressed_reason": message.suppressed_reason, "account": message.account_id}


def message_new(message) -> None:
    publish_for_message(message, "message.new", _message_data(message))


def message_updated(message) -> None:
    publish_for_message(message, "message.updated", _message_data(message))


def delivery_updated(delivery) -> None:
    publish_for_message(delivery.message, "delivery.updated", {
        "id": str(delivery.pk), "message": str(delivery.message_id), "status": delivery.status,
        "service": delivery.service_id, "address": delivery.address, "attempts": delivery.attempts,
        "not_before": delivery.not_before.isoformat() if delivery.not_before else None,
        "error": (delivery.last_error or "")[:300],
    })
