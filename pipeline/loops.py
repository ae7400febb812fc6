"""Loop prevention: mail that must never be relayed again.

mailgate relays into mailboxes that mailgate may itself read, and to people whose autoresponders
answer. Relaying our own relayed mail, an out-of-office reply, a bounce or a copy of a list we
post to would ping-pong forever, so standardize marks such messages SUPPRESSED with a reason.

Everything here works on plain header values so it can be tested without parsing a message.
"""

import re
from collections.abc import Iterable, Mapping

from django.conf import settings

from outgoing.relay import parse_relay_header

# RFC 3834: anything but "no" means a machine wrote it.
_AUTO_SUBMITTED_HUMAN = "no"
# RFC 2076 / common practice. "list" is not here: ordinary mailing-list mail is relayed.
_PRECEDENCE_AUTOMATIC = {"bulk", "junk", "auto_reply", "auto-reply"}
_BOUNCE_SENDERS = {"mailer-daemon", "postmaster"}
_ANGLE = re.compile(r"<([^<>]*)>")


def list_id_key(value: str) -> str:
    """The list identifier of a List-Id header ("Team <team.example.com>" → "team.example.com")."""
    value = (value or "").strip()
    found = _ANGLE.search(value)
    return (found.group(1) if found else value).strip().lower()


def list_ids_for_addresses(addresses: Iterable[str]) -> set[str]:
    """List-Ids a list at each address would carry: list managers (Mailman, Google Groups, Sympa)
    build the List-Id from the posting address with '@' replaced by '.'."""
    ids = set()
    for address in addresses:
        address = (address or "").strip().lower()
        if "@" in address:
            ids.add(address.replace("@", ".", 1))
    return ids


def suppression_reason(headers: Mapping[str, str], *, content_type: str = "", sender_address: str = "",
                       relayed_list_ids: Iterable[str] = ()) -> str:
    """Why this message must not be relayed, or "" to relay it.

    `headers` maps lower-case header names to their (decoded) values; missing headers are absent
    or None. `content_type` is the top-level MIME type with parameters; `relayed_list_ids` are
    the List-Ids of lists mailgate relays to (see list_ids_for_addresses).
    """
    def header(name):
        value = headers.get(name)
        return None if value is None else str(value).strip()

    relay = header(settings.MAILGATE_RELAY_HEADER.lower())
    # Several hops may each have added one; parse_message joins them with ", ".
    for hop in (relay or "").split(","):
        parsed = parse_relay_header(hop)
        if parsed and parsed[0] == settings.MAILGATE_INSTANCE_ID:
            return f"loop: relayed by this mailgate (delivery {parsed[1][:60]})"

    auto = header("auto-submitted")
    if auto and auto.split(";")[0].strip().lower() != _AUTO_SUBMITTED_HUMAN:
        return f"auto-reply: Auto-Submitted: {auto[:60]}"
    suppress = header("x-auto-response-suppress")
    if suppress:
        return f"auto-reply: X-Auto-Response-Suppress: {suppress[:60]}"
    precedence = header("precedence")
    if precedence and precedence.lower() in _PRECEDENCE_AUTOMATIC:
        return f"auto-reply: Precedence: {precedence[:60]}"

    return_path = header("return-path")
    # An absent Return-Path says nothing (not every server adds one); an empty one is a bounce.
    if return_path is not None and return_path.strip("<> \t") == "":
        return "bounce: empty Return-Path"
    local_part = (sender_address or "").partition("@")[0].strip().lower()
    if local_part in _BOUNCE_SENDERS:
        return f"bounce: sent by {local_part.upper()}"
    ctype = (content_type or "").lower()
    if ctype.split(";")[0].strip() == "multipart/report":
        kind = "delivery-status" if "delivery-status" in ctype else "report"
        return f"bounce: multipart/report ({kind})"

    list_id = header("list-id")
    if list_id:
        key = list_id_key(list_id)
        if key and key in {i.lower() for i in relayed_list_ids}:
            return f"loop: List-Id {key[:80]} is a list mailgate relays to"
    return ""
