"""The orphan sweep: stored objects that no row points to, removed once they are old enough.

Every writer stores an object before the transaction that records its name commits (mailgate/
storage.py), so a rollback, a killed process or a lost claim can leave an object behind: raw
bytes whose message never committed, an attachment of a standardize that lost its claim, a
*.tmp of a local write cut short. Run by the daily retention job (pipeline/tasks.py purge).

The grace age (MAILGATE_STORAGE_ORPHAN_HOURS) keeps a write in flight safe: its row commits
seconds after the write, and a write of bytes already stored refreshes the object's time
(storage.write_once), so raw bytes shared with a message being ingested right now look young.
An object's time is read again just before it is deleted, which leaves only the moment between
that read and the delete itself.
"""

import logging
from datetime import timedelta
from itertools import islice

from django.conf import settings

from mailgate import storage
from pipeline import clock
from pipeline.models import Attachment, Message

log = logging.getLogger(__name__)

# Prefix in storage → the model and field whose rows name its objects.
OWNERS = {"raw": (Message, "raw"), "attachments": (Attachment, "file")}
BATCH = 500


def _batches(iterable, size):
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def sweep(now=None, grace_hours=None, dry_run: bool = False) -> dict:
    """Remove (or, dry_run, count) objects under raw/ and attachments/ that no row names and that
    were last written before the grace age; returns {"checked", "orphans", "bytes"}."""
    now = now or clock.now()
    grace = settings.MAILGATE_STORAGE_ORPHAN_HOURS if grace_hours is None else grace_hours
    cutoff = now - timedelta(hours=grace)
    counts = {"checked": 0, "orphans": 0, "bytes": 0}
    for prefix, (model, field) in OWNERS.items():
        for batch in _batches(storage.iter_objects(prefix), BATCH):
            counts["checked"] += len(batch)
            old = {obj.name: obj for obj in batch if obj.modified < cutoff}
            if not old:
                continue
            named = set(model.objects.filter(**{f"{field}__in": list(old)}).values_list(field, flat=True))
            for name, obj in old.items():
                if name in named:
                    continue
                if not dry_run:
                    modified = storage.modified_time(name)
                    if modified is None or modified >= cutoff:  # gone, or written again since the listing
                        continue
                    # Last, the row may have committed since the query above.
                    if model.objects.filter(**{field: name}).exists():
                        continue
                    storage.delete(name)
                counts["orphans"] += 1
                counts["bytes"] += obj.size
    if counts["orphans"]:
        log.info("orphan sweep %s: %s", "would remove" if dry_run else "removed", counts)
    return counts
