"""Raw RFC 822 bytes in, one ParsedMessage out: never an exception, a warning instead.

The stdlib does the work wherever it copes: its feedparser splits the MIME structure (with a
lean policy, see _StructurePolicy) and policy.default's header registry decodes subject,
addresses and date. Each place either is known to fail on real mail (RecursionError on deep
nesting or nested comments, LookupError for unknown charsets, HeaderParseError, IndexError or
AttributeError from the registry, 8-bit bytes in headers) falls back to a plainer decoding here
and records a short, human-readable warning.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import codecs
import functools
import hashlib
import html
import io
import json
import logging
import mimetypes
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy as email_policy
from email import utils as email_utils
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser

import nh3

from .filenames import fallback_filename, safe_filename
from .sanitize import sanitize_html

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_parts: int = 500
    max_depth: int = 30
    max_header_bytes: int = 256 * 1024
    max_total_bytes: int = 50 * 1024 * 1024
    html_to_text_seconds: float = 5.0
    # html2text manages about 0.5 MB/s on table-heavy mail: bigger HTML would only time out.
    html_to_text_max_chars: int = 1_000_000


DEFAULT_LIMITS = Limits()

# ParsedMessage.headers key -> header name. Used to spot loops, auto-replies and bounces.
HEADERS_OF_INTEREST = {
    "auto_submitted": "auto-submitted",
    "x_auto_response_suppress": "x-auto-response-suppress",
    "precedence": "precedence",
    "list_id": "list-id",
    "return_path": "return-path",
    "x_mailgate_relay": "x-mailgate-relay",
}


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    payload: bytes = field(repr=False)
    size: int
    sha256: str
    is_inline: bool = False
    content_id: str = ""


@dataclass
class ParsedMessage:
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    subject: str = ""
    sender_name: str = ""
    sender_address: str = ""
    to: list[dict] = field(default_factory=list)
    cc: list[dict] = field(default_factory=list)
    reply_to: list[dict] = field(default_factory=list)
    date: datetime | None = None
    text_body: str = ""
    html_body: str = ""
    markdown_body: str = ""
    snippet: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    # The HEADERS_OF_INTEREST keys ("" when absent) plus "content_type": the top part's effective
    # type with the parameters the header gave ("multipart/report; report-type=delivery-status").
    # x_mailgate_relay joins every occurrence with ", " so a loop through several hops shows.
    headers: dict[str, str] = field(default_factory=lambda: dict.fromkeys([*HEADERS_OF_INTEREST, "content_type"], ""))
    warnings: list[str] = field(default_factory=list)


def parse_message(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse raw message bytes into a ParsedMessage; problems become `warnings`, never exceptions."""
    result = ParsedMessage()
    try:
        _parse(_as_bytes(raw), limits, result)
    except Exception as exc:  # The contract is a result for any bytes; the bug still gets logged.
        logger.exception("parse_message failed; returning a partial result")
        result.warnings.append(f"{type(exc).__name__} while parsing; the result is partial")
    result.warnings = _tidy_warnings(result.warnings)
    return result


def _as_bytes(raw):
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    if raw is None:
        return b""
    return bytes(raw)


def _parse(raw, limits, result):
    warnings = result.warnings
    if not raw.strip():
        warnings.append("no text body: the message is empty")
        return
    msg, parsed_body = _parse_bytes(raw, limits, warnings)
    _read_headers(msg, result)
    bodies, leaf_types = [], []
    if parsed_body:
        linesep = "\r\n" if b"\r\n" in raw[:4096] else "\n"
        bodies, leaf_types = _read_parts(msg, limits, result, linesep)
    _explain_missing_text(result, parsed_body, bodies, leaf_types)
    result.snippet = _snippet(result.text_body)


# --- Bytes to email.message.Message ---------------------------------------------------------------

class _StructurePolicy(email_policy.Compat32):
    """compat32 with RFC 5322 unfolding on lookup, for parsing and re-serializing MIME structure.

    policy.default builds a header-registry object on every lookup, and the parser looks up
    Content-Type several times per part: that made parsing 5x slower on the corpus
    (1.5 s against 0.27 s) and raised on headers the registry cannot tokenize. The headers
    mailgate shows (subject, addresses, date) still go through policy.default, via _header().
    Unlike compat32, undecodable bytes stay surrogate-escaped (not U+FFFD) so they can be
    decoded here, and folded parameters (`boundary="a<CRLF> b"`) are unfolded.
    """

    def header_fetch_parse(self, name, value):
        return "".join(_LINE_BREAK.split(value)) if isinstance(value, str) else value

    def fold_binary(self, name, value):
        # Attached messages are re-serialized with their header lines as they came: refolding
        # would run the header registry (slow, and it can raise).
        if not isinstance(value, str):
            return super().fold_binary(name, value)
        return f"{name}: {self.linesep.join(value.splitlines())}{self.linesep}".encode("utf-8", "surrogateescape")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_STRUCTURE_POLICY = _StructurePolicy()
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # as email.feedparser.headerRE


