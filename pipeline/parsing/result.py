"""What parsing gives back (ParsedMessage, ParsedAttachment) and the Limits it runs under."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Limits:
    max_parts: int = 500
    max_depth: int = 30
    # The feedparser stops reading past this depth (structure.BoundedParser): each level costs
    # every later line a generator frame. Deeper than max_depth, so that is a warning first.
    max_parse_depth: int = 100
    max_header_bytes: int = 256 * 1024
    max_total_bytes: int = 50 * 1024 * 1024
    # HTML is rebuilt with at most this many nested elements before nh3 (html_nesting.py).
    # Browsers stop nesting at 512; mail rarely passes 40.
    max_html_depth: int = 256
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

    @classmethod
    def of(cls, filename, content_type, payload, is_inline=False, content_id=""):
        """An attachment with its size and digest computed from `payload`."""
        return cls(filename=filename, content_type=content_type[:255], payload=payload, size=len(payload),
                   sha256=hashlib.sha256(payload).hexdigest(), is_inline=is_inline, content_id=content_id)


@dataclass
class ParsedMessage:
    """One parsed message. A field read straight from a header is None when the header is absent
    and "" when it is present but empty or unusable: an empty Return-Path marks a bounce, a
    missing one says nothing."""

    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    subject: str | None = None
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
    # The HEADERS_OF_INTEREST keys (None when absent) plus "content_type": the top part's effective
    # type with the parameters the header gave ("multipart/report; report-type=delivery-status"),
    # always a string. x_mailgate_relay joins every occurrence with ", " so a loop through several
    # hops shows.
    headers: dict[str, str | None] = field(
        default_factory=lambda: {**dict.fromkeys(HEADERS_OF_INTEREST), "content_type": ""})
    warnings: list[str] = field(default_factory=list)
