"""Small text helpers every parser module uses: text safe to store, unfolding, sizes in warnings."""

import re

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def unfold(value):
    return LINE_BREAK.sub("", value)


def has_surrogates(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lossy(text):
    """True when the stdlib kept undecodable bytes (surrogates) or replaced them (U+FFFD)."""
    return "\ufffd" in text or has_surrogates(text)


def clean(text):
    """Text safe for any database column: no NULs, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if has_surrogates(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def size(n):
    """A byte count as a warning shows it: "812 bytes", "3.5 KiB", "51.2 MiB"."""
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
