"""Which folders an account has, which of them we sync, and in what order.

LIST asks for special-use attributes (RFC 6154) where the server supports it; \\Noselect and
\\NonExistent entries are skipped; names are decoded from modified UTF-7 (imap/utf7.py). The
order is INBOX, then special-use folders (Sent, Drafts, ... in SPECIAL_USE_ORDER), then the rest
by name, so what the owner most likely looks at first is ready first.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from django.db import transaction

from imap import errors, utf7, wire
from imap.models import Folder

UNSELECTABLE = {"\\noselect", "\\nonexistent"}
SPECIAL_USE_ORDER = ["\\Sent", "\\Drafts", "\\Archive", "\\Flagged", "\\Important", "\\All", "\\Junk",
                     "\\Trash"]
_SPECIAL_USE = {flag.lower(): flag for flag in SPECIAL_USE_ORDER}


@dataclass
class FolderInfo:
    name: str  # Unicode
    delimiter: str = ""
    attributes: set[str] = field(default_factory=set)  # as sent, e.g. {"\\HasNoChildren", "\\Sent"}

    @property
    def selectable(self) -> bool:
        return not UNSELECTABLE & {a.lower() for a in self.attributes}

    @property
    def special_use(self) -> str:
        for attr in self.attributes:
            if attr.lower() in _SPECIAL_USE:
                return _SPECIAL_USE[attr.lower()]
        return ""

    @property
    def is_inbox(self) -> bool:
        return self.name.upper() == "INBOX"


def parse_list(data) -> list[FolderInfo]:
    """LIST responses (imaplib data) -> FolderInfo; undecodable names are skipped, not guessed."""
    infos = []
    for tokens in wire.parse(data):
        if len(tokens) < 3 or not isinstance(tokens[0], list):
            continue
        attributes, delimiter, raw_name = tokens[0], tokens[1], tokens[2]
        if isinstance(raw_name, bytes):  # literal
            raw_name = bytes(raw_name).decode("utf-8", "replace")
        if raw_name is None:
            continue
        try:
            name = utf7.decode(raw_name)
        except utf7.Utf7Error:
            continue
        if name.upper() == "INBOX":
            name = "INBOX"
        infos.append(FolderInfo(name, delimiter or "", {a for a in attributes if isinstance(a, str)}))
    return infos


def sort_key(info: FolderInfo):
    if info.is_inbox:
        return (0, 0, "")
    if info.special_use:
        return (1, SPECIAL_USE_ORDER.index(info.special_use), info.name.casefold())
    return (2, 0, info.name.casefold())


def _matches(name: str, patterns) -> bool:
    # Exact names or shell-style patterns ("Lists/*"); INBOX is case-insensitive per RFC 3501.
    key = "INBOX" if name.upper() == "INBOX" else name
    return any(fnmatch.fnmatchcase(key, "INBOX" if p.upper() == "INBOX" else p) for p in patterns)


def choose(infos: list[FolderInfo], include=(), exclude=()) -> list[FolderInfo]:
    """Selectable folders allowed by the account's include/exclude lists, in sync order.

    An empty include list means every folder; exclude wins over include.
    """
    chosen = [i for i in infos if i.selectable
              and (not include or _matches(i.name, include)) and not _matches(i.name, exclude)]
    return sorted(chosen, key=sort_key)


def list_folders(client, capabilities) -> list[FolderInfo]:
    """Send LIST (with RETURN (SPECIAL-USE) when the server has LIST-EXTENDED) on an imaplib client."""
    if "SPECIAL-USE" in capabilities and "LIST-EXTENDED" in capabilities:
        typ, data = client._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
        typ, data = client._untagged_response(typ, data, "LIST")
    else:
        typ, data = client.list('""', "*")
    if typ != "OK":
        raise errors.ProtocolError(f"LIST failed: {data!r}"[:200])
    return parse_list(data)


@transaction.atomic
def store(account, infos: list[FolderInfo]) -> list[Folder]:
    """Upsert Folder rows for what LIST returned; folders no longer listed are marked not present
    (never deleted: their locations and messages stay). Returns the rows of `infos`, same order."""
    existing = {f.name: f for f in Folder.objects.filter(account=account)}
    rows = []
    for info in infos:
        row = existing.get(info.name)
        values = {"delimiter": info.delimiter[:4], "special_use": info.special_use,
                  "selectable": info.selectable, "present": True}
        if row is None:
            # A new account's first sync and its IDLE catch-up list it at once: a plain create by
            # the second raised IntegrityError on the unique name and failed that sync (seen with
            # tests/test_faults.py); get_or_create takes the row the other one made.
            row, created = Folder.objects.get_or_create(account=account, name=info.name, defaults=values)
            if created:
                rows.append(row)
                continue
        if any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            row.save(update_fields=list(values))
        rows.append(row)
    listed = {i.name for i in infos}
    gone = [pk for name, f in existing.items() if name not in listed and f.present for pk in [f.pk]]
    if gone:
        Folder.objects.filter(pk__in=gone).update(present=False)
    return rows
