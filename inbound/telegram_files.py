"""Photos and files sent to a Telegram bot, downloaded while its webhook call is answered.

A Telegram update only names its files (file_id); the bytes come from the Bot API: getFile gives
a file_path, then GET {api_base}/file/bot<token>/<file_path>. That needs the bot token, an
optional secret of the channel; without it, or when a download fails, the message still goes on
with a note saying what was not downloaded and why - a file is never a reason to lose the text.
All requests of one update share MAILGATE_WEBHOOK_MEDIA_SECONDS, so Telegram gets its answer in time.
"""

from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass
from urllib.parse import quote

from outgoing import http
from outgoing.errors import TransportError

DEFAULT_API_BASE = "https://api.telegram.org"
# The Bot API serves files up to 20 MB to bots; a bigger one could not be fetched anyway.
MAX_FILE_BYTES = 20 * 1024 * 1024
TIMEOUT = 15.0
MAX_FILES = 10

# Update fields that carry one file: field -> (label for notes, default content type).
FILE_FIELDS = {
    "photo": ("photo", "image/jpeg"), "document": ("document", "application/octet-stream"),
    "video": ("video", "video/mp4"), "voice": ("voice message", "audio/ogg"), "audio": ("audio", "audio/mpeg"),
    "animation": ("animation", "video/mp4"), "video_note": ("video message", "video/mp4"),
    "sticker": ("sticker", "image/webp"),
}


@dataclass
class File:
    field: str
    file_id: str
    name: str
    content_type: str

    @property
    def label(self) -> str:
        return FILE_FIELDS[self.field][0]


def files_of(tg: dict) -> list[File]:
    """The files a Telegram message carries (for a photo, its largest size)."""
    found = []
    for field, (_, default_type) in FILE_FIELDS.items():
        value = tg.get(field)
        if field == "photo" and isinstance(value, list):
            value = value[-1] if value else None  # sizes come smallest first
        if not isinstance(value, dict) or not isinstance(value.get("file_id"), str):
            continue
        unique = str(value.get("file_unique_id") or value["file_id"])[:40]
        name = posixpath.basename(str(value.get("file_name") or "")) or f"{field}-{unique}"
        content_type = str(value.get("mime_type") or "") or mimetypes.guess_type(name)[0] or default_type
        if "." not in name:
            name += mimetypes.guess_extension(content_type) or ""
        found.append(File(field, value["file_id"], name, content_type))
    return found[:MAX_FILES]


def download(api_base: str, bot_token: str, file: File, budget: http.TimeBudget) -> bytes:
    """The file's bytes; TransportError (naming the host, never the token-bearing URL) if not."""
    base = (api_base or DEFAULT_API_BASE).rstrip("/")
    answer = http.post_json(f"{base}/bot{bot_token}/getFile", {"file_id": file.file_id},
                            timeout=budget.timeout(TIMEOUT)).json()
    result = answer.get("result") if isinstance(answer, dict) else None
    path = result.get("file_path") if isinstance(result, dict) else None
    if not isinstance(path, str) or not path:
        raise TransportError("getFile answered without a file_path", permanent=True)
    size = result.get("file_size")
    if isinstance(size, int) and size > MAX_FILE_BYTES:
        raise TransportError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB", permanent=True)
    return http.get_file(f"{base}/file/bot{bot_token}/{quote(path)}", {"Accept": "*/*"},
                         max_bytes=MAX_FILE_BYTES, timeout=budget.timeout(TIMEOUT))


def fetch_all(channel, tg: dict, bot_token: str) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(attachments as (filename, content type, bytes), notes for the text) for one message."""
    attachments, notes = [], []
    budget = http.webhook_media_budget()
    for file in files_of(tg):
        if not bot_token:
            notes.append(f"[{file.label}: {file.name}; not downloaded: the channel has no bot token]")
            continue
        try:
            data = download((channel.config or {}).get("api_base", ""), bot_token, file, budget)
        except TransportError as exc:
            notes.append(f"[{file.label}: {file.name}; not downloaded: {exc.message}]")
            continue
        attachments.append((file.name, file.content_type, data))
        notes.append(f"[{file.label} attached: {file.name}]")
    return attachments, notes
