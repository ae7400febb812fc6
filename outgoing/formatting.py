"""The standard message, formatted for each medium from one small template language.

A template is Python format fields plus `**bold**`:

    **{sender} via {source}:**
    {subject}

    {text}

Every medium gets the same plain text; only bold and escaping differ (Telegram MarkdownV2 escapes
its 18 special characters, Slack escapes &<>, SMS and email drop the markers). Rendering goes
through "runs" of (text, bold) so that a long message can be split at any character without
cutting an escape sequence or leaving a bold span open.
"""

from __future__ import annotations

import re
import string
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

from mailgate import storage
from outgoing.errors import TransportError

FIELDS = {
    "sender": "the sender's name, else address",
    "sender_name": "the sender's display name",
    "sender_address": "the sender's address",
    "source": "the mailbox or channel it came from",
    "subject": "the subject",
    "text": "the message text",
    "snippet": "the first characters of the text",
    "date": "when it was sent (ISO 8601)",
}
CHAT_TEMPLATE = "**{sender} via {source}:**\n{subject}\n\n{text}"
SMS_TEMPLATE = "{sender} via {source}: {subject}\n{text}"
EMAIL_TEMPLATE = "{text}"
TRUNCATION_NOTE = "[truncated: {n} more characters]"
ATTACHMENT_LINK_SALT = "outgoing.attachment-link"

Run = tuple[str, bool]
# Widths and precisions in format specs ("{sender:>20}", "{subject:.80}") are for layout: a few
# hundred at most. "{text:>300000000}" would allocate that many characters on save and again on
# every send, so a number above this in a spec is refused when the template is checked and when
# it is rendered.
MAX_FORMAT_WIDTH = 1000
_SPEC_NUMBER = re.compile(r"\d+")


class _Formatter(string.Formatter):
    """Plain names only: `{text.__class__}` or `{text[0]}` would reach into Python objects."""

    def get_field(self, field_name, args, kwargs):
        if field_name not in FIELDS:
            raise KeyError(field_name)
        return kwargs[field_name], field_name

    def format_field(self, value, format_spec):
        # Every digit run of a spec is a fill, a width or a precision: bound them all.
        if any(len(n) > 6 or int(n) > MAX_FORMAT_WIDTH for n in _SPEC_NUMBER.findall(format_spec)):
            raise ValueError(f"a format width or precision above {MAX_FORMAT_WIDTH}")
        return super().format_field(value, format_spec)


_formatter = _Formatter()


def template_error(template) -> str | None:
    """Why a template cannot be used, or None."""
    if not isinstance(template, str) or not template.strip():
        return "must be a non-empty string"
    try:
        fields = [(name, spec) for _, name, spec, _ in _formatter.parse(template) if name is not None]
    except ValueError as exc:
        return f"{exc} (write {{{{ and }}}} for literal braces)"
    names = [name for name, _ in fields]
    if any("{" in (spec or "") for _, spec in fields):
        # "{text:>{sender}}" would take its width from the message: it could not be checked here.
        return "a format spec cannot contain another field"
    unknown = sorted({n for n in names if n not in FIELDS})
    if unknown:
        return f"unknown field {{{unknown[0]}}}; known: {', '.join('{%s}' % f for f in FIELDS)}"
    try:
        _formatter.vformat(template, (), {k: "" for k in FIELDS})
    except (ValueError, KeyError, IndexError) as exc:
        return str(exc)
    return None


def context(message) -> dict[str, str]:
    """Template values for a pipeline.Message."""
    text = message.text_body or message.markdown_body or ""
    text = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if getattr(message, "source_label", ""):
        source = message.source_label
    elif message.account_id:
        source = message.account.display_name or message.account.email
    elif message.channel_id:
        source = message.channel.name
    else:
        source = message.get_source_display()
    return {
        "sender": message.sender_name or message.sender_address or "unknown sender",
        "sender_name": message.sender_name or "",
        "sender_address": message.sender_address or "",
        "source": source,
        "subject": message.subject or "",
        "text": text,
        "snippet": message.snippet or text[:200],
        "date": message.date.isoformat() if message.date else "",
    }


def runs(template: str, values: dict[str, str]) -> list[Run]:
    """The template filled in, as (text, bold) runs, tidied: no empty runs, no more than one blank
    line in a row, no leading or trailing whitespace, whitespace moved out of bold runs."""
    out: list[Run] = []
    for index, segment in enumerate(template.split("**")):
        try:
            text = _formatter.vformat(segment, (), values)
        except ValueError as exc:  # a template saved before its checks were as strict as now
            raise TransportError(f"config.template: {exc}", permanent=True) from None
        bold = index % 2 == 1
        if bold:
            stripped = text.strip()
            lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            out += [(lead, False), (stripped, True), (trail, False)]
        else:
            out.append((text, False))
    return _tidy(out)


def _tidy(raw: list[Run]) -> list[Run]:
    out: list[Run] = []
    trailing_newlines = 0
    for text, bold in raw:
        text = re.sub(r"\n{3,}", "\n\n", text)
        if not out:
            text = text.lstrip()
        lead = len(text) - len(text.lstrip("\n"))
        if lead and trailing_newlines + lead > 2:
            text = "\n" * max(0, 2 - trailing_newlines) + text.lstrip("\n")
        if not text:
            continue
        if text.strip("\n") == "":
            trailing_newlines += len(text)
        else:
            trailing_newlines = len(text) - len(text.rstrip("\n"))
        if out and out[-1][1] == bold:
            out[-1] = (out[-1][0] + text, bold)
        else:
            out.append((text, bold))
    while out and not out[-1][0].rstrip():
        out.pop()
    if out:
        out[-1] = (out[-1][0].rstrip(), out[-1][1])
    return out


