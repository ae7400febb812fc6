"""MIME leaves to body texts and attachments.

Each leaf of the walk (structure.walk) is either a body a mail client shows without a click
(inline text/plain or text/html) or an attachment; attached messages become .eml files, and a
message whose only text is inside a forwarded message or a bounce shows that text.
"""

from __future__ import annotations

import binascii
import io
import re
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import Message

from .bodies import fill_bodies
from .charsets import b64decode_loosely, decode_8bit, decode_bytes
from .filenames import fallback_filename, safe_filename
from .headers import charset, decode_header_text, disposition, raw_header
from .result import ParsedAttachment
from .structure import STRUCTURE_POLICY, parse_structure, record_defects, walk
from .text import clean

_BODY_TYPES = ("text/plain", "text/html")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([\w.:-]{1,40})""", re.IGNORECASE)


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


def read_parts(msg, limits, result, linesep):
    """Fill bodies and attachments from the MIME tree. Returns (bodies, leaf content types)."""
    leaves = list(_leaves(msg, limits, result.warnings))
    bodies = _bodies(leaves, result.warnings)
    result.attachments.extend(_attachment(leaf, linesep, result.warnings) for leaf in leaves if not leaf.is_body)
    if not any(b.text.strip() for b in bodies):
        bodies = _bodies_of_attached_message(leaves, limits, result) or bodies
    fill_bodies(bodies, limits, result)
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
        inner = parse_structure(eml.payload, limits, [])
        bodies = _bodies(list(_leaves(inner, limits, [])), [])
    except Exception:  # RecursionError, mostly; the .eml attachment is still there
        return []
    if not any(b.text.strip() for b in bodies):
        return []
    result.warnings.append(f"no text of its own; text body taken from the attached message in part {leaf.number}")
    return bodies


def _leaves(msg, limits, warnings):
    for number, part, ctype, alternative, too_deep in walk(msg, limits, warnings):
        record_defects(part, number, warnings)
        if ctype.startswith("multipart/"):
            if isinstance(part.get_payload(), list):
                continue
            ctype = "text/plain"  # No boundary: the stdlib kept the body as text. Show it, not lose it.
        yield _Leaf(number, part, ctype, alternative, too_deep, disposition(part), _filename(part, warnings))


def _bodies(leaves, warnings):
    chosen = [leaf for leaf in leaves if leaf.is_body] or [leaf for leaf in leaves if leaf.is_fallback_body]
    return [_Body("text/html" if leaf.content_type == "text/html" else "text/plain", leaf.alternative,
                  _part_text(leaf.part, leaf.content_type, leaf.number, warnings)) for leaf in chosen]


def _filename(part, warnings):
    """Decoded filename (RFC 2231 or RFC 2047 or raw 8-bit), or None."""
    try:
        name = part.get_filename()  # RFC 2231 (charset, continuations) is handled in there
    except Exception:
        return None
    if not name or not str(name).strip():
        return None
    return clean(decode_header_text(str(name), warnings.append, "a filename")).strip()


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
    label = charset(part)
    if not label and ctype == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        label = meta.group(1).decode("ascii").lower() if meta else None
    text, problem = decode_bytes(data, label, f"part {number}")
    if problem:
        warnings.append(problem)
    return clean(text).replace("\r\n", "\n").replace("\r", "\n")


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
    content_id = clean(decode_8bit(raw_header(part, "content-id"))[0]).strip().strip("<>").strip()[:500]
    return ParsedAttachment.of(safe_filename(filename, fallback), ctype, payload,
                               is_inline=bool(content_id) and leaf.disposition != "attachment", content_id=content_id)


def _attached_subject(part):
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        subject = clean(decode_header_text(raw_header(inner[0], "subject"))).strip()
        # A subject is no path: "a/b" must not lose its "a/" to safe_filename's basename rule.
        return f"{subject[:140]}.eml".replace("/", "_").replace("\\", "_") if subject else ""
    return ""


def _message_bytes(part, number, linesep, warnings):
    """Bytes of an attached message (message/rfc822, delivery-status, ...)."""
    inner = part.get_payload()
    if not isinstance(inner, list):
        return _payload_bytes(part)
    data = b"".join(_serialize(m, linesep, number, warnings) for m in inner if isinstance(m, Message))
    cte = raw_header(part, "content-transfer-encoding").strip().lower()
    # Not allowed for message/*, yet sent: the parser took the encoded text for a message
    # (base64 lines have no colon, so a headerless one); decoding its re-serialization undoes that.
    if cte == "base64":
        data = b64decode_loosely(data)
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(data)
    return data


def _serialize(message, linesep, number, warnings):
    buffer = io.BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=STRUCTURE_POLICY.clone(linesep=linesep)).flatten(message)
        return buffer.getvalue()
    except Exception as exc:  # RecursionError on deep nesting, or a header the generator rejects
        warnings.append(f"{type(exc).__name__} re-serializing the attached message in part {number}; "
                        "kept its headers only")
        return "".join(f"{k}: {v}{linesep}" for k, v in message.raw_items()).encode("utf-8", "surrogateescape")
