"""Batch actions from the UI (read/unread, flag/unflag, move, delete), written back to IMAP.

The server is the truth: we change it first (UID STORE / UID MOVE / UID EXPUNGE, one connection
per account and one command per folder), then record what the server accepted on
MessageLocation.flags and Message.flags and publish message.updated.

Never a bare EXPUNGE: it would also remove messages another client marked \\Deleted. Delete moves
to the account's \\Trash folder, or, in Trash itself (or with no Trash), marks \\Deleted and runs
UID EXPUNGE on exactly those UIDs, which needs UIDPLUS. imap-tools' delete() (bare EXPUNGE) and
its move() fallback (which calls delete()) are not used for that reason.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from frontend import access
from mailgate.realtime import publish_for_message
from imap import errors
from imap.connection import open_mailbox
from imap.models import Folder, MessageLocation
from pipeline.models import Message

log = logging.getLogger(__name__)

MAX_IDS = 1000
FLAG_ACTIONS = {
    "read": ("\\Seen", True),
    "unread": ("\\Seen", False),
    "flag": ("\\Flagged", True),
    "unflag": ("\\Flagged", False),
}
ACTIONS = (*FLAG_ACTIONS, "move", "delete")
TRASH = "\\Trash"


class BadAction(Exception):
    """The request itself is wrong (unknown action, no ids, bad target): a 400."""


@dataclass
class Result:
    updated: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"updated": self.updated, "errors": self.errors}


def _parse_ids(ids) -> list[uuid.UUID]:
    if not isinstance(ids, list) or not ids:
        raise BadAction("ids must be a non-empty list of message ids")
    if len(ids) > MAX_IDS:
        raise BadAction(f"at most {MAX_IDS} messages per request")
    try:
        return list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    except ValueError:
        raise BadAction("ids must be message ids") from None


def apply(user, ids, action, folder_id=None) -> Result:
    """Apply `action` to the messages `ids` that `user` may see (any foreign id: 404)."""
    if action not in ACTIONS:
        raise BadAction(f"action must be one of: {', '.join(ACTIONS)}")
    wanted = _parse_ids(ids)
    messages = {m.pk: m for m in access.messages(user).filter(pk__in=wanted)}
    if len(messages) != len(wanted):
        from django.http import Http404

        raise Http404("not found")
    target = None
    if action == "move":
        if folder_id in (None, ""):
            raise BadAction("move needs a target folder")
        target = access.get_or_404(access.folders(user), pk=folder_id)

    result = Result()
    locations = (MessageLocation.objects.filter(message_id__in=wanted, expunged_at__isnull=True)
                 .select_related("account", "folder"))
    by_account: dict[int, dict[int, list[MessageLocation]]] = defaultdict(lambda: defaultdict(list))
    accounts = {}
    for location in locations:
        by_account[location.account_id][location.folder_id].append(location)
        accounts[location.account_id] = location.account
    touched: set = set()

    located = {loc.message_id for folders in by_account.values() for locs in folders.values() for loc in locs}
    for message_id in wanted:
        if message_id in located:
            continue
        if action in FLAG_ACTIONS:
            touched.add(message_id)  # not on any server (webhook, import): the flag is ours alone
        else:
            result.errors.append({"id": str(message_id), "error": "this message is not on an IMAP server"})

    for account_id, folders in by_account.items():
        account = accounts[account_id]
        if target is not None and target.account_id != account_id:
            for locs in folders.values():
                for loc in locs:
                    result.errors.append({"id": str(loc.message_id),
                                          "error": "cannot move a message to another account's folder"})
            continue
        try:
            with open_mailbox(account) as mailbox:
                capabilities = _capabilities(mailbox)
                for locs in folders.values():
                    try:
                        done = _apply_in_folder(mailbox, capabilities, account, locs, action, target)
                        touched.update(done)
                    except _FolderError as exc:
                        result.errors.extend({"id": str(loc.message_id), "error": str(exc)} for loc in locs)
        except errors.ImapError as exc:
            log.info("batch %s on account %s failed: %s", action, account_id, exc)
            result.errors.extend({"id": str(loc.message_id), "error": exc.message}
                                 for locs in folders.values() for loc in locs)

    with transaction.atomic():
        for message_id in touched:
            message = messages[message_id]
            _refresh_message_flags(message, action)
            publish_for_message(message, "message.updated", {
                "id": str(message.pk), "status": message.status, "account": message.account_id,
                "flags": message.flags, "action": action,
            })
    failed = {e["id"] for e in result.errors}
    result.updated = [str(m) for m in wanted if m in touched and str(m) not in failed]
    return result


class _FolderError(Exception):
    pass


def _capabilities(mailbox) -> set[str]:
    # imaplib only keeps the pre-login greeting's list, which lacks MOVE/UIDPLUS on many servers.
    typ, data = mailbox.client.capability()
    if typ != "OK" or not data:
        return {c.upper() for c in mailbox.client.capabilities}
    return {c.decode().upper() for c in data[-1].split()}


def _uidvalidity(mailbox) -> int | None:
    values = mailbox.client.untagged_responses.get("UIDVALIDITY") or []
    try:
        return int(values[-1])
    except (IndexError, ValueError):
        return None


def _uid_set(uids) -> str:
    return ",".join(str(u) for u in sorted(uids))


def _check(result, what: str):
    typ, data = result
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")[:200]
        raise _FolderError(f"the server refused {what}: {text}")
    return data


def expand_uid_set(text: str) -> list[int]:
    """'1:3,7' → [1, 2, 3, 7] (as in COPYUID responses)."""
    out = []
    for part in text.split(","):
        if ":" in part:
            low, high = (int(x) for x in part.split(":"))
            out.extend(range(min(low, high), max(low, high) + 1))
        else:
            out.append(int(part))
    return out


_COPYUID = re.compile(r"(\d+)\s+([\d:,]+)\s+([\d:,]+)")


def _copyuid(mailbox) -> tuple[int, dict[int, int]] | None:
    values = mailbox.client.untagged_responses.pop("COPYUID", None) or []
    for value in values:
        match = _COPYUID.search(value.decode() if isinstance(value, bytes) else str(value))
        if match:
            source, dest = expand_uid_set(match.group(2)), expand_uid_set(match.group(3))
            if len(source) == len(dest):
                return int(match.group(1)), dict(zip(source, dest))
    return None


def _apply_in_folder(mailbox, capabilities, account, locs, action, target) -> set:
    folder = locs[0].folder
    try:
        mailbox.folder.set(folder.name)
    except Exception as exc:  # imap-tools raises its own error types for a refused SELECT
        raise _FolderError(f"cannot open folder {folder.name!r} on the server: {exc}") from None
    current = _uidvalidity(mailbox)
    live = [loc for loc in locs if current is None or loc.uidvalidity == current]
    stale = [loc for loc in locs if loc not in live]
    if stale:
        # UIDs from another UIDVALIDITY name other messages now; the next sync re-maps them.
        log.info("folder %s of account %s changed UIDVALIDITY; skipping %d message(s)", folder.pk, account.pk,
                 len(stale))
    if not live:
        raise _FolderError(f"folder {folder.name!r} changed on the server; wait for the next sync")
    uids = _uid_set(loc.uid for loc in live)

    if action in FLAG_ACTIONS:
        flag, value = FLAG_ACTIONS[action]
        _check(mailbox.client.uid("STORE", uids, "+FLAGS.SILENT" if value else "-FLAGS.SILENT", f"({flag})"),
               f"to change {flag}")
        with transaction.atomic():
            for loc in live:
                flags = [f for f in loc.flags if f != flag] + ([flag] if value else [])
                MessageLocation.objects.filter(pk=loc.pk).update(flags=flags)
        return {loc.message_id for loc in live}

    if action == "delete":
        trash = Folder.objects.filter(account=account, special_use=TRASH, present=True).first()
        if trash is not None and trash.pk != folder.pk:
            target = trash
        else:
            _expunge(mailbox, capabilities, uids)
            _mark_gone(live)
            return {loc.message_id for loc in live}

    if target.pk == folder.pk:
        return {loc.message_id for loc in live}
    _move(mailbox, capabilities, uids, target)
    mapping = _copyuid(mailbox)
    _mark_gone(live)
    if mapping:
        _record_new_locations(live, target, *mapping)
    return {loc.message_id for loc in live}


def _expunge(mailbox, capabilities, uids: str) -> None:
    if "UIDPLUS" not in capabilities:
        raise _FolderError("the server lacks UIDPLUS, so these messages cannot be removed without also "
                           "expunging others; move them to Trash instead")
    _check(mailbox.client.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)"), "to mark messages deleted")
    _check(mailbox.client.uid("EXPUNGE", uids), "UID EXPUNGE")


def _move(mailbox, capabilities, uids: str, target) -> None:
    from imap_tools.utils import encode_folder

    mailbox.client.untagged_responses.pop("COPYUID", None)
    if "MOVE" in capabilities:
        _check(mailbox.client.uid("MOVE", uids, encode_folder(target.name)), f"to move to {target.name!r}")
        return
    # RFC 6851's fallback, limited to these UIDs.
    _check(mailbox.client.uid("COPY", uids, encode_folder(target.name)), f"to copy to {target.name!r}")
    _expunge(mailbox, capabilities, uids)


def _mark_gone(locations) -> None:
    now = timezone.now()
    MessageLocation.objects.filter(pk__in=[loc.pk for loc in locations]).update(expunged_at=now)


def _record_new_locations(locations, target, uidvalidity: int, mapping: dict[int, int]) -> None:
    for loc in locations:
        new_uid = mapping.get(loc.uid)
        if new_uid is None:
            continue
        try:
            with transaction.atomic():
                MessageLocation.objects.create(
                    account_id=loc.account_id, folder=target, message_id=loc.message_id, uidvalidity=uidvalidity,
                    uid=new_uid, flags=loc.flags, internaldate=loc.internaldate, size=loc.size,
                    gm_labels=loc.gm_labels)
        except IntegrityError:
            pass  # sync already recorded it


def _refresh_message_flags(message: Message, action: str) -> None:
    """Message.flags = union of its live locations' flags (or the action itself, off-server)."""
    lists = list(MessageLocation.objects.filter(message=message, expunged_at__isnull=True)
                 .values_list("flags", flat=True))
    if lists:
        flags = sorted({f for flags in lists for f in flags})
    else:
        flags = list(message.flags or [])
        if action in FLAG_ACTIONS:
            flag, value = FLAG_ACTIONS[action]
            flags = [f for f in flags if f != flag] + ([flag] if value else [])
    Message.objects.filter(pk=message.pk).update(flags=flags)
    message.flags = flags