def _parse_bytes(raw, limits, warnings):
    """Return (message, whether its body was parsed)."""
    header_end = _header_end(raw, limits.max_header_bytes)
    headers = raw[:header_end]
    if header_end > limits.max_header_bytes:
        warnings.append(f"header block is {_size(header_end)}, over the {_size(limits.max_header_bytes)} "
                        "limit; the fields past it were ignored")
        headers = _truncate_headers(headers, limits.max_header_bytes)
        raw = headers + raw[header_end:]
    if len(raw) > limits.max_total_bytes:
        warnings.append(f"message is {_size(len(raw))}, over the {_size(limits.max_total_bytes)} limit; "
                        "parsed headers only")
        return _parse_headers_only(headers), False
    try:
        return BytesParser(policy=_STRUCTURE_POLICY).parsebytes(raw), True
    except RecursionError:
        warnings.append("RecursionError while parsing; fell back to headers-only parse")
    except Exception as exc:
        warnings.append(f"{type(exc).__name__} while parsing; fell back to headers-only parse")
    return _parse_headers_only(headers), False


def _parse_headers_only(headers):
    return BytesParser(policy=_STRUCTURE_POLICY).parsebytes(headers, headersonly=True)


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


# --- Headers ---------------------------------------------------------------------------------------

# The header registry is quadratic in the number of encoded words (0.9 s for a 135 KB To:
# header); past this size the linear decoders below are used instead.
_MAX_STRUCTURED_HEADER = 64 * 1024
_ADDRESS_LABELS = {"from": "From", "sender": "Sender", "to": "To", "cc": "Cc", "reply-to": "Reply-To"}


def _raw_headers(msg):
    """Lower-cased name -> list of raw (unparsed, surrogate-escaped) values, in message order."""
    values = {}
    try:
        for name, value in msg.raw_items():
            values.setdefault(str(name).strip().lower(), []).append(str(value))
    except Exception:
        logger.debug("raw_items failed", exc_info=True)
    return values


def _read_headers(msg, result):
    raw = _raw_headers(msg)
    warn = result.warnings.append
    result.subject = _unstructured(raw, "subject", warn)
    senders = _addresses(raw, "from", warn)
    if "from" not in raw:
        senders = _addresses(raw, "sender", warn)
        warn("no From header; sender taken from Sender" if senders else "no From header; sender unknown")
    elif not senders:
        warn("From header has no address; sender unknown")
    if senders:
        result.sender_name = senders[0]["name"][:500]
        result.sender_address = senders[0]["address"][:500]
    result.to = _addresses(raw, "to", warn)
    result.cc = _addresses(raw, "cc", warn)
    result.reply_to = _addresses(raw, "reply-to", warn)
    result.date = _date(raw, warn)
    result.message_id = _first_id(raw.get("message-id"))
    result.in_reply_to = _first_id(raw.get("in-reply-to"))
    result.references = _id_list(raw.get("references"))
    for key, name in HEADERS_OF_INTEREST.items():
        values = [_clean(decode_header_text(v)).strip()[:998] for v in raw.get(name, [])]
        result.headers[key] = ", ".join(values) if key == "x_mailgate_relay" else (values[0] if values else "")
    # With its parameters: report-type=delivery-status is what marks a bounce.
    params = _clean(_decode_8bit(_unfold(next(iter(raw.get("content-type", [])), "")))[0]).partition(";")[2]
    params = params.strip().strip(";").strip()
    result.headers["content_type"] = (f"{_content_type(msg)}; {params}" if params else _content_type(msg))[:998]


def _header(name, value):
    """The policy.default header object for a raw value: exactly what msg[name] would give."""
    return email_policy.default.header_fetch_parse(name, value)


def _lossy(text):
    """True when the stdlib kept undecodable bytes (surrogates) or replaced them (U+FFFD)."""
    return "\ufffd" in text or _has_surrogates(text)


