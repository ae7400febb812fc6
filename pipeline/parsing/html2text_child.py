"""The html2text child process: HTML requests on stdin, text answers on stdout, until EOF.

Started by html_text._Html2TextWorker as a script (`python -P <this file>`) and never imported
by the parser itself, so it loads html2text and nothing else. The protocol: a request is a
4-byte big-endian length and that many bytes of UTF-8 HTML; an answer is a status byte (b"+"
converted, b"-" html2text raised), a 4-byte length and the UTF-8 text (or the error).
"""

import struct
import sys

import html2text

try:
    import resource
except ImportError:  # not on Windows; the parent's time limit still applies
    resource = None

# The address-space cap stops a runaway conversion from taking the host's memory with it.
MEMORY_LIMIT = 2 << 30

OPTIONS = {
    "body_width": 0,  # no re-wrapping: the viewer wraps, and wrapping is slow
    "unicode_snob": True,
    "images_to_alt": True,  # remote images are parked anyway; the alt text is what reads
    "ignore_tables": True,  # mail uses tables for layout; pipes everywhere read worse
    "skip_internal_links": True,
}


def html_to_text(markup):
    converter = html2text.HTML2Text()
    for name, value in OPTIONS.items():
        setattr(converter, name, value)
    return converter.handle(markup)


def serve(convert=html_to_text, stdin=None, stdout=None):
    """Answer requests with `convert` until the parent closes stdin."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        markup = stdin.read(struct.unpack(">I", head)[0]).decode("utf-8", "replace")
        try:
            status, text = b"+", convert(markup)
        except Exception as exc:  # a boundary: html2text's failure goes back to the parent as text
            status, text = b"-", f"{type(exc).__name__}: {exc}"
        data = text.encode("utf-8", "replace")
        stdout.write(status + struct.pack(">I", len(data)) + data)
        stdout.flush()


def limit_memory():
    if resource is None:
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a hard limit already below ours: keep it
        pass


if __name__ == "__main__":
    limit_memory()
    serve()
