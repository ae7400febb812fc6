"""Batch actions from the UI (read/unread, flag/unflag, move, delete, delete_forever): the web-facing half.

Checks the request (action, ids, the target folder) against what the user may see, hands the
messages to imap.writeback (which changes the server first, then our rows), publishes
message.updated for each message the action reached (every open tab re-reads those rows, and a
message moved to the Trash leaves its lists) and answers with what worked, what did not, and the
moves to undo. delete_forever, the one action that cannot be undone, needs `confirm: true`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.http import Http404

from frontend import access
from mailgate.realtime import publish_for_message
from imap import writeback

MAX_IDS = 1000
# Changes to the owner's server beyond flags: the account's owner only (see frontend.access).
OWNER_ACTIONS = ("move", "delete", "delete_forever")


class BadAction(Exception):
    """The request itself is wrong (unknown action, no ids, bad target): a 400."""


@dataclass
class Result:
    updated: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    # Undo of the moves: [{"ids": [...], "folder": where they were}], one entry per source folder.
    undo: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"updated": self.updated, "errors": self.errors, "undo": self.undo, "notices": self.notices}


def _parse_ids(ids) -> list[uuid.UUID]:
    if not isinstance(ids, list) or not ids:
        raise BadAction("ids must be a non-empty list of message ids")
    if len(ids) > MAX_IDS:
        raise BadAction(f"at most {MAX_IDS} messages per request")
    try:
        return list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    except ValueError:
        raise BadAction("ids must be message ids") from None


def _undo(moves) -> list[dict]:
    back: dict[int, list[str]] = {}
    for move in moves:
        ids = back.setdefault(move["from"], [])
        if move["id"] not in ids:
            ids.append(move["id"])
    return [{"action": "move", "folder": folder, "ids": ids} for folder, ids in back.items()]


def apply(user, ids, action, folder_id=None, confirm=False) -> Result:
    """Apply `action` to the messages `ids` that `user` may see (any foreign id: 404)."""
    if action not in writeback.ACTIONS:
        raise BadAction(f"action must be one of: {', '.join(writeback.ACTIONS)}")
    if action == "delete_forever" and confirm is not True:
        raise BadAction("deleting for good cannot be undone: send confirm: true")
    wanted = _parse_ids(ids)
    found = {m.pk: m for m in access.messages(user).filter(pk__in=wanted)}
    if len(found) != len(wanted):
        raise Http404("not found")
    if action in OWNER_ACTIONS and access.owned_messages(user).filter(pk__in=wanted).count() != len(wanted):
        # Refused whole, before any connection is opened with the owner's password.
        raise access.NotAllowed(f"only the account's owner can {action} its messages")
    target = None
    if action == "move":
        if folder_id in (None, ""):
            raise BadAction("move needs a target folder")
        target = access.get_or_404(access.folders(user), pk=folder_id)

    messages = {pk: found[pk] for pk in wanted}  # the request's order: errors are listed in it
    outcome = writeback.write_back(messages, action, target)
    for message_id in outcome.done:
        message = messages[message_id]
        publish_for_message(message, "message.updated", {
            "id": str(message.pk), "status": message.status, "account": message.account_id,
            "flags": message.flags, "action": action,
        })
    failed = {e["id"] for e in outcome.errors}
    return Result(updated=[str(m) for m in wanted if m in outcome.done and str(m) not in failed],
                  errors=outcome.errors, undo=_undo(outcome.moves), notices=outcome.notices)
