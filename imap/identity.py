"""The identity of a message within an account: how sync and import recognise the same message.

The same message in two folders (or re-appended after a folder was recreated) must map to ONE
pipeline.Message, while two different messages that reuse one Message-ID (mailing-list software,
broken mailers - the project's corpus has some) must not be merged:

  * Gmail (X-GM-EXT-1): "gm:<X-GM-MSGID>" - Google's own id, stable across labels;
  * with a Message-ID:  "mid:<Message-ID>:<first 16 hex of the content digest>";
  * without one:        "hdr:<content digest>".

The content digest is sha256 over the header block, the size and the first BODY_PREFIX bytes of
the body, all in the CRLF form IMAP servers store and report (RFC822.SIZE, BODY[TEXT]<0.n>), so sync
gets it in phase 1 without downloading bodies. The header block alone is not enough: parser test
suites, and some mailers, send different bodies under byte-identical headers (59 of the 446 corpus
files share a header block with another file). Byte-identical messages (modulo line endings) get
one identity: they are the same message. Line endings are normalised, so an .eml file with bare
LF gets the identity of the same message fetched over IMAP.
"""

from __future__ import annotations

import hashlib
import re

MAX_IDENTITY = 500  # pipeline.Message.identity max_length
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


BODY_PREFIX = 1024
_LINE_END = re.compile(rb"\r?\n")


def to_crlf(raw: bytes) -> bytes:
    return _LINE_END.sub(b"\r\n", raw)


def header_block(raw: bytes) -> bytes:
    """The header section of a message (or of a BODY[HEADER] response), normalised to LF."""
    text = raw.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    if end >= 0:
        text = text[:end]
    elif text.startswith(b"\n"):  # no headers at all
        text = b""
    return text.rstrip(b"\n")


def split_raw(raw: bytes) -> tuple[bytes, int, bytes]:
    """(header block, CRLF size, CRLF body prefix) of complete raw bytes."""
    crlf = to_crlf(raw)
    end = crlf.find(b"\r\n\r\n")
    body = crlf[end + 4:] if end >= 0 else b""
    return crlf[:end] if end >= 0 else crlf, len(crlf), body[:BODY_PREFIX]


def content_digest(header: bytes, size: int, body_prefix: bytes = b"") -> str:
    material = b"\0".join([header_block(header), str(int(size)).encode(),
                           to_crlf(body_prefix)[:BODY_PREFIX]])
    return hashlib.sha256(material).hexdigest()


def message_id(raw: bytes) -> str:
    """The Message-ID without angle brackets or folding whitespace, or "" if there is none."""
    match = _MESSAGE_ID.search(header_block(raw))
    if not match:
        return ""
    value = re.sub(rb"\s+", b"", match.group(1)).decode("utf-8", "replace")
    return value.strip("<>").strip()


def identity(header: bytes, *, size: int, body_prefix: bytes = b"", gm_msgid: int | None = None) -> str:
    """The account-wide identity from what phase 1 of sync fetches: BODY[HEADER], RFC822.SIZE,
    BODY[TEXT]<0.BODY_PREFIX> (and X-GM-MSGID on Gmail)."""
    if gm_msgid is not None:
        return f"gm:{gm_msgid}"
    digest = content_digest(header, size, body_prefix)
    mid = message_id(header)
    if not mid:
        return f"hdr:{digest}"
    tail = f":{digest[:16]}"
    if len("mid:") + len(mid) + len(tail) > MAX_IDENTITY:
        # Absurdly long Message-IDs (seen in spam) are replaced by their hash to fit the column.
        mid = "sha256=" + hashlib.sha256(mid.encode()).hexdigest()
    return f"mid:{mid}{tail}"


def identity_of_raw(raw: bytes, *, gm_msgid: int | None = None) -> str:
    """The identity of complete raw bytes (import, tests): equal to what sync computes for them."""
    header, size, prefix = split_raw(raw)
    return identity(header, size=size, body_prefix=prefix, gm_msgid=gm_msgid)