def _has_surrogates(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unstructured(raw, name, warn):
    if name not in raw:
        return ""
    value = raw[name][0]
    if len(value) <= _MAX_STRUCTURED_HEADER:
        try:
            decoded = str(_header(name, value))
            if not _lossy(decoded):
                return _clean(decoded)
        except Exception as exc:
            warn(f"{type(exc).__name__} from the standard parser on the {name.capitalize()} header; "
                 "decoded it directly")
    return _clean(decode_header_text(value, warn, f"the {name.capitalize()} header"))


def _addresses(raw, name, warn):
    """[{"name", "address"}] from an address header, whatever state it is in."""
    values = raw.get(name)
    if not values:
        return []
    label = _ADDRESS_LABELS[name]
    pairs = None
    if len(values[0]) <= _MAX_STRUCTURED_HEADER:
        try:
            header = _header(name, values[0])
            candidate = [(a.display_name, a.addr_spec) for a in header.addresses]
            if not any(_lossy(n) or _lossy(a) for n, a in candidate):
                pairs = candidate
        except Exception as exc:  # RecursionError on nested comments, registry bugs on odd groups
            warn(f"{type(exc).__name__} from the standard parser on the {label} header; used a simple parser")
    else:
        warn(f"{label} header is {_size(len(values[0]))}; addresses taken with a simple scan")
    if pairs is None:
        pairs = _fallback_addresses(values[0], len(values[0]) <= _MAX_STRUCTURED_HEADER)
        pairs = [(decode_header_text(n, warn, f"the {label} header").strip(), _decode_8bit(a)[0].strip())
                 for n, a in pairs]
    return [{"name": _clean(n)[:500], "address": _clean(a).lower()[:500]} for n, a in pairs if a or n]


_ADDR_SPEC = re.compile(r"""[^\s<>()\[\],;:"'@]+@[^\s<>()\[\],;:"'@]+""")


def _fallback_addresses(value, try_compat32):
    value = _unfold(value)
    if try_compat32:
        try:
            return [(n, a) for n, a in email_utils.getaddresses([value]) if a]
        except Exception:  # RecursionError on nested comments and routes, mostly
            logger.debug("getaddresses failed", exc_info=True)
    return [("", a) for a in _ADDR_SPEC.findall(value)]


def _date(raw, warn):
    values = raw.get("date")
    if not values:
        return None
    value = None
    try:
        value = _header("date", values[0]).datetime
    except Exception:
        logger.debug("stdlib failed on date", exc_info=True)
    text = _clean(decode_header_text(values[0])).strip()
    if value is None:
        try:
            value = email_utils.parsedate_to_datetime(text)
        except Exception:
            value = None
    if value is None:
        warn(f"date header unparseable: {text[:80]!r}")
        return None
    # "-0000" means "zone unknown"; treating it as UTC is the closest honest reading.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


_MSG_ID = re.compile(r"<([^<>]+)>")


def _first_id(values):
    ids = _id_list(values, loose=True)
    return ids[0] if ids else ""


def _id_list(values, loose=False):
    if not values:
        return []
    text = _clean(_decode_8bit(_unfold(" ".join(values)))[0])
    ids = [re.sub(r"\s+", "", i) for i in _MSG_ID.findall(text)]
    if not ids and loose:
        # Some systems write Message-ID without brackets; free text ("your message of ...") is no id.
        ids = [t for t in text.split() if "@" in t][:1]
    # The newest references matter for threading; a runaway header is cut from the front.
    return [i[:998] for i in ids if i][-100:]


# --- RFC 2047 and 8-bit header text ----------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def _unfold(value):
    return _LINE_BREAK.sub("", value)


def decode_header_text(value, warn=None, where="a header"):
    """Decode RFC 2047 encoded words and raw 8-bit bytes in a raw header value.

    Adjacent encoded words in one charset are joined before decoding, as multi-byte characters
    are often split across them. `warn`, when given, receives a sentence per lossy decoding.
    """
    if not value:
        return ""
    value = _unfold(str(value))
    tokens = []  # [text] or [charset, bytearray]
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        if between and not (between.isspace() and tokens and len(tokens[-1]) == 2):
            tokens.append([between])
        charset = match.group(1).split("*", 1)[0].lower()
        data = _decode_word(match.group(2).lower(), match.group(3))
        if tokens and len(tokens[-1]) == 2 and tokens[-1][0] == charset:
            tokens[-1][1] += data
        else:
            tokens.append([charset, bytearray(data)])
        pos = match.end()
    if pos < len(value):
        tokens.append([value[pos:]])
    out = []
    for token in tokens:
        if len(token) == 1:
            text, fallback = _decode_8bit(token[0])
            problem = f"raw 8-bit bytes in {where} are not UTF-8; decoded as {fallback}" if fallback else None
        else:
            text, problem = _decode_bytes(token[1], token[0], where)
        if problem and warn:
            warn(problem)
        out.append(text)
    return "".join(out)


def _decode_word(encoding, text):
    data = text.encode("utf-8", "surrogateescape")
    return binascii.a2b_qp(data, header=True) if encoding == "q" else _b64decode_loosely(data)


def _b64decode_loosely(data):
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:  # one stray character cannot be decoded; drop it
        data = data[:-1]
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return b""


def _decode_8bit(text):
    """Surrogate-escaped raw bytes -> text (see _guess_decode). Returns (text, fallback used or None)."""
    if text.isascii() or not _has_surrogates(text):
        return text, None
    decoded, used = _guess_decode(text.encode("utf-8", "surrogateescape"))
    return decoded, (used if used != "utf-8" else None)


# --- Charsets --------------------------------------------------------------------------------------

# Labels seen in real mail that Python does not know, or knows a narrower codec for.
_CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6", "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "windows-874": "cp874", "x-mac-roman": "mac_roman", "macintosh": "mac_roman", "x-sjis": "shift_jis",
    "shift-jis": "shift_jis", "sjis": "shift_jis", "x-euc-jp": "euc_jp", "iso-2022-jp": "iso2022_jp_ext",
    "big5": "big5hkscs", "x-x-big5": "big5hkscs", "unicode-1-1-utf-7": "utf-7", "x-unicode20utf8": "utf-8",
    "cp-850": "cp850", "utf8": "utf-8",
}
# Unlabelled or "ASCII" text is in practice UTF-8 or Windows-1252, never strict ASCII.
_GUESS_LABELS = {"", "us-ascii", "ascii", "ansi_x3.4-1968", "us"}
# As browsers do: text labelled Latin-1 uses the Windows-1252 extras in 0x80-0x9F.
_LATIN1_LABELS = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "iso_8859-1", "l1", "windows-1252", "cp1252"}