def plain(parts: list[Run]) -> str:
    return "".join(text for text, _ in parts)


def utf16_len(text: str) -> int:
    """Telegram and Twilio count UTF-16 code units: an emoji is two."""
    return len(text.encode("utf-16-le")) // 2


def split_runs(parts: list[Run], *, limit: int, measure: Callable[[Run], int], max_parts: int,
               note: str = TRUNCATION_NOTE) -> list[list[Run]]:
    """Cut runs into at most `max_parts` pieces of at most `limit` (as `measure` counts a run),
    preferring line breaks, then spaces. When even that is not enough, the last piece ends with
    the truncation note saying how many characters were left out."""
    queue = deque((t, b) for t, b in parts if t)
    pieces: list[list[Run]] = []
    while queue:
        last = len(pieces) + 1 >= max_parts
        budget = limit
        if last and sum(measure(r) for r in queue) > limit:
            budget = limit - measure(("\n" + note.format(n=10 ** 9), False))
        piece, used = [], 0
        while queue:
            run = queue[0]
            cost = measure(run)
            if used + cost <= budget:
                piece.append(queue.popleft())
                used += cost
                continue
            cut = _fit(run, budget - used, measure)
            if cut == 0 and not piece:
                cut = 1  # a budget too small for anything still makes progress
            if cut:
                piece.append((run[0][:cut].rstrip() or run[0][:cut], run[1]))
                rest = run[0][cut:].lstrip(" \n")
                if rest:
                    queue[0] = (rest, run[1])
                else:
                    queue.popleft()
            break
        if last and queue:
            left = sum(len(t) for t, _ in queue)
            piece.append(("\n" + note.format(n=left), False))
            queue.clear()
        pieces.append(piece)
    return pieces


def _fit(run: Run, room: int, measure) -> int:
    """The longest prefix of the run that fits in `room`, cut at a line break or space if one is
    in its second half."""
    text, bold = run
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if measure((text[:mid], bold)) <= room:
            low = mid
        else:
            high = mid - 1
    if low == len(text) or low == 0:
        return low
    for sep in ("\n", " "):
        at = text.rfind(sep, 0, low)
        if at >= low // 2:
            return at + 1
    return low


# ------------------------------------------------------------------ media


TELEGRAM_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
DISCORD_SPECIAL = re.compile(r"([\\*_~`|>])")


def telegram_escape(text: str) -> str:
    """MarkdownV2: every one of _*[]()~`>#+-=|{}.! and \\ is escaped with a backslash."""
    return TELEGRAM_SPECIAL.sub(r"\\\1", text)


def render_telegram(parts: list[Run]) -> str:
    return "".join(f"*{telegram_escape(t)}*" if b else telegram_escape(t) for t, b in parts)


def discord_escape(text: str) -> str:
    # Mail text is not Markdown: a stray * or _ must not restyle the rest of the message.
    return DISCORD_SPECIAL.sub(r"\\\1", text)


def render_discord(parts: list[Run]) -> str:
    return "".join(f"**{discord_escape(t)}**" if b else discord_escape(t) for t, b in parts)


def slack_escape(text: str) -> str:
    # Slack's three control characters; everything else is literal in mrkdwn text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(parts: list[Run]) -> str:
    return "".join(f"*{slack_escape(t)}*" if b else slack_escape(t) for t, b in parts)


# ------------------------------------------------------------------ attachments


def attachments_of(message) -> list:
    # The admin's test sample (outgoing.sending.SampleMessage) is not a stored message: it has none.
    stored = getattr(message, "attachments", None)
    return list(stored.all()) if stored is not None and message.pk else []


def attachment_url(attachment) -> str:
    """A public, signed, expiring link to download an attachment (served by frontend/links.py;
    the composition root, mailgate/urls.py, names the route)."""
    token = signing.TimestampSigner(salt=ATTACHMENT_LINK_SALT).sign(str(attachment.pk))
    path = reverse("attachment_link", args=[token])
    return settings.MAILGATE_PUBLIC_BASE_URL.rstrip("/") + path


def attachment_link_target(token: str) -> str | None:
    """The attachment id a link made by attachment_url() names, or None when the token is forged
    or older than MAILGATE_ATTACHMENT_LINK_DAYS."""
    try:
        return signing.TimestampSigner(salt=ATTACHMENT_LINK_SALT).unsign(
            token, max_age=timedelta(days=settings.MAILGATE_ATTACHMENT_LINK_DAYS))
    except signing.BadSignature:  # expired links too (SignatureExpired is a BadSignature)
        return None


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} MB"


def attachment_lines(attachments) -> str:
    """Attachments as links, for media that cannot carry files (SMS, Slack) or files too big."""
    if not attachments:
        return ""
    lines = [f"- {a.filename} ({human_size(a.size)}): {attachment_url(a)}" for a in attachments]
    return "Attachments:\n" + "\n".join(lines)


def with_links(parts: list[Run], attachments) -> list[Run]:
    links = attachment_lines(attachments)
    return parts + [("\n\n" + links, False)] if links else parts


def read_attachment(attachment) -> bytes:
    return storage.read_bytes(attachment.file.name)
