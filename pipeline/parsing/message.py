"""parse_message, the parser's one entry point, and its crash boundary.

Below this boundary every place known to fail on real mail falls back and leaves a warning; an
exception that still reaches parse_message's catch-all is a parser bug. It is logged at the
"pipeline.parsing" logger and counted (crash_count), so tests can assert no input reaches it.
"""

from __future__ import annotations

import logging

from . import bodies, headers, parts, structure
from .result import DEFAULT_LIMITS, Limits, ParsedMessage
from .text import clean

crash_log = logging.getLogger("pipeline.parsing")
_crashes = 0
_MAX_WARNINGS = 50


def crash_count() -> int:
    """How many parse_message calls in this process have reached the catch-all so far."""
    return _crashes


def parse_message(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse raw message bytes into a ParsedMessage; problems become `warnings`, never exceptions."""
    global _crashes
    result = ParsedMessage()
    try:
        _parse(_as_bytes(raw), limits, result)
    except Exception as exc:  # The contract is a result for any bytes; the bug is logged and counted.
        _crashes += 1
        crash_log.exception("parse_message failed; returning a partial result")
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
    msg, parsed_body = structure.parse_bytes(raw, limits, warnings)
    headers.read_headers(msg, result)
    found, leaf_types = [], []
    if parsed_body:
        linesep = "\r\n" if b"\r\n" in raw[:4096] else "\n"
        found, leaf_types = parts.read_parts(msg, limits, result, linesep)
    bodies.explain_missing_text(result, parsed_body, found, leaf_types)
    result.snippet = bodies.snippet(result.text_body)


def _tidy_warnings(warnings):
    unique = list(dict.fromkeys(clean(w)[:300] for w in warnings))
    if len(unique) > _MAX_WARNINGS:
        unique = unique[:_MAX_WARNINGS - 1] + [f"{len(unique) - _MAX_WARNINGS + 1} more warnings not shown"]
    return unique
