"""Daily digests: at a DIGEST subscription's digest time, one combined message instead of one per
message.

Each message still gets its own Delivery (so every message's timeline shows when and how it went
out); at send time the first task claims the subscription's whole due group (claims.claim_digest),
sends this one message made from them through the service, and marks every delivery of the group
with the outcome and the same remote id.
"""

from __future__ import annotations

from pipeline import clock, scheduling
from pipeline.models import Delivery, Message

# Messages in one digest: a busy mailbox must not make one unsendable giant. The rest stay due
# and their own send tasks make the next digest at once.
LIMIT = 200


def compose(deliveries: list[Delivery]) -> Message:
    """An unsaved Message listing the group's messages, oldest first, with the times in the
    subscriber's time zone and the snippet standardize made of each. Never stored; transports format it like any other message."""
    tz = scheduling.subscription_zone(deliveries[0].subscription)
    messages = sorted((d.message for d in deliveries), key=lambda m: (m.date is None, m.date or clock.now()))
    entries = []
    for message in messages:
        when = f"{message.date.astimezone(tz):%Y-%m-%d %H:%M}  " if message.date else ""
        sender = message.sender_name or message.sender_address or "unknown sender"
        entries.append(f"{when}{sender}: {message.subject or '(no subject)'}\n{message.snippet}".rstrip())
    count = len(messages)
    digest = Message(owner_id=deliveries[0].service.owner_id, source=Message.Source.IMPORT,
                     subject=f"Digest: {count} message{'' if count == 1 else 's'}", sender_name="mailgate",
                     date=clock.now(), text_body="\n\n".join(entries))
    digest.source_label = "daily digest"  # shown by templates as {source}
    return digest