@functools.lru_cache(maxsize=256)
def _codec(label):
    """Python codec name for a charset label, or None if unknown or not a text encoding."""
    name = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def _decode_bytes(data, charset, where):
    """Decode body or encoded-word bytes. Returns (text, problem sentence or None)."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in _GUESS_LABELS:
        return _guess_decode(data)[0], None
    if label in _LATIN1_LABELS:
        try:
            return data.decode("cp1252"), None
        except UnicodeDecodeError:
            return data.decode("latin-1"), None
    codec = _codec(label)
    if codec is None:
        # Junk around a real label ("_iso-2022-jp$ESC") is common; the word inside often works.
        word = re.search(r"[a-z0-9][a-z0-9_.:-]*", label)
        codec = _codec(word.group()) if word else None
        text, used = (data.decode(codec, "replace"), word.group()) if codec else _guess_decode(data)
        return text, f"unknown charset {label[:40]!r} in {where}; decoded as {used}"
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        return data.decode(codec, "replace"), f"bytes invalid in charset {label[:40]!r} in {where}; replaced"
    except Exception:  # codecs that reject error handlers or fail oddly (idna, punycode, ...)
        text, used = _guess_decode(data)
        return text, f"charset {label[:40]!r} failed in {where}; decoded as {used}"


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_ASCII = bytes(range(128))


def _guess_decode(data):
    """Bytes of unknown charset: UTF-8 where valid, stray invalid bytes as latin-1; but when most
    non-ASCII bytes are invalid UTF-8 the text is a legacy charset, most likely windows-1252.
    Returns (text, what was used)."""
    if b"\x1b$B" in data or b"\x1b$@" in data:  # ISO-2022-JP escapes, the usual unlabelled Japanese
        try:
            return data.decode("iso2022_jp_ext"), "iso-2022-jp"
        except UnicodeDecodeError:
            pass
    text = data.decode("utf-8", "surrogateescape")
    invalid = len(_ESCAPED_BYTE.findall(text))
    if not invalid:
        return text, "utf-8"
    if invalid * 4 <= len(data.translate(None, _ASCII)):
        return _ESCAPED_BYTE.sub(lambda m: chr(ord(m.group()) - 0xDC00), text), "utf-8 and latin-1"
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


# --- MIME parts ------------------------------------------------------------------------------------

_BODY_TYPES = ("text/plain", "text/html")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([\w.:-]{1,40})""", re.IGNORECASE)
_RAW_CONTENT_TYPE = re.compile(r"\s*([\w!#$&^.+-]+/[\w!#$&^.+-]+)")


