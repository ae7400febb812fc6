"""IMAP modified UTF-7 (RFC 3501 section 5.1.3): folder names on the wire.

Folder names are Unicode everywhere in mailgate (database, UI, settings) and encoded only when a
command is sent. Printable ASCII stands for itself except "&", which is "&-"; any run of other
characters is "&" + modified base64 ("," for "/", no padding) of its UTF-16BE bytes + "-".
Characters outside the BMP (emoji) become surrogate pairs through UTF-16, as the RFC requires.
"""

import base64
import binascii
import re


class Utf7Error(ValueError):
    """A folder name from the server is not valid modified UTF-7."""


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def encode(name: str) -> str:
    """Unicode folder name -> modified UTF-7 (ASCII)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


_SHIFTED = re.compile(r"&([^-]*)-")


def decode(wire: str | bytes) -> str:
    """Modified UTF-7 -> Unicode; raises Utf7Error on malformed input (an unterminated "&",
    bad base64 or an odd UTF-16 length) rather than guessing a name we could not send back."""
    if isinstance(wire, bytes):
        try:
            wire = wire.decode("ascii")
        except UnicodeDecodeError:
            # Some servers send raw UTF-8 names (RFC 6855 UTF8=ACCEPT); take them as they are.
            return wire.decode("utf-8", "replace")
    pos = 0
    out: list[str] = []
    while pos < len(wire):
        amp = wire.find("&", pos)
        if amp < 0:
            out.append(wire[pos:])
            break
        out.append(wire[pos:amp])
        match = _SHIFTED.match(wire, amp)
        if not match:
            raise Utf7Error(f"unterminated '&' in folder name {wire!r}")
        body = match.group(1)
        if not body:
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", body):
                raise Utf7Error(f"bad base64 in folder name {wire!r}")
            raw = body.replace(",", "/")
            raw += "=" * (-len(raw) % 4)
            try:
                data = base64.b64decode(raw, validate=True)
                out.append(data.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise Utf7Error(f"bad modified UTF-7 in folder name {wire!r}: {exc}") from None
        pos = match.end()
    return "".join(out)


def quote(name: str) -> str:
    """A Unicode folder name as an IMAP quoted string argument, ready for imaplib."""
    wire = encode(name)
    return '"' + wire.replace("\\", "\\\\").replace('"', '\\"') + '"'
