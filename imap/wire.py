"""Parse the untagged responses imaplib hands back (FETCH, LIST) into Python values, decode the
values of FETCH items (flags, Gmail labels, INTERNALDATE) and write UID sets.

imaplib returns a response as a list whose items are either bytes (a line) or a tuple
(line ending in "{n}", the n literal bytes); the rest of a response after a literal comes as the
next item. imap-tools' own parsing assumes one literal per message and a fixed item order; sync
asks for several items (headers, flags, Gmail labels) whose order the server chooses, so this is a
small real tokenizer: atoms, quoted strings, literals, NIL and nested lists.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime

from imap import utf7

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")


class Literal(bytes):
    """Bytes that arrived as an IMAP literal (message data), as opposed to an atom."""


# One token per match: whitespace is skipped,
# "(" and ")" open/close lists, a quoted string runs to its unescaped closing quote (or the end),
# anything else is an atom up to a space or parenthesis. Only a section of a fetch item name
# (BODY[...], BINARY[...], BINARY.SIZE[...]) may hold spaces and parentheses (BODY[HEADER.FIELDS
# (A B)] is one atom), and only when its "]" closes it before another "[" opens. Anywhere else "["
# and "]" are plain atom characters (RFC 3501 atoms and astrings may contain them): a Gmail label
# or keyword like Projekt[2024 sent as an atom used to swallow the rest of the response - its UID
# included - so sync skipped the message (and the responses after it) for good.
# The leading whitespace is possessive so an atom never starts with CR or LF. One C-level regex
# match per token instead of a Python step per character: this runs over every FETCH response
# line of a sync (bench/sync.py).
_TOKEN = re.compile(rb'[ \r\n]*+(?:(\()|(\))|"((?:[^"\\]|\\.|\\$)*)"?|'
                    rb'((?i:BODY|BINARY)(?i:\.PEEK|\.SIZE)?\[[^\[\]]*\][^ ()]*|[^ ()]+))', re.DOTALL)
_QUOTED_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


def _tokenize(line: bytes, stack: list, literal: bytes | None) -> None:
    """Add the tokens of one line to the list at the top of `stack` (nested lists push/pop)."""
    end = len(line)
    lit = _LITERAL_AT_END.search(line) if literal is not None else None
    if lit:
        end = lit.start()
    match = _TOKEN.match
    pos = 0
    top = stack[-1]
    while pos < end:
        m = match(line, pos, end)
        if m is None or m.end() == pos:  # only whitespace was left
            break
        pos = m.end()
        opened, closed, quoted, atom = m.groups()
        if atom is not None:
            atom = atom.decode("utf-8", "replace")
            top.append(None if atom.upper() == "NIL" else atom)
        elif quoted is not None:
            if b"\\" in quoted:
                quoted = _QUOTED_ESCAPE.sub(rb"\1", quoted)
            top.append(quoted.decode("utf-8", "replace"))
        elif opened is not None:
            new: list = []
            top.append(new)
            stack.append(new)
            top = new
        elif closed is not None:
            if len(stack) > 1:
                stack.pop()
                top = stack[-1]
    if literal is not None:
        stack[-1].append(Literal(literal))


def parse(data) -> list[list]:
    """Split imaplib response data into one token list per response.

    A response ends when its parentheses are balanced at the end of a line.
    """
    responses: list[list] = []
    stack: list | None = None
    for item in data or ():
        if item is None:
            continue
        if isinstance(item, tuple):
            line, literal = item[0], item[1]
        else:
            line, literal = item, None
        if stack is None:
            current: list = []
            responses.append(current)
            stack = [current]
        _tokenize(line, stack, literal)
        if literal is None and len(stack) == 1:
            stack = None
    return responses


def fetch_items(data) -> list[dict]:
    """FETCH responses as dicts {"SEQ": n, "UID": ..., "FLAGS": [...], "BODY[HEADER]": bytes, ...}.

    Keys are upper-cased item names; BODY.PEEK[...] is answered as BODY[...].
    """
    out = []
    for tokens in parse(data):
        # "<seq> (ITEM value ITEM value ...)"; unsolicited responses without a list are skipped.
        if len(tokens) < 2 or not isinstance(tokens[1], list):
            continue
        item: dict = {}
        try:
            item["SEQ"] = int(tokens[0])
        except (TypeError, ValueError):
            continue
        pairs = tokens[1]
        for i in range(0, len(pairs) - 1, 2):
            key = pairs[i]
            if isinstance(key, str):
                item[key.upper()] = pairs[i + 1]
        out.append(item)
    return out


def as_int(value) -> int | None:
    if isinstance(value, list):  # MODSEQ (12345)
        value = value[0] if value else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def internaldate(value) -> datetime | None:
    """INTERNALDATE ("17-Jul-1996 02:44:25 -0700") as an aware datetime, None if unreadable."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            return datetime.strptime(value, "%d-%b-%Y %H:%M:%S %z")
        except ValueError:
            return None


def labels(value) -> list[str]:
    """X-GM-LABELS as text: modified UTF-7 decoded, a label that is not valid UTF-7 kept as sent."""
    out = []
    for label in value or []:
        if isinstance(label, bytes):
            label = bytes(label).decode("utf-8", "replace")
        if not isinstance(label, str):
            continue
        try:
            out.append(utf7.decode(label))
        except utf7.Utf7Error:
            out.append(label)
    return out


def flags(value) -> list[str]:
    """FLAGS, sorted and without \\Recent."""
    # \Recent is per-session noise: it would make every sync look like a flag change.
    return sorted({f for f in (value or []) if isinstance(f, str) and f.lower() != "\\recent"})


def uid_set(uids) -> str:
    """Compact IMAP sequence set: [1,2,3,7,9,10] -> "1:3,7,9:10"."""
    uids = sorted(set(uids))
    parts, start, prev = [], None, None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def expand_uid_set(text: str, limit: int) -> list[int]:
    """'1:3,7' -> [1, 2, 3, 7] (as in COPYUID responses). The set comes from the server, so a
    range is counted before it is expanded: more than `limit` UIDs (the caller knows how many it
    sent) is a ValueError, never a list of four billion."""
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            low, high = sorted(int(x) for x in part.split(":"))
            if high - low + 1 > limit - len(out):
                raise ValueError(f"UID set names more than {limit} UIDs")
            out.extend(range(low, high + 1))
        else:
            if len(out) >= limit:
                raise ValueError(f"UID set names more than {limit} UIDs")
            out.append(int(part))
    return out