@dataclass
class _Leaf:
    number: int
    part: Message
    content_type: str
    alternative: int | None  # part number of the nearest multipart/alternative ancestor
    too_deep: bool
    disposition: str | None
    filename: str | None

    @property
    def is_body(self):
        """Text a mail client shows without a click; never also an attachment."""
        return (not self.too_deep and self.content_type in _BODY_TYPES
                and self.disposition != "attachment" and not self.filename)

    @property
    def is_fallback_body(self):
        """Text worth showing when there is no real body (named inline text, text/enriched, ...)."""
        return not self.too_deep and self.content_type.startswith("text/") and self.disposition != "attachment"


@dataclass
class _Body:
    content_type: str
    alternative: int | None
    text: str


def _read_parts(msg, limits, result, linesep):
    """Fill bodies and attachments from the MIME tree. Returns (bodies, leaf content types)."""
    leaves = list(_leaves(msg, limits, result.warnings))
    bodies = _bodies(leaves, result.warnings)
    result.attachments.extend(_attachment(leaf, linesep, result.warnings) for leaf in leaves if not leaf.is_body)
    if not any(b.text.strip() for b in bodies):
        bodies = _bodies_of_attached_message(leaves, limits, result) or bodies
    _fill_bodies(bodies, limits, result)
    # Parts the HTML shows through cid: URLs are inline, whatever their Content-Disposition says.
    shown = result.html_body.lower()
    for attachment in result.attachments:
        if attachment.content_id and f"cid:{attachment.content_id.lower()}" in shown:
            attachment.is_inline = True
    return bodies, [leaf.content_type for leaf in leaves]


def _bodies_of_attached_message(leaves, limits, result):
    """Only a forwarded message (or a bounce): its text is what a reader wants to see."""
    # message/rfc822 leaves are never body, so the first such leaf is the first such attachment.
    leaf = next((leaf for leaf in leaves if leaf.content_type == "message/rfc822"), None)
    eml = next((a for a in result.attachments if a.content_type == "message/rfc822"), None)
    if leaf is None or eml is None:
        return []
    try:
        inner = BytesParser(policy=_STRUCTURE_POLICY).parsebytes(eml.payload)
        bodies = _bodies(list(_leaves(inner, limits, [])), [])
    except Exception:  # RecursionError, mostly; the .eml attachment is still there
        return []
    if not any(b.text.strip() for b in bodies):
        return []
    result.warnings.append(f"no text of its own; text body taken from the attached message in part {leaf.number}")
    return bodies


def _leaves(msg, limits, warnings):
    for number, part, ctype, alternative, too_deep in _walk(msg, limits, warnings):
        _record_defects(part, number, warnings)
        if ctype.startswith("multipart/"):
            if isinstance(part.get_payload(), list):
                continue
            ctype = "text/plain"  # No boundary: the stdlib kept the body as text. Show it, not lose it.
        yield _Leaf(number, part, ctype, alternative, too_deep, _disposition(part), _filename(part, warnings))


def _bodies(leaves, warnings):
    chosen = [leaf for leaf in leaves if leaf.is_body] or [leaf for leaf in leaves if leaf.is_fallback_body]
    return [_Body("text/html" if leaf.content_type == "text/html" else "text/plain", leaf.alternative,
                  _part_text(leaf.part, leaf.content_type, leaf.number, warnings)) for leaf in chosen]


def _walk(msg, limits, warnings):
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
        ctype = _content_type(part)
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


def _record_defects(part, number, warnings):
    for defect in getattr(part, "defects", ()):
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(defect).__name__.removesuffix("Defect")).lower()
        where = "the top-level part" if number == 1 else f"part {number}"
        detail = str(defect).strip()
        detail = f" ({detail[:80]})" if detail and detail.lower() != words else ""
        warnings.append(f"MIME defect in {where}: {words}{detail}")


def _content_type(part):
    try:
        return part.get_content_type()
    except Exception:  # the header registry choked; read the raw value
        match = _RAW_CONTENT_TYPE.match(_raw_header(part, "content-type"))
        return match.group(1).lower() if match else "application/octet-stream"


def _raw_header(part, name):
    return next(iter(_raw_headers(part).get(name, [])), "")


def _disposition(part):
    try:
        return part.get_content_disposition()
    except Exception:
        value = _raw_header(part, "content-disposition").split(";", 1)[0].strip().lower()
        return value or None


def _filename(part, warnings):
    """Decoded filename (RFC 2231 or RFC 2047 or raw 8-bit), or None."""
    try:
        name = part.get_filename()  # RFC 2231 (charset, continuations) is handled in there
    except Exception:
        return None
    if not name or not str(name).strip():
        return None
    return _clean(decode_header_text(str(name), warnings.append, "a filename")).strip()


