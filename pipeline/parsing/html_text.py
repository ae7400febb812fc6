"""HTML to readable text: html2text in a child process under a hard time limit, tag stripping
as the fallback, and markdown links with no javascript: or data: targets.

html2text can spin forever on some HTML (Alir3z4/html2text#420, #341) and a pure-Python loop
cannot be interrupted from another thread, so it runs in html2text_child.py, a separate
interpreter that is killed and replaced when it overruns (and capped in memory by itself).
"""

import atexit
import html
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import nh3

from .result import DEFAULT_LIMITS

CHILD_SCRIPT = str(Path(__file__).with_name("html2text_child.py"))
# -P: the script's folder is not put on sys.path, so no module in it can shadow the stdlib.
CHILD_COMMAND = [sys.executable, "-P", CHILD_SCRIPT]


class _Html2TextWorker:
    """One long-lived child interpreter running html2text; killed and replaced when it overruns.

    Keeping the child alive costs a pipe round trip per message instead of an interpreter start.
    """

    def __init__(self, command=CHILD_COMMAND):
        self._command = command
        self._process = None
        self._pid = None
        self._lock = threading.Lock()

    def convert(self, markup, timeout):
        """Return html2text's output; raise TimeoutError on overrun, RuntimeError on failure."""
        data = markup.encode("utf-8", "replace")
        with self._lock:
            process = self._running()
            deadline = time.monotonic() + timeout
            try:
                _write_all(process.stdin.fileno(), struct.pack(">I", len(data)) + data)
                head = _read_exactly(process.stdout.fileno(), 5, deadline)
                body = _read_exactly(process.stdout.fileno(), struct.unpack(">I", head[1:])[0], deadline)
            except BaseException:
                self._stop()
                raise
        text = body.decode("utf-8", "replace")
        if head[:1] != b"+":
            raise RuntimeError(text[:200])
        return text

    def _running(self):
        if self._process is not None and (self._pid != os.getpid() or self._process.poll() is not None):
            self._process = None
        if self._process is None:
            self._process = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
            )
            self._pid = os.getpid()
        return self._process

    def _stop(self):
        process, self._process = self._process, None
        if process is None or self._pid != os.getpid():
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()

    def close(self):
        """Let the child finish on end-of-input; used at interpreter exit."""
        with self._lock:
            process, self._process = self._process, None
        if process is None or self._pid != os.getpid():
            return
        process.stdin.close()
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()

    def _forget_after_fork(self):
        # A forked child must not talk to its parent's worker, nor wait on a lock held at fork
        # time; closing its copies of the pipes lets the worker see EOF when the parent goes.
        process, self._process = self._process, None
        self._lock = threading.Lock()
        for stream in (process.stdin, process.stdout) if process else ():
            try:
                stream.close()
            except OSError:
                pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd, size, deadline):
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks, remaining = [], size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not poller.poll(wait * 1000):
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise RuntimeError("html2text worker exited")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


_WORKER = _Html2TextWorker()
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _WORKER._forget_after_fork())


def html_to_markdown(markup, timeout=DEFAULT_LIMITS.html_to_text_seconds,
                     max_chars=DEFAULT_LIMITS.html_to_text_max_chars):
    """html2text output for `markup` under a hard time limit. Returns (text, problem or None)."""
    if timeout <= 0:
        return strip_tags(markup), "html2text disabled; text from tag stripping"
    if len(markup) > max_chars:
        return strip_tags(markup), (f"HTML body has {len(markup):,} characters, over the {max_chars:,} "
                                    "html2text limit; text from tag stripping")
    try:
        text = _WORKER.convert(markup, timeout)
    except TimeoutError:
        return strip_tags(markup), f"html2text timed out after {timeout:g}s; text from tag stripping"
    except Exception as exc:  # the child crashed, could not start, or html2text raised
        return strip_tags(markup), f"html2text failed ({type(exc).__name__}); text from tag stripping"
    # Deeply nested lists make html2text indent quadratically: 90 KB of HTML gave 25 MB of text.
    if len(text) > 2 * len(markup) + 10_000:
        return strip_tags(markup), "html2text output ballooned; text from tag stripping"
    return text, None


_BLOCK_END = re.compile(r"<(?:br|/p|/div|/tr|/li|/h[1-6]|/table|/blockquote|hr)\b[^>]*>", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def strip_tags(markup):
    """Plain text from HTML without html2text: block ends become line breaks, tags go."""
    text = html.unescape(nh3.clean(_BLOCK_END.sub("\n", markup), tags=set()))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# Link targets in html2text output: [text](target), [id]: target and <scheme:...> autolinks.
# One line per reference (`^[ \t]*`, `[^\]\n]*`): spanning line breaks, 40,000 blank lines cost 3 s.
_MARKDOWN_LINK = re.compile(r"(\]\(\s*<?|^[ \t]*\[[^\]\n]*\]:\s*<?|<)((?:[^\s()<>]|\([^\s()]*\))+)", re.MULTILINE)
_DANGEROUS_SCHEMES = ("javascript:", "vbscript:", "data:", "file:")


def defuse_markdown(markdown):
    """`markdown` with javascript:, vbscript:, data: and file: link targets replaced by "#"."""
    def replace(match):
        target = re.sub(r"[\x00-\x20\x7f]+", "", html.unescape(match.group(2))).lower()
        return match.group(1) + "#" if target.startswith(_DANGEROUS_SCHEMES) else match.group(0)

    return _MARKDOWN_LINK.sub(replace, markdown)
