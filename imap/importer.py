"""Import messages from files (behind `manage.py import_mail`): .eml, mbox and Maildir.

Messages enter the pipeline a stage batch at a time through pipeline.ingest.ingest_raw_many, with
the same identity batch sync uses, so repeating an import (or importing what sync already fetched)
stores nothing twice.
"""

from __future__ import annotations

import mailbox
from pathlib import Path

from django.conf import settings

from imap import identity as identity_mod
from imap.models import Account, Folder
from imap.headers import header_fields
from pipeline import ingest
from pipeline.models import Message

IMPORTED_FOLDER = Folder.IMPORTED


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def _is_mbox(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(5) == b"From "


def iter_messages(path: Path):
    """Yield (label, raw bytes) of every message under `path`."""
    if _is_maildir(path):
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.iterkeys()):
            yield f"{path}:{key}", box.get_bytes(key)
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name.startswith("."):
                continue
            yield from iter_messages(child)
    elif _is_mbox(path):
        box = mailbox.mbox(path, factory=None, create=False)
        for key in box.iterkeys():
            yield f"{path}#{key}", box.get_bytes(key)
    else:
        yield str(path), path.read_bytes()


def import_batch(account: Account, folder: Folder, raws: list[bytes], *, relay: bool = False
                 ) -> list[tuple[Message | None, bool]]:
    """Store a batch of messages in one transaction (pipeline.ingest.ingest_raw_many); imported
    mail is history (never relayed) unless `relay` says otherwise."""
    arrival = Message.Arrival.NEW if relay else Message.Arrival.HISTORY
    items = [(raw, identity_mod.identity_of_raw(raw),
              {"arrival": arrival, **header_fields(identity_mod.header_block(raw))}) for raw in raws]
    return ingest.ingest_raw_many(owner=account.owner, items=items, source=Message.Source.IMPORT,
                                  account=account, folder=folder)


def import_paths(account: Account, paths, *, relay: bool = False) -> dict:
    """Import every message found under `paths` (as history unless `relay`); returns counts and
    per-message errors."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
    # Not a server folder: present=False keeps it out of LIST-based sync.
    folder, _ = Folder.objects.get_or_create(account=account, name=IMPORTED_FOLDER,
                                             defaults={"present": False, "selectable": False})
    result = {"account": account.pk, "messages": 0, "created": 0, "existing": 0, "errors": []}
    batch: list[bytes] = []

    def store() -> None:
        for _, created in import_batch(account, folder, batch, relay=relay):
            result["messages"] += 1
            result["created" if created else "existing"] += 1
        batch.clear()

    for path in paths:
        try:
            for label, raw in iter_messages(path):
                if not raw.strip():
                    result["errors"].append(f"{label}: empty file, skipped")
                    continue
                batch.append(raw)
                if len(batch) >= settings.MAILGATE_STAGE_BATCH:
                    store()
        except (OSError, mailbox.Error) as exc:
            result["errors"].append(f"{path}: {exc.__class__.__name__}: {exc}")
    if batch:
        store()
    return result