def _charset(part):
    try:
        return part.get_content_charset()
    except Exception:
        match = re.search(r"""charset\s*=\s*["']?([^"';\s]+)""", _raw_header(part, "content-type"), re.I)
        return match.group(1).lower() if match else None


def _payload_bytes(part):
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _part_text(part, ctype, number, warnings):
    data = _payload_bytes(part)
    charset = _charset(part)
    if not charset and ctype == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        charset = meta.group(1).decode("ascii").lower() if meta else None
    text, problem = _decode_bytes(data, charset, f"part {number}")
    if problem:
        warnings.append(problem)
    return _clean(text).replace("\r\n", "\n").replace("\r", "\n")


def _attachment(leaf, linesep, warnings):
    part, number, ctype, filename = leaf.part, leaf.number, leaf.content_type, leaf.filename
    if ctype.startswith("message/"):
        payload = _message_bytes(part, number, linesep, warnings)
        fallback = fallback_filename(number, ctype)
        if ctype == "message/rfc822":
            fallback = _attached_subject(part) or fallback
            if filename and not filename.lower().endswith(".eml"):
                filename += ".eml"
    else:
        payload, fallback = _payload_bytes(part), fallback_filename(number, ctype)
    content_id = _clean(_decode_8bit(_raw_header(part, "content-id"))[0]).strip().strip("<>").strip()[:500]
    return _make_attachment(safe_filename(filename, fallback), ctype, payload,
                            is_inline=bool(content_id) and leaf.disposition != "attachment", content_id=content_id)


def _make_attachment(filename, ctype, payload, is_inline=False, content_id=""):
    return ParsedAttachment(filename=filename, content_type=ctype[:255], payload=payload, size=len(payload),
                            sha256=hashlib.sha256(payload).hexdigest(), is_inline=is_inline, content_id=content_id)


def _attached_subject(part):
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        subject = _clean(decode_header_text(_raw_header(inner[0], "subject"))).strip()
        # A subject is no path: "a/b" must not lose its "a/" to safe_filename's basename rule.
        return f"{subject[:140]}.eml".replace("/", "_").replace("\\", "_") if subject else ""
    return ""


def _message_bytes(part, number, linesep, warnings):
    """Bytes of an attached message (message/rfc822, delivery-status, ...)."""
    inner = part.get_payload()
    if not isinstance(inner, list):
        return _payload_bytes(part)
    data = b"".join(_serialize(m, linesep, number, warnings) for m in inner if isinstance(m, Message))
    cte = _raw_header(part, "content-transfer-encoding").strip().lower()
    # Not allowed for message/*, yet sent: the parser took the encoded text for a message
    # (base64 lines have no colon, so a headerless one); decoding its re-serialization undoes that.
    if cte == "base64":
        data = _b64decode_loosely(data)
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(data)
    return data


def _serialize(message, linesep, number, warnings):
    buffer = io.BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=_STRUCTURE_POLICY.clone(linesep=linesep)).flatten(message)
        return buffer.getvalue()
    except Exception as exc:  # RecursionError on deep nesting, or a header the generator rejects
        warnings.append(f"{type(exc).__name__} re-serializing the attached message in part {number}; "
                        "kept its headers only")
        return "".join(f"{k}: {v}{linesep}" for k, v in message.raw_items()).encode("utf-8", "surrogateescape")


# --- Bodies ----------------------------------------------------------------------------------------

def _fill_bodies(bodies, limits, result):
    plain = _first_per_alternative(b for b in bodies if b.content_type == "text/plain")
    markup = _first_per_alternative(b for b in bodies if b.content_type == "text/html")
    text = "\n\n".join(b.text for b in plain if b.text.strip())
    text, uuencoded = _extract_uuencoded(text)
    for name, data in uuencoded:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        filename = safe_filename(name, fallback_filename(len(result.attachments) + 1, ctype))
        result.attachments.append(_make_attachment(filename, ctype, data))
    result.text_body = text
    result.html_body = sanitize_html("\n".join(b.text for b in markup))
    if result.html_body.strip():
        converted, problem = html_to_markdown(result.html_body, limits.html_to_text_seconds,
                                              limits.html_to_text_max_chars)
        if problem:
            result.warnings.append(problem)
        result.markdown_body = _defuse_markdown(converted).strip()
    if not result.text_body.strip():
        result.text_body = result.markdown_body
    if not result.markdown_body:
        result.markdown_body = result.text_body


