"""Batch actions from the UI (read/unread, flag/unflag, move, delete, delete_forever) written back to IMAP.

The server is the truth: we change it first (UID STORE / UID MOVE / UID EXPUNGE, one connection
per account and one command per folder), then record what the server accepted on
MessageLocation.flags and Message.flags. The caller (frontend/actions.py) checks who may do what
and publishes message.updated for the messages we return.

The connection is imap.connection.connect's, like sync's: it holds one of the account's connection
slots (waiting up to MAILGATE_SLOT_WAIT for one, then "all N connections of this account are in
use; try again in a moment"), is refused for a disabled account or one stopped after failed logins
(a click must not get the account locked by the provider), and records a failed login on the
account. Like a manual sync, a click does not wait out an error backoff.

Delete never destroys mail by surprise: "delete" moves to the account's Trash (imap/trash.py,
created on the server the first time if there is none, and the user is told); mail already in
the Trash stays there. Only "delete_forever", and only in the Trash, removes mail for good (the
API asks for an explicit confirmation first). Every move is reported (Outcome.moves) so the UI
can offer Undo: a move back to where each message was.

Never a bare EXPUNGE: it would also remove messages another client marked \\Deleted.
delete_forever marks \\Deleted and runs UID EXPUNGE on exactly those UIDs, which needs UIDPLUS.
imap-tools' delete() (bare EXPUNGE) and its move() fallback (which calls delete()) are not used
for that reason.
"""

from __future__ import annotations

import imaplib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from imap_tools.errors import ImapToolsError
from imap_tools.utils import encode_folder

from imap import errors, trash, wire
from imap.connection import connect
from imap.models import Folder, MessageLocation
from pipeline.models import Message

log = logging.getLogger(__name__)

FLAG_ACTIONS = {
    "read": ("\\Seen", True),
    "unread": ("\\Seen", False),
    "flag": ("\\Flagged", True),
    "unflag": ("\\Flagged", False),
}
ACTIONS = (*FLAG_ACTIONS, "move", "delete", "delete_forever")


@dataclass
class Outcome:
    """Messages whose action took effect (their Message.flags are current), and one error per message
    that failed ({"id": ..., "error": text safe to show})."""

    done: set = field(default_factory=set)
    errors: list[dict] = field(default_factory=list)
    # {"id": message id, "from": folder id, "to": folder id} per message moved (Undo moves back).
    moves: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # things the user should know, e.g. a new Trash


class _FolderError(Exception):
    """This folder's part failed (refused command, changed UIDVALIDITY); the other folders go on."""


def write_back(messages: dict, action: str, target: Folder | None = None) -> Outcome:
    """Apply `action` to `messages` ({pk: Message}, already checked for access) on their servers.

    `target`: the folder to move to (action "move"), of the messages' own account. Messages on no
    server (webhooks, imports) get flag actions on their own row only; moving or deleting them is
    an error.
    """
    outcome = Outcome()
    locations = (MessageLocation.objects.filter(message_id__in=list(messages), expunged_at__isnull=True)
                 .select_related("account", "folder"))
    by_account: dict[int, dict[int, list[MessageLocation]]] = defaultdict(lambda: defaultdict(list))
    accounts = {}
    for location in locations:
        by_account[location.account_id][location.folder_id].append(location)
        accounts[location.account_id] = location.account

    located = {loc.message_id for folders in by_account.values() for locs in folders.values() for loc in locs}
    for message_id in messages:
        if message_id in located:
            continue
        if action in FLAG_ACTIONS:
            outcome.done.add(message_id)  # not on any server (webhook, import): the flag is ours alone
        else:
            outcome.errors.append({"id": str(message_id), "error": "this message is not on an IMAP server"})

    for account_id, folders in by_account.items():
        if target is not None and target.account_id != account_id:
            outcome.errors.extend({"id": str(loc.message_id),
                                   "error": "cannot move a message to another account's folder"}
                                  for locs in folders.values() for loc in locs)
            continue
        account = accounts[account_id]
        try:
            with connect(account, f"write-back: {action}", ignore_backoff=True,
                         wait=settings.MAILGATE_SLOT_WAIT) as conn:
                account_target = target
                if action in ("delete", "delete_forever"):
                    account_target = _trash(account, conn.mailbox, action, outcome)
                for locs in folders.values():
                    try:
                        outcome.done.update(_in_folder(conn.mailbox, conn.capabilities, account, locs, action,
                                                       account_target, outcome))
                    except _FolderError as exc:
                        outcome.errors.extend({"id": str(loc.message_id), "error": str(exc)} for loc in locs)
        except errors.ImapError as exc:
            log.info("batch %s on account %s failed: %s", action, account_id, exc)
            outcome.errors.extend({"id": str(loc.message_id), "error": exc.message}
                                  for locs in folders.values() for loc in locs)

    with transaction.atomic():
        for message_id in outcome.done:
            _refresh_message_flags(messages[message_id], action)
    return outcome


