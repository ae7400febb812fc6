"""Raw bytes to an email.message.Message, and the depth-first walk over its MIME parts.

The stdlib's feedparser splits the structure, under a lean policy (StructurePolicy) and inside
mailgate's Limits: an oversized header block is cut at a field boundary, an oversized message
is parsed for its headers only, the parser itself stops reading once it has built more parts
than max_parts or nested deeper than max_parse_depth (BoundedParser), and the walk stops at
max_parts and flattens past max_depth.
"""

import re
from email import policy as email_policy
from email.feedparser import FeedParser
from email.message import Message
from email.parser import BytesParser

from .headers import content_type
from .text import LINE_BREAK, size


class StructurePolicy(email_policy.Compat32):
    """compat32 with RFC 5322 unfolding on lookup, for parsing and re-serializing MIME structure.

    policy.default builds a header-registry object on every lookup, and the parser looks up
    Content-Type several times per part: that made parsing 5x slower on the corpus
    (1.5 s against 0.27 s) and raised on headers the registry cannot tokenize. The headers
    mailgate shows (subject, addresses, date) still go through policy.default, in headers.py.
    Unlike compat32, undecodable bytes stay surrogate-escaped (not U+FFFD) so they can be
    decoded there, and folded parameters (`boundary="a<CRLF> b"`) are unfolded.
    """

    def header_fetch_parse(self, name, value):
        return "".join(LINE_BREAK.split(value)) if isinstance(value, str) else value

    def fold_binary(self, name, value):
        # Attached messages are re-serialized with their header lines as they came: refolding
        # would run the header registry (slow, and it can raise).
        if not isinstance(value, str):
            return super().fold_binary(name, value)
        return f"{name}: {self.linesep.join(value.splitlines())}{self.linesep}".encode("utf-8", "surrogateescape")


STRUCTURE_POLICY = StructurePolicy()
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # as email.feedparser.headerRE


def parse_bytes(raw, limits, warnings):
    """Return (message, whether its body was parsed)."""
    header_end = _header_end(raw, limits.max_header_bytes)
    headers = raw[:header_end]
    if header_end > limits.max_header_bytes:
        warnings.append(f"header block is {size(header_end)}, over the {size(limits.max_header_bytes)} "
                        "limit; the fields past it were ignored")
        headers = _truncate_headers(headers, limits.max_header_bytes)
        raw = headers + raw[header_end:]
    if len(raw) > limits.max_total_bytes:
        warnings.append(f"message is {size(len(raw))}, over the {size(limits.max_total_bytes)} limit; "
                        "parsed headers only")
        return _parse_headers_only(headers), False
    try:
        return parse_structure(raw, limits, warnings), True
    except RecursionError:
        warnings.append("RecursionError while parsing; fell back to headers-only parse")
    except Exception as exc:
        warnings.append(f"{type(exc).__name__} while parsing; fell back to headers-only parse")
    return _parse_headers_only(headers), False


class BoundedParser(FeedParser):
    """The stdlib feedparser, counting the parts it builds and how deep they nest as it goes.

    The feedparser builds every part of a message before anything can look at them: a 7 MB
    message of a million empty parts cost 15 s and 400 MB. Counting in _new_message (called
    once per part, the one hook the feedparser has) lets parse_structure stop feeding input
    as soon as a limit is passed, so the cost is bounded by the limits, not by the input.
    """

    def __init__(self, max_parts, max_depth):
        super().__init__(policy=STRUCTURE_POLICY)
        self.parts = 0
        self.depth = 0
        self._max_parts, self._max_depth = max_parts, max_depth

    def _new_message(self):
        super()._new_message()
        self.parts += 1
        self.depth = max(self.depth, len(self._msgstack))

    @property
    def over_limit(self):
        return self.parts > self._max_parts or self.depth > self._max_depth


# Small enough that a chunk of 7-byte parts (about 1,200 of them) costs little past the limit.
_FEED_CHUNK = 8192


def parse_structure(raw, limits, warnings):
    """BytesParser().parsebytes(raw) under the part and depth limits; a cut leaves a warning.

    What was read before the cut stays parsed; the open multiparts are closed as if the
    message ended there (the feedparser notes a missing end boundary).
    """
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser does
    parser = BoundedParser(limits.max_parts, limits.max_parse_depth)
    for start in range(0, len(text), _FEED_CHUNK):
        parser.feed(text[start:start + _FEED_CHUNK])
        if parser.over_limit:
            what = (f"more than {limits.max_parts} MIME parts" if parser.parts > limits.max_parts
                    else f"MIME nesting deeper than {limits.max_parse_depth}")
            warnings.append(f"{what}; stopped reading the message structure after "
                            f"{size(start + _FEED_CHUNK)} of {size(len(text))}")
            break
    return parser.close()


def _parse_headers_only(headers):
    return BytesParser(policy=STRUCTURE_POLICY).parsebytes(headers, headersonly=True)


def _header_end(raw, limit):
    """Offset where the header block ends (just past its last line)."""
    if raw.startswith((b"\n", b"\r\n")):
        return 0
    blank = _BLANK_LINE.search(raw, 0, limit + 4)
    if blank:
        return blank.start() + (2 if raw[blank.start()] == 13 else 1)
    if len(raw) <= limit:
        return len(raw)
    # Rare: a huge header block, or none at all. Walk the lines the way the feedparser does.
    pos = 0
    while pos < len(raw):
        newline = raw.find(b"\n", pos)
        end = len(raw) if newline < 0 else newline + 1
        line = raw[pos:end]
        if not line.strip(b"\r\n") or not _HEADER_LINE.match(line):
            return pos
        pos = end
    return pos


def _truncate_headers(block, limit):
    """Keep whole header fields up to `limit` bytes; never cut a folded field in half."""
    cut = pos = 0
    while True:
        newline = block.find(b"\n", pos)
        if newline < 0 or newline + 1 > limit:
            break
        pos = newline + 1
        if block[pos:pos + 1] not in (b" ", b"\t"):
            cut = pos
    return block[:cut] if cut else block[:limit] + b"\n"


def walk(msg, limits, warnings):
    """Yield (number, part, content type, alternative ancestor, too deep) depth-first.

    Iterative, unlike Message.walk(), so depth costs no stack; message/rfc822 parts are leaves
    (they become .eml attachments).
    """
    stack = [(msg, 0, None, False)]
    number = 0
    while stack:
        part, depth, alternative, too_deep = stack.pop()
        number += 1
        if number > limits.max_parts:
            warnings.append(f"more than {limits.max_parts} MIME parts; the rest were skipped")
            return
        ctype = content_type(part)
        yield number, part, ctype, alternative, too_deep
        children = part.get_payload() if ctype.startswith("multipart/") else None
        if not isinstance(children, list):
            continue
        if depth + 1 > limits.max_depth and not too_deep:
            warnings.append(f"nesting deeper than {limits.max_depth}; inner parts kept as attachments")
            too_deep = True
        if ctype == "multipart/alternative":
            alternative = number
        stack.extend((child, depth + 1, alternative, too_deep) for child in reversed(children)
                     if isinstance(child, Message))


def record_defects(part, number, warnings):
    """One warning per defect the feedparser noted on `part`, in words."""
    for defect in getattr(part, "defects", ()):
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(defect).__name__.removesuffix("Defect")).lower()
        where = "the top-level part" if number == 1 else f"part {number}"
        detail = str(defect).strip()
        detail = f" ({detail[:80]})" if detail and detail.lower() != words else ""
        warnings.append(f"MIME defect in {where}: {words}{detail}")