def _first_per_alternative(bodies):
    """Inside one multipart/alternative only the first of a type counts; elsewhere all do."""
    seen, kept = set(), []
    for body in bodies:
        if body.alternative is None or body.alternative not in seen:
            kept.append(body)
            seen.add(body.alternative)
    return kept


_UU_BEGIN = re.compile(r"begin [0-7]{3,4} ?(.*)")


def _extract_uuencoded(text):
    """Pull `begin 644 name` ... `end` blocks out of plain text as (name, bytes) files."""
    if "begin " not in text:
        return text, []
    lines, out, files = text.split("\n"), [], []
    i = 0
    while i < len(lines):
        match = _UU_BEGIN.fullmatch(lines[i].rstrip())
        decoded = _decode_uu_block(lines, i + 1) if match else None
        if decoded is None:
            out.append(lines[i])
            i += 1
            continue
        data, end = decoded
        name = match.group(1).strip() or f"uuencoded-{len(files) + 1}.bin"
        files.append((name, data))
        out.append(f"[uuencoded attachment: {name}]")
        i = end + 1
    return "\n".join(out), files


def _decode_uu_block(lines, start):
    data = bytearray()
    for j in range(start, len(lines)):
        line = lines[j].rstrip()
        if line == "end":
            return (bytes(data), j) if j > start else None
        if line.startswith("begin "):  # also keeps a pile of unfinished blocks linear, not quadratic
            return None
        if not line or line == "`":
            continue
        try:
            data += binascii.a2b_uu(line)
        except (binascii.Error, ValueError):
            # Some encoders pad lines with junk; decode the length the line announces (as uu.py).
            try:
                data += binascii.a2b_uu(line[: ((ord(line[0]) - 32) & 63) * 4 // 3 + 1 + 3])
            except (binascii.Error, ValueError):
                return None
    return None


# Link targets in html2text output: [text](target), [id]: target and <scheme:...> autolinks.
_MARKDOWN_LINK = re.compile(r"(\]\(\s*<?|^\s*\[[^\]]*\]:\s*<?|<)((?:[^\s()<>]|\([^\s()]*\))+)", re.MULTILINE)
_DANGEROUS_SCHEMES = ("javascript:", "vbscript:", "data:", "file:")


def _defuse_markdown(markdown):
    def replace(match):
        target = re.sub(r"[\x00-\x20\x7f]+", "", html.unescape(match.group(2))).lower()
        return match.group(1) + "#" if target.startswith(_DANGEROUS_SCHEMES) else match.group(0)

    return _MARKDOWN_LINK.sub(replace, markdown)


_ENCRYPTED_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"}


def _explain_missing_text(result, parsed_body, bodies, leaf_types):
    if result.text_body.strip():
        return
    if not parsed_body:
        reason = "only the headers were parsed"
    elif result.html_body.strip():
        reason = "the HTML part has no text"
    elif bodies:
        reason = "the body parts have no text"
    elif _ENCRYPTED_TYPES.intersection(leaf_types):
        reason = "the message is encrypted (S/MIME or PGP)"
    elif leaf_types:
        kinds = ", ".join(sorted(set(leaf_types))[:5])
        reason = f"no inline text/plain or text/html part (parts: {kinds})"
    else:
        reason = "the message has no body"
    result.warnings.append(f"no text body: {reason}")


def _snippet(text, length=200):
    collapsed = " ".join(text.split())
    if len(collapsed) <= length:
        return collapsed
    cut = collapsed[:length].rsplit(" ", 1)[0] if " " in collapsed[length - 40:length] else collapsed[:length]
    return cut + "…"


# --- HTML to text ----------------------------------------------------------------------------------

_HTML2TEXT_OPTIONS = {
    "body_width": 0,  # no re-wrapping: the viewer wraps, and wrapping is slow
    "unicode_snob": True,
    "images_to_alt": True,  # remote images are parked anyway; the alt text is what reads
    "ignore_tables": True,  # mail uses tables for layout; pipes everywhere read worse
    "skip_internal_links": True,
}
# Runs in a child interpreter: stdin gets 4-byte length + UTF-8 HTML, stdout answers with a
# status byte, 4-byte length and the UTF-8 text. The memory cap stops a runaway from taking the host.
_WORKER_SOURCE = r"""
import json, struct, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
except Exception:
    pass
import html2text
options = json.loads(sys.argv[1])
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    markup = stdin.read(struct.unpack(">I", head)[0]).decode("utf-8", "replace")
    try:
        converter = html2text.HTML2Text()
        for name, value in options.items():
            setattr(converter, name, value)
        status, text = b"+", converter.handle(markup)
    except Exception as exc:
        status, text = b"-", "%s: %s" % (type(exc).__name__, exc)
    data = text.encode("utf-8", "replace")
    stdout.write(status + struct.pack(">I", len(data)) + data)
    stdout.flush()
"""


class _Html2TextWorker:
    """One long-lived child interpreter running html2text; killed and replaced when it overruns.

    html2text can spin forever on some HTML (Alir3z4/html2text#420, #341) and a pure-Python loop
    cannot be interrupted from another thread, so the only hard limit is a process boundary.
    Keeping the child alive costs a pipe round trip per message instead of an interpreter start.
    """

    def __init__(self, source=_WORKER_SOURCE):
        self._source = source
        self._process = None
        self._pid = None
        self._lock = threading.Lock()

    def convert(self, markup, timeout):
        """Return html2text's output; raise TimeoutError on overrun, RuntimeError on failure."""
        data = markup.encode("utf-8", "replace")
        with self._lock:
            process = self._running()
            deadline = time.monotonic() + timeout
            try:
                _write_all(process.stdin.fileno(), struct.pack(">I", len(data)) + data)
                head = _read_exactly(process.stdout.fileno(), 5, deadline)
                body = _read_exactly(process.stdout.fileno(), struct.unpack(">I", head[1:])[0], deadline)
            except BaseException:
                self._stop()
                raise
        text = body.decode("utf-8", "replace")
        if head[:1] != b"+":
            raise RuntimeError(text[:200])
        return text

    def _running(self):
        if self._process is not None and (self._pid != os.getpid() or self._process.poll() is not None):
            self._process = None
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", self._source, json.dumps(_HTML2TEXT_OPTIONS)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            )
            self._pid = os.getpid()
        return self._process

    def _stop(self):
        process, self._process = self._process, None
        if process is None or self._pid != os.getpid():
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()

    def close(self):
        """Let the child finish on end-of-input; used at interpreter exit."""
        with self._lock:
            process, self._process = self._process, None
        if process is None or self._pid != os.getpid():
            return
        process.stdin.close()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _forget_after_fork(self):
        # A forked child must not talk to its parent's worker, nor wait on a lock held at fork
        # time; closing its copies of the pipes lets the worker see EOF when the parent goes.
        process, self._process = self._process, None
        self._lock = threading.Lock()
        for stream in (process.stdin, process.stdout) if process else ():
            try:
                stream.close()
            except OSError:
                pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd, size, deadline):
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks, remaining = [], size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not poller.poll(wait * 1000):
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise RuntimeError("html2text worker exited")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


_WORKER = _Html2TextWorker()
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _WORKER._forget_after_fork())


