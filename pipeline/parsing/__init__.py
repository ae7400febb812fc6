"""Raw RFC 822 bytes in, one ParsedMessage out: never an exception, a warning instead.

The stdlib does the work wherever it copes; each place where it is known to fail on real mail
falls back to a plainer decoding and records a short, human-readable warning. Read in data order:

    message.py        parse_message, the entry point, and its crash boundary (crash_count)
    structure.py      bytes -> email.message.Message under the Limits, and the MIME walk
    headers.py        header fields, read once (None when absent), RFC 2047 decoding
    charsets.py       bytes of a declared, wrong or missing charset -> text
    parts.py          MIME leaves -> body texts and attachments (.eml for attached messages)
    bodies.py         which texts become text_body / html_body / markdown_body, uuencode, snippet
    html_text.py      HTML -> markdown via html2text_child.py under a time limit; tag stripping
    html_nesting.py   HTML rebuilt with bounded nesting (linear), before the sanitizer sees it
    sanitize.py       HTML made safe to show in mailgate's pages
    filenames.py      attachment names safe to show, store and download
    result.py         ParsedMessage, ParsedAttachment, Limits
"""

from .headers import decode_header_text
from .html_text import html_to_markdown, strip_tags
from .message import crash_count, parse_message
from .result import DEFAULT_LIMITS, HEADERS_OF_INTEREST, Limits, ParsedAttachment, ParsedMessage

__all__ = [
    "DEFAULT_LIMITS", "HEADERS_OF_INTEREST", "Limits", "ParsedAttachment", "ParsedMessage", "crash_count",
    "decode_header_text", "html_to_markdown", "parse_message", "strip_tags",
]
