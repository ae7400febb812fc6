"""What a message's live locations say about it: the flag/label union, and GONE.

A message may sit in several folders (a copy, Gmail's labels as folders); each MessageLocation keeps
that folder's flags (and Gmail labels), and Message.flags is their union. Batch sync calls these
after it stored flag changes, expunges or new locations (imap/sync.py).
"""

from __future__ import annotations

from imap.models import Account, MessageLocation
from mailgate import realtime
from pipeline.models import Message


def mark_gone(message_ids) -> None:
    """Messages still waiting for their body (HEADERS) whose last live location was just expunged
    can never be downloaded: mark them GONE, a final state retention may purge, instead of leaving
    them pending for ever."""
    live = MessageLocation.objects.filter(message_id__in=message_ids, expunged_at__isnull=True).values("message_id")
    Message.objects.filter(pk__in=message_ids, status=Message.Status.HEADERS).exclude(pk__in=live).update(
        status=Message.Status.GONE)


def refresh_message_flags(account: Account, message_ids, *, publish: bool = True, gmail: bool = False) -> None:
    """Message.flags = union of the flags of its live locations (and Gmail labels likewise);
    publish "message.updated" for each message whose flags changed.

    `gmail`: the locations' labels are Gmail's own (X-GM-LABELS), so an empty union means the last
    label was removed and Message.labels is cleared; elsewhere no location has labels and
    Message.labels is left alone."""
    message_ids = list(message_ids)
    if not message_ids:
        return
    union: dict = {mid: set() for mid in message_ids}
    labels: dict = {mid: set() for mid in message_ids}
    live = MessageLocation.objects.filter(message_id__in=message_ids, expunged_at__isnull=True)
    has_live = set()
    for mid, flags, gm_labels, folder_name in live.values_list("message_id", "flags", "gm_labels", "folder__name"):
        has_live.add(mid)
        union[mid].update(flags or [])
        labels[mid].update(gm_labels or [])
    changed = []
    for message in Message.objects.filter(pk__in=message_ids).only("id", "flags", "labels", "owner_id"):
        if message.pk not in has_live:
            continue  # gone from every folder: keep the last known flags
        flags, new_labels = sorted(union[message.pk]), sorted(labels[message.pk])
        set_labels = bool(new_labels) or gmail
        if sorted(message.flags or []) != flags or (set_labels and sorted(message.labels or []) != new_labels):
            message.flags = flags
            if set_labels:
                message.labels = new_labels
            changed.append(message)
    if changed:
        Message.objects.bulk_update(changed, ["flags", "labels"], batch_size=500)
        if publish:
            folders_of: dict = {}
            for mid, name in live.filter(message_id__in=[m.pk for m in changed]).values_list("message_id",
                                                                                         "folder__name"):
                folders_of.setdefault(mid, []).append(name)
            viewers = account.viewer_ids()  # whoever may see the account sees its mail's flags
            for message in changed:
                realtime.publish(viewers, "message.updated", {
                    "id": str(message.pk), "account_id": account.pk, "flags": message.flags,
                    "labels": message.labels, "folders": sorted(folders_of.get(message.pk, [])),
                })

