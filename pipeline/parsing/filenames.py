"""Attachment names that are safe to show, to store and to offer as a download name.

A name from a message is attacker-controlled: it may carry directories (`../../etc/passwd`),
control or bidi characters (`invoice\u202egpj.exe` displays as `invoiceexe.jpg`), Windows device
names that hang or misbehave when saved (`CON.txt`), or be thousands of characters long.
"""

import mimetypes
import re
import unicodedata

MAX_CHARS = 150
# Most filesystems cap a name at 255 bytes; 150 characters of CJK text would be 450 bytes.
MAX_BYTES = 255
_MAX_EXTENSION = 16

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", "clock$", "conin$", "conout$"} | {
    f"{stem}{n}" for stem in ("com", "lpt") for n in "0123456789¹²³"
}
# Characters Windows refuses in a name, plus the path separators of every platform.
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
_DOTS = re.compile(r"\.{2,}")
_SPACES = re.compile(r"\s+")
_EXTENSION_OVERRIDES = {
    "message/rfc822": ".eml", "message/delivery-status": ".txt", "message/disposition-notification": ".txt",
    "text/plain": ".txt", "application/octet-stream": ".bin", "application/ms-tnef": ".dat",
}


def safe_filename(name, fallback="attachment.bin"):
    """Return `name` reduced to a harmless file name, or `fallback` when nothing usable is left."""
    cleaned = _clean(name) if isinstance(name, str) else ""
    if cleaned:
        return cleaned
    return _clean(fallback) or "attachment.bin"


def fallback_filename(position, content_type):
    """A made-up name such as `attachment-3.pdf` for a part that carries none."""
    content_type = (content_type or "").lower()
    extension = _EXTENSION_OVERRIDES.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment-{position}{extension}"


def _clean(name):
    name = unicodedata.normalize("NFC", name)
    # Keep only the last path component, whichever separator the sender's system used.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Cc: control characters; Cf: bidi overrides and zero-width characters that disguise the
    # real extension; Cs: lone surrogates from undecodable bytes.
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = _FORBIDDEN.sub("_", name)
    name = _DOTS.sub(".", name)
    name = _SPACES.sub(" ", name)
    # Leading dots hide files on Unix; Windows silently drops trailing dots and spaces.
    name = name.strip(" .")
    if not name:
        return ""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION or " " in extension:
        stem, extension = name, ""
    if stem.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        stem = "_" + stem
    return _shorten(stem, "." + extension if extension else "")


def _shorten(stem, extension):
    """Cut the stem, never the extension, to fit both the character and the byte budget."""
    stem = stem[: max(1, MAX_CHARS - len(extension))]
    while stem and len((stem + extension).encode("utf-8")) > MAX_BYTES:
        stem = stem[:-1]
    return (stem.rstrip(" .") or "_") + extension
