"""Phase 1's header reader: the few Message fields a list entry needs, from the header block alone.

Batch sync fetches BODY.PEEK[HEADER] of each new message (imap/sync.py, phase 1) and stores these
fields at once, so the message shows up before its body is downloaded; the standardize stage
rewrites them later from the full message. Speed matters more than completeness here
(bench/sync.py), so the common cases skip the stdlib parser while giving exactly its answers
(tests/test_sync.py compares the two); anything unusual is left to the stdlib. The importer
(imap/importer.py) uses the same fields.
"""

from __future__ import annotations

import email.utils
import logging
import re
from datetime import timezone as dt_timezone
from email.errors import MessageError
from email.header import decode_header, make_header
from io import StringIO

log = logging.getLogger(__name__)


# The header lines of a block, split and unfolded exactly as the stdlib parser (email.parser.
# HeaderParser, compat32 policy) does it - the same regex for "still a header line", the same
# universal line ends - but without building a Message of every field: phase 1 needs eight of them
# (bench/sync.py: the stdlib parse was ~10 % of a sync). tests/test_sync.py compares the two.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_WANTED = frozenset({"subject", "from", "to", "cc", "date", "message-id", "in-reply-to", "references"})


def _raw_headers(text: str) -> dict[str, list[str]]:
    """{lower-cased name: [value, ...]} for the fields phase 1 reads, each value as
    HeaderParser().parsestr(text).get_all(name) returns it."""
    lines = []
    for line in StringIO(text, newline="").readlines():
        if not _HEADER_LINE.match(line):
            break
        lines.append(line)
    fields: dict[str, list[str]] = {}
    name, value = "", []
    last = len(lines) - 1

    def keep():
        key = name.lower()
        if key in _WANTED:
            first = value[0].split(":", 1)[1].lstrip(" \t")
            fields.setdefault(key, []).append((first + "".join(value[1:])).rstrip("\r\n"))

    for lineno, line in enumerate(lines):
        if line[0] in " \t":
            if name:
                value.append(line)
            continue  # a continuation before any header is ignored, as by the stdlib
        if name:
            keep()
            name, value = "", []
        if line.startswith("From "):
            if lineno == last and lineno:
                break  # the stdlib treats it as the first body line
            continue  # unix "From " envelope line (or a misplaced one): not a field
        colon = line.find(":")
        if colon == 0:
            continue  # no field name
        name, value = line[:colon], [line]
    if name:
        keep()
    return fields


def _clean(text: str, limit: int | None = None) -> str:
    text = text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return text[:limit] if limit else text


def _decode(value) -> str:
    if value is None:
        return ""
    value = str(value)
    if "=?" not in value:
        return value  # no encoded-word: decode_header would hand it back unchanged, only slower
    # A malformed encoded-word keeps its raw text: HeaderParseError or CharsetError (MessageError),
    # an unknown charset (LookupError), bytes that are not in their charset (UnicodeError).
    try:
        return str(make_header(decode_header(value)))
    except (MessageError, LookupError, ValueError):
        return value


# Plain mailboxes - "Name Words <local@domain>" or "local@domain", dot-atoms only, no quotes,
# comments, groups or routes - are split here the way email.utils.getaddresses splits them (phrase
# words joined by one space); anything else goes to the stdlib. tests/test_sync.py compares the two.
# Possessive quantifiers: no backtracking, linear time on hostile input.
_FWS = r"[ \t\r\n]*+"
_ATEXT = r'[^\s\x00-\x1f\x7f()<>@,:;".\[\]\\]'  # no Unicode space either: the stdlib strip()s those
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_PHRASE_WORD = rf"(?:{_ATEXT}|\.)++"
_PLAIN_MAILBOX = re.compile(rf"{_FWS}(?:((?:{_PHRASE_WORD}{_FWS})*+)<({_DOT_ATOM}@{_DOT_ATOM})>"
                            rf"|({_DOT_ATOM}@{_DOT_ATOM})){_FWS}")
_WORD = re.compile(_PHRASE_WORD)


def _plain_addresses(field: str) -> list[tuple[str, str]] | None:
    pairs = []
    for part in field.split(","):
        m = _PLAIN_MAILBOX.fullmatch(part)
        if m is None:
            return None
        if m[3] is not None:
            pairs.append(("", m[3]))
        else:
            pairs.append((" ".join(_WORD.findall(m[1])), m[2]))
    return pairs


def _addresses(values) -> list[dict]:
    out = []
    try:
        pairs = _plain_addresses(", ".join(str(v) for v in values)) if values else []
        if pairs is None:
            pairs = email.utils.getaddresses([str(v) for v in values])
    except (RecursionError, ValueError, TypeError, IndexError):
        return []  # hostile address lists (deep nesting) - standardize reports them properly
    for name, address in pairs:
        if name or address:
            out.append({"name": _clean(_decode(name), 500), "address": _clean(address, 500)})
    return out


def header_fields(header: bytes) -> dict:
    """Cheap Message fields from the header block; the standardize stage rewrites them later from
    the full message, so this only has to be good enough to show a list entry at once. Never
    raises: a header that defeats the stdlib parser yields empty fields, not a stuck sync."""
    try:
        return _header_fields(header)
    except Exception:  # noqa: BLE001 - RecursionError and friends on hostile headers
        log.info("unparseable header block kept for standardize", exc_info=True)
        return {}


def _header_fields(header: bytes) -> dict:
    fields = _raw_headers(header.decode("utf-8", "replace"))

    def first(name: str) -> str:
        values = fields.get(name)
        return values[0] if values else ""

    senders = _addresses(fields.get("from", []))
    date = None
    if first("date"):
        try:
            date = email.utils.parsedate_to_datetime(first("date"))
            if date.tzinfo is None:
                date = date.replace(tzinfo=dt_timezone.utc)
        except (TypeError, ValueError, IndexError, OverflowError):
            date = None
    return {
        "subject": _clean(" ".join(_decode(first("subject")).split())),
        "sender_name": senders[0]["name"] if senders else "",
        "sender_address": senders[0]["address"] if senders else "",
        "to": _addresses(fields.get("to", [])),
        "cc": _addresses(fields.get("cc", [])),
        "date": date,
        "message_id": _clean(" ".join(first("message-id").split()), 998),
        "in_reply_to": _clean(" ".join(first("in-reply-to").split()), 998),
        "references": first("references").split()[:100],
    }