def html_to_markdown(markup, timeout=DEFAULT_LIMITS.html_to_text_seconds,
                     max_chars=DEFAULT_LIMITS.html_to_text_max_chars):
    """html2text output for `markup` under a hard time limit. Returns (text, problem or None)."""
    if timeout <= 0:
        return strip_tags(markup), "html2text disabled; text from tag stripping"
    if len(markup) > max_chars:
        return strip_tags(markup), (f"HTML body has {len(markup):,} characters, over the {max_chars:,} "
                                    "html2text limit; text from tag stripping")
    try:
        text = _WORKER.convert(markup, timeout)
    except TimeoutError:
        return strip_tags(markup), f"html2text timed out after {timeout:g}s; text from tag stripping"
    except Exception as exc:  # the child crashed, could not start, or html2text raised
        return strip_tags(markup), f"html2text failed ({type(exc).__name__}); text from tag stripping"
    # Deeply nested lists make html2text indent quadratically: 90 KB of HTML gave 25 MB of text.
    if len(text) > 2 * len(markup) + 10_000:
        return strip_tags(markup), "html2text output ballooned; text from tag stripping"
    return text, None


_BLOCK_END = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6]|/table|/blockquote|hr)\b[^>]*>", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def strip_tags(markup):
    """Plain text from HTML without html2text: block ends become line breaks, tags go."""
    text = html.unescape(nh3.clean(_BLOCK_END.sub("\n", markup), tags=set()))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# --- Small helpers ---------------------------------------------------------------------------------

def _clean(text):
    """Text safe for any database column: no NULs, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _has_surrogates(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _size(n):
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


_MAX_WARNINGS = 50


def _tidy_warnings(warnings):
    unique = list(dict.fromkeys(_clean(w)[:300] for w in warnings))
    if len(unique) > _MAX_WARNINGS:
        unique = unique[:_MAX_WARNINGS - 1] + [f"{len(unique) - _MAX_WARNINGS + 1} more warnings not shown"]
    return unique
