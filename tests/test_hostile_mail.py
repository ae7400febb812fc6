"""Hostile mail costs standardize a bounded amount of work, and still reads in the UI.

Each bomb goes through the real stage (tasks.standardize, as the worker calls it) with one spy on
the costly step it aims at: the test asserts how much work that step was handed, not a time
(bench/hostile.py has the timings).
"""

import email.message
import re

import pytest

from pipeline import tasks
from pipeline.models import Message
from pipeline.parsing import headers as parsing_headers
from pipeline.parsing import sanitize
from pipeline.parsing.html_nesting import VOID, bound_nesting
from pipeline.parsing.result import DEFAULT_LIMITS
from tests.builders import ingest

pytestmark = pytest.mark.django_db

_TAG = re.compile(r"<(/?)([a-z][^\s/>]*)")


def nesting_depth(markup):
    """Deepest element nesting of canonical (fully closed) HTML, as html_nesting writes it."""
    depth = deepest = 0
    for closing, name in _TAG.findall(markup):
        if name in VOID:
            continue
        depth += -1 if closing else 1
        deepest = max(deepest, depth)
    return deepest


def bomb(headers, body, content_type="text/plain"):
    head = "".join(f"{line}\r\n" for line in ["From: Mallory <mallory@example.test>", "To: alice@example.test",
                                               "Subject: bomb", f"Content-Type: {content_type}", *headers])
    return head.encode() + b"\r\n" + body


def standardized(owner, raw):
    message = ingest(owner, raw)
    assert tasks.standardize(str(message.pk)) == "standardized"
    return Message.objects.get(pk=message.pk)


def assert_readable(client, owner, message, text):
    client.force_login(owner)
    page = client.get(f"/messages/{message.pk}/", secure=True)  # a PostgreSQL run redirects to https
    assert page.status_code == 200
    assert text in page.content.decode()


class Spy:
    """Hands every call on to `target` and remembers its first argument."""

    def __init__(self, target):
        self.target, self.seen = target, []

    def clean(self, markup):
        self.seen.append(markup)
        return self.target.clean(markup)


def test_a_nested_div_bomb_reaches_the_sanitizer_flattened(alice, client, monkeypatch):
    raw = bomb([], b"<div>" * 400_000 + b"still readable", "text/html")  # 2 MB
    spy = Spy(sanitize._CLEANER)
    monkeypatch.setattr(sanitize, "_CLEANER", spy)
    message = standardized(alice, raw)
    assert spy.seen and max(nesting_depth(m) for m in spy.seen) <= DEFAULT_LIMITS.max_html_depth
    assert sum(len(m) for m in spy.seen) < 20_000
    assert any(w.startswith("HTML nested deeper than 256 elements") for w in message.parse_warnings)
    assert "still readable" in message.text_body
    assert_readable(client, alice, message, "still readable")
    assert client.get(f"/messages/{message.pk}/body/", secure=True).status_code == 200


def test_a_million_empty_parts_stop_the_parser_early(alice, client, monkeypatch):
    raw = bomb([], b"--b\r\n\r\n" * 1_000_000 + b"--b--\r\n", 'multipart/mixed; boundary="b"')  # 7 MB
    built = []
    original = email.message.Message.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(email.message.Message, "__init__", counting)
    message = standardized(alice, raw)
    assert len(built) < 5_000  # the parser stopped at max_parts, plus one 8 KB chunk of input
    assert any("stopped reading the message structure" in w for w in message.parse_warnings)
    assert message.subject == "bomb"
    assert_readable(client, alice, message, "bomb")


def test_a_crafted_address_header_never_reaches_the_header_registry_whole(alice, client, monkeypatch):
    crafted = "a." * 31_500 + "@b.c"  # 63 KB, quadratic in the header registry
    raw = bomb([f"Cc: {crafted}", f"Reply-To: {crafted}", f"Sender: {crafted}", f"X-Other: {crafted}"], b"hello")
    assert len(raw) > 250_000
    handed = []
    original = parsing_headers._header
    monkeypatch.setattr(parsing_headers, "_header", lambda name, value: handed.append(len(value))
                        or original(name, value))
    message = standardized(alice, raw)
    assert handed and max(handed) <= 16 * 1024
    assert "Cc header is 61.5 KiB; addresses taken with a simple scan" in message.parse_warnings
    assert message.sender_address == "mallory@example.test"
    assert message.text_body == "hello"
    assert_readable(client, alice, message, "hello")


# --- html_nesting on its own ---------------------------------------------------------------------

@pytest.mark.parametrize("piece", [
    "<div a='></div>'>",  # a quote the tokenizer must honour: no </div> here
    "<div><style></div></style>",  # raw text: that </div> is text
    "<span><div></span>",  # </span> closes nothing past a <div>
    "<div><table><tr><td></div>",  # </div> does not reach out of a cell
])
def test_markup_that_only_looks_closed_is_still_bounded(piece):
    html, warning = bound_nesting(piece * 2_000, 256)
    assert nesting_depth(html) <= 256
    assert warning and warning.startswith("HTML nested deeper than 256 elements")


def test_formatting_reopened_after_implicit_closes_stays_bounded():
    html, _ = bound_nesting("<p>" + "".join(f"<b id={i}>" for i in range(3_000)) + "<p>x" * 3_000, 256)
    assert nesting_depth(html) <= 256
    assert html.count("<b ") <= 3_000 + 8 * 3_000  # at most 8 re-opened per text
    assert nesting_depth(bound_nesting("<b><div></b>" * 2_000, 256)[0]) <= 256


@pytest.mark.parametrize("markup, expected", [
    ("<p>one<p>two", "<p>one</p><p>two</p>"),
    ("<ul><li>a<li>b</ul>", "<ul><li>a</li><li>b</li></ul>"),
    ("<table><tr><td>a<td>b<tr><td>c</table>", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"),
    ("<b>bold <i>both</b> italic</i>", "<b>bold <i>both</i></b><i> italic</i>"),
    ("<p title='a \"q\"' data-x=1>t<!-- <div> --><br/>1 < 2",
     '<p title="a &quot;q&quot;" data-x="1">t<br>1 &lt; 2</p>'),
    ("<div><script>if (a</div>) {}</script>x</div>", "<div>x</div>"),
])
def test_ordinary_markup_keeps_its_shape(markup, expected):
    assert bound_nesting(markup, 256) == (expected, None)