def _trash(account, mailbox, action, outcome) -> Folder | None:
    """The account's Trash; for "delete", created on the server when it has none (once)."""
    folder = trash.find(account)
    if folder is not None or action != "delete":
        return folder
    try:
        folder = trash.create(account, mailbox.client)
    except (trash.CannotCreate, ImapToolsError, imaplib.IMAP4.error, OSError, EOFError) as exc:
        raise errors.ImapError(f"no Trash folder to move to, and {exc}") from None
    log.info("created Trash folder %s on account %s", folder.pk, account.pk)
    outcome.notices.append(f"{account.display_name or account.email} had no Trash folder: created "
                           f"{folder.name!r} on the server.")
    return folder


def _uidvalidity(mailbox) -> int | None:
    values = mailbox.client.untagged_responses.get("UIDVALIDITY") or []
    return wire.as_int(values[-1]) if values else None


def _check(result, what: str):
    typ, data = result
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")[:200]
        raise _FolderError(f"the server refused {what}: {text}")
    return data


_COPYUID = re.compile(r"(\d+)\s+([\d:,]+)\s+([\d:,]+)")


def _copyuid(mailbox, count: int) -> tuple[int, dict[int, int]] | None:
    """The server's COPYUID answer for the `count` UIDs we moved, or None when it sent none (or
    one naming more UIDs than we moved: the next sync finds the new locations instead)."""
    values = mailbox.client.untagged_responses.pop("COPYUID", None) or []
    for value in values:
        match = _COPYUID.search(value.decode() if isinstance(value, bytes) else str(value))
        if match:
            try:
                source = wire.expand_uid_set(match.group(2), limit=count)
                dest = wire.expand_uid_set(match.group(3), limit=count)
            except ValueError:
                log.warning("ignoring a COPYUID answer naming more than the %d UIDs moved", count)
                continue
            if len(source) == len(dest):
                return int(match.group(1)), dict(zip(source, dest))
    return None


def _in_folder(mailbox, capabilities, account, locs, action, target, outcome) -> set:
    try:
        return _apply_in_folder(mailbox, capabilities, account, locs, action, target, outcome)
    except imaplib.IMAP4.abort:
        raise  # the connection is gone: connect() records it and every folder fails
    except imaplib.IMAP4.error as exc:
        # A BAD answer to one command (imaplib raises on BAD) is this folder's failure, not the
        # account's: recording it would put the account into backoff and hold up its syncs.
        raise _FolderError(f"the server refused the command: {str(exc)[:200]}") from None


def _apply_in_folder(mailbox, capabilities, account, locs, action, target, outcome) -> set:
    folder = locs[0].folder
    if action == "delete" and folder.pk == target.pk:
        return {loc.message_id for loc in locs}  # already in the Trash: deleted, nothing to do
    if action == "delete_forever" and (target is None or folder.pk != target.pk):
        raise _FolderError("only messages in the Trash can be deleted for good; Delete moves them there")
    try:
        mailbox.folder.set(folder.name)
    except (ImapToolsError, imaplib.IMAP4.error, OSError, EOFError) as exc:  # a refused SELECT, or worse
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
    uids = wire.uid_set(loc.uid for loc in live)

    if action in FLAG_ACTIONS:
        flag, value = FLAG_ACTIONS[action]
        _check(mailbox.client.uid("STORE", uids, "+FLAGS.SILENT" if value else "-FLAGS.SILENT", f"({flag})"),
               f"to change {flag}")
        with transaction.atomic():
            for loc in live:
                flags = [f for f in loc.flags if f != flag] + ([flag] if value else [])
                MessageLocation.objects.filter(pk=loc.pk).update(flags=flags)
        return {loc.message_id for loc in live}

    if action == "delete_forever":
        _expunge(mailbox, capabilities, uids)
        _retire(live)
        return {loc.message_id for loc in live}

    if target.pk == folder.pk:
        return {loc.message_id for loc in live}
    _move(mailbox, capabilities, uids, target)
    mapping = _copyuid(mailbox, len(live))
    _retire(live)
    if mapping:
        _record_new_locations(live, target, *mapping)
    outcome.moves.extend({"id": str(loc.message_id), "from": folder.pk, "to": target.pk} for loc in live)
    return {loc.message_id for loc in live}


def _expunge(mailbox, capabilities, uids: str) -> None:
    if "UIDPLUS" not in capabilities:
        raise _FolderError("the server lacks UIDPLUS, so these messages cannot be removed without also "
                           "expunging others; move them to Trash instead")
    _check(mailbox.client.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)"), "to mark messages deleted")
    _check(mailbox.client.uid("EXPUNGE", uids), "UID EXPUNGE")


def _move(mailbox, capabilities, uids: str, target) -> None:
    mailbox.client.untagged_responses.pop("COPYUID", None)
    if "MOVE" in capabilities:
        _check(mailbox.client.uid("MOVE", uids, encode_folder(target.name)), f"to move to {target.name!r}")
        return
    # RFC 6851's fallback, limited to these UIDs.
    _check(mailbox.client.uid("COPY", uids, encode_folder(target.name)), f"to copy to {target.name!r}")
    _expunge(mailbox, capabilities, uids)


def _retire(locations) -> None:
    """These locations are gone from the server (moved or expunged by us)."""
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
