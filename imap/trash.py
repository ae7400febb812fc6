"""Which folder is an account's Trash, and making one when the server has none.

Delete never destroys mail by surprise: it moves to the Trash, and only there can mail be removed
for good (imap/writeback.py). The Trash is, in this order: the folder the server marks \\Trash
(RFC 6154), else one named like a trash folder ("Trash", "Deleted Items", "INBOX.Trash", ...),
else a "Trash" we create on the server the first time something is deleted (writeback says so to
the user).
"""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction
from django.db.models import Q
from imap_tools.utils import encode_folder

from imap.models import Folder

SPECIAL_USE = "\\Trash"
CREATED_NAME = "Trash"
# The last path segment of names clients and providers use for their trash folder.
_NAME_LIKE = r"(^|[/.])(trash|deleted|deleted items|deleted messages|bin)$"


def _candidates(account_ids):
    return (Folder.objects.filter(account_id__in=list(account_ids), present=True, selectable=True)
            .filter(Q(special_use=SPECIAL_USE) | Q(name__iregex=_NAME_LIKE)))


def _pick(folders):
    """The Trash among one account's candidate folders: special-use first, then the shortest name."""
    folders = sorted(folders, key=lambda f: (f.special_use != SPECIAL_USE, len(f.name), f.name))
    return folders[0] if folders else None


def find(account) -> Folder | None:
    """The account's Trash folder, or None when it has none yet."""
    return _pick(list(_candidates([account.pk])))


def folder_ids(account_ids) -> list[int]:
    """The Trash folder of each of these accounts (those that have one), in one query."""
    by_account: dict[int, list] = {}
    for folder in _candidates(account_ids):
        by_account.setdefault(folder.account_id, []).append(folder)
    return [_pick(folders).pk for folders in by_account.values()]


def is_trash(folder) -> bool:
    return folder is not None and folder.pk in folder_ids([folder.account_id])


class CannotCreate(Exception):
    """The server refused to create a Trash folder (the text says why)."""


def create(account, client) -> Folder:
    """CREATE a Trash folder on the server (an authenticated imaplib client) and record it.

    Tried as "Trash" first, then under INBOX for servers whose personal folders live there
    (Courier, old Cyrus: "INBOX.Trash")."""
    inbox = Folder.objects.filter(account=account, name__iexact="INBOX").first()
    names = [CREATED_NAME]
    if inbox is not None and inbox.delimiter:
        names.append(f"{inbox.name}{inbox.delimiter}{CREATED_NAME}")
    refusal = ""
    for name in names:
        typ, data = client.create(encode_folder(name))
        if typ != "OK" and not re.search(rb"ALREADYEXISTS|already exists", b" ".join(
                d for d in data if isinstance(d, bytes)), re.I):
            refusal = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")[:200]
            continue
        client.subscribe(encode_folder(name))
        try:
            with transaction.atomic():
                folder, _ = Folder.objects.update_or_create(
                    account=account, name=name,
                    defaults={"present": True, "selectable": True,
                              "delimiter": inbox.delimiter if inbox is not None else ""})
        except IntegrityError:  # a folder sync recorded it at the same moment
            folder = Folder.objects.get(account=account, name=name)
        return folder
    raise CannotCreate(f"the server refused to create a Trash folder: {refusal}")
