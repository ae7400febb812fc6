"""Bytes of a declared, wrong or missing charset to text, with a sentence when it was lossy.

Real mail names charsets Python does not know ("ks_c_5601-1987", "x-mac-roman"), wraps them
in junk, labels Windows-1252 as Latin-1 or ASCII, and puts raw 8-bit bytes in headers. Each of
these decodes to the closest honest text here instead of raising LookupError.
"""

import base64
import binascii
import codecs
import functools
import re

from .text import has_surrogates

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


def decode_bytes(data, charset, where):
    """Decode body or encoded-word bytes. Returns (text, problem sentence or None)."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in _GUESS_LABELS:
        return guess_decode(data)[0], None
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
        text, used = (data.decode(codec, "replace"), word.group()) if codec else guess_decode(data)
        return text, f"unknown charset {label[:40]!r} in {where}; decoded as {used}"
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        return data.decode(codec, "replace"), f"bytes invalid in charset {label[:40]!r} in {where}; replaced"
    except Exception:  # codecs that reject error handlers or fail oddly (idna, punycode, ...)
        text, used = guess_decode(data)
        return text, f"charset {label[:40]!r} failed in {where}; decoded as {used}"


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_ASCII = bytes(range(128))


def guess_decode(data):
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


def decode_8bit(text):
    """Surrogate-escaped raw bytes -> text (see guess_decode). Returns (text, fallback used or None)."""
    if text.isascii() or not has_surrogates(text):
        return text, None
    decoded, used = guess_decode(text.encode("utf-8", "surrogateescape"))
    return decoded, (used if used != "utf-8" else None)


def b64decode_loosely(data):
    """Base64 as mailers really write it: stray characters skipped, padding optional."""
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:  # one stray character cannot be decoded; drop it
        data = data[:-1]
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return b""
