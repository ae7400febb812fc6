"""The message's text: which body parts count, HTML made safe and turned into markdown, uuencoded
files pulled out of plain text, and a sentence when there is no text at all."""

import binascii
import mimetypes
import re

from .filenames import fallback_filename, safe_filename
from .html_text import defuse_markdown, html_to_markdown
from .result import ParsedAttachment
from .sanitize import sanitize_html


def fill_bodies(bodies, limits, result):
    """Set text_body, html_body and markdown_body from the chosen body parts."""
    plain = _first_per_alternative(b for b in bodies if b.content_type == "text/plain")
    markup = _first_per_alternative(b for b in bodies if b.content_type == "text/html")
    text = "\n\n".join(b.text for b in plain if b.text.strip())
    text, uuencoded = _extract_uuencoded(text)
    for name, data in uuencoded:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        filename = safe_filename(name, fallback_filename(len(result.attachments) + 1, ctype))
        result.attachments.append(ParsedAttachment.of(filename, ctype, data))
    result.text_body = text
    result.html_body = sanitize_html("\n".join(b.text for b in markup), limits.max_html_depth,
                                     result.warnings.append)
    if result.html_body.strip():
        converted, problem = html_to_markdown(result.html_body, limits.html_to_text_seconds,
                                              limits.html_to_text_max_chars)
        if problem:
            result.warnings.append(problem)
        result.markdown_body = defuse_markdown(converted).strip()
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


_ENCRYPTED_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"}


def explain_missing_text(result, parsed_body, bodies, leaf_types):
    """Add a "no text body: <reason>" warning when the message ended up without text."""
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


def snippet(text, length=200):
    """The first `length` characters of `text` on one line, cut at a word where one is near."""
    collapsed = " ".join(text.split())
    if len(collapsed) <= length:
        return collapsed
    cut = collapsed[:length].rsplit(" ", 1)[0] if " " in collapsed[length - 40:length] else collapsed[:length]
    return cut + "…"
