"""pipeline.parsing on the real-world corpus and on hostile hand-made messages. Needs no Django."""

import binascii
import hashlib
import os
import random
import re
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from pipeline import parsing
from pipeline.parsing import Limits, ParsedMessage, html_text, parse_message
from pipeline.parsing.filenames import fallback_filename, safe_filename
from pipeline.parsing.sanitize import enable_remote_images, sanitize_html
from pipeline.threading_keys import normalize_subject, thread_candidates


def _corpus_dir():
    configured = os.environ.get("MAILGATE_CORPUS")
    if configured:
        path = Path(configured)
        return path / "eml" if (path / "eml").is_dir() else path
    return Path(__file__).resolve().parents[2] / "shared" / "corpus" / "eml"


CORPUS = _corpus_dir()
CORPUS_FILES = sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS_FILES, reason=f"no corpus at {CORPUS} (set MAILGATE_CORPUS)")


def eml(headers, body=""):
    """A message from header lines and a body, with CRLF line ends as on the wire."""
    text = "\r\n".join(headers) + "\r\n\r\n" + body
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")


def multipart(parts, subtype="mixed", headers=("From: Alice <alice@example.test>", "Subject: parts")):
    body = "".join(f"--b\r\n{part}\r\n" for part in parts) + "--b--\r\n"
    return eml([*headers, "MIME-Version: 1.0", f'Content-Type: multipart/{subtype}; boundary="b"'], body)


def crashed(raw):
    """True when parsing `raw` reached parse_message's catch-all: a parser bug the result hides."""
    before = parsing.crash_count()
    assert isinstance(parse_message(raw), ParsedMessage)
    return parsing.crash_count() != before


def parse_without_crash(raw):
    before = parsing.crash_count()
    parsed = parse_message(raw)
    assert parsing.crash_count() == before, f"reached parse_message's crash boundary: {parsed.warnings}"
    return parsed


@pytest.fixture(scope="module")
def corpus_run():
    """({file name: (raw bytes, ParsedMessage, seconds)}, [names that reached the crash boundary])
    for the whole corpus, parsed once."""
    results, crashes = {}, []
    for path in CORPUS_FILES:
        raw = path.read_bytes()
        before = parsing.crash_count()
        started = time.perf_counter()
        parsed = parse_message(raw)
        results[path.name] = (raw, parsed, time.perf_counter() - started)
        if parsing.crash_count() != before:
            crashes.append(path.name)
    return results, crashes


@pytest.fixture(scope="module")
def corpus(corpus_run):
    return corpus_run[0]


# --- The corpus -----------------------------------------------------------------------------------

@needs_corpus
def test_it_never_raises_on_any_corpus_file(corpus_run):
    corpus, crashes = corpus_run
    assert crashes == [], "these files reached parse_message's crash boundary"
    assert len(corpus) == len(CORPUS_FILES)
    assert all(isinstance(parsed, ParsedMessage) for _, parsed, _ in corpus.values())
    slowest = max(corpus.items(), key=lambda item: item[1][2])
    assert slowest[1][2] < 10, f"{slowest[0]} took {slowest[1][2]:.1f}s"


def _stdlib_view(raw):
    """What policy.default makes of subject and sender, or None where it fails or loses bytes."""
    def lossy(text):
        return "\ufffd" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)

    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    except Exception:
        return None, None
    try:
        subject = None if msg["subject"] is None else str(msg["subject"])
        subject = None if subject is None or lossy(subject) else subject
    except Exception:
        subject = None
    try:
        sender = msg["from"].addresses[0]
        sender = None if lossy(sender.display_name + sender.addr_spec) else sender
    except Exception:
        sender = None
    return subject, sender


@needs_corpus
def test_subject_and_sender_match_the_stdlib_where_it_succeeds(corpus):
    compared = 0
    for name, (raw, parsed, _) in corpus.items():
        subject, sender = _stdlib_view(raw)
        if subject is not None:
            assert parsed.subject == subject, name
            compared += 1
        if sender is not None:
            assert parsed.sender_address == sender.addr_spec.lower(), name
            if sender.display_name:
                assert parsed.sender_name == sender.display_name, name
            else:  # the stdlib drops a name written as a comment, `bbb@ddd.com (John X. Doe)`; we keep it
                commented = re.search(r"\(([^()]*)\)\s*$", (msg_from(raw) or "").strip())
                assert parsed.sender_name == (commented.group(1).strip() if commented else ""), name
            compared += 1
    assert compared > len(corpus)  # most files have both


def msg_from(raw):
    return BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)["from"]


def test_a_name_written_as_a_comment_after_the_address_is_the_name():
    # The RFC 822 form, still sent by old mailers and in the corpus: Dovecot's ENVELOPE and mail
    # clients show "John X. Doe", and so must the parsed message (the row showed the name before
    # it was parsed and the bare address after).
    parsed = parse_message(eml(["From: bbb@ddd.com (John X. Doe)",
                                "To: a@example.test (=?utf-8?q?J=C3=B6rg?=), \"Named\" <b@example.test> (note),"
                                " c@example.test", "Subject: old style"], "hi"))
    assert (parsed.sender_name, parsed.sender_address) == ("John X. Doe", "bbb@ddd.com")
    assert parsed.to == [{"name": "Jörg", "address": "a@example.test"},
                         {"name": "Named", "address": "b@example.test"},
                         {"name": "", "address": "c@example.test"}]


@needs_corpus
def test_every_corpus_file_yields_a_text_body_or_a_warning_explaining_why_not(corpus):
    for name, (_, parsed, _) in corpus.items():
        assert parsed.text_body.strip() or any(w.startswith("no text body:") for w in parsed.warnings), name


@needs_corpus
def test_every_text_field_is_storable_in_any_database(corpus):
    def check(value, where):
        if isinstance(value, str):
            assert "\x00" not in value, where
            value.encode("utf-8")  # no lone surrogates
        elif isinstance(value, dict):
            for item in value.values():
                check(item, where)
        elif isinstance(value, list):
            for item in value:
                check(item, where)

    for name, (_, parsed, _) in corpus.items():
        for field in ("message_id", "in_reply_to", "references", "subject", "sender_name", "sender_address",
                      "to", "cc", "reply_to", "text_body", "html_body", "markdown_body", "snippet", "headers",
                      "warnings"):
            check(getattr(parsed, field), f"{name}: {field}")
        for attachment in parsed.attachments:
            check(attachment.filename, f"{name}: attachment")
            assert attachment.filename == safe_filename(attachment.filename), name
            assert attachment.size == len(attachment.payload)


@needs_corpus
def test_corpus_html_comes_out_sanitized(corpus):
    for name, (_, parsed, _) in corpus.items():
        html = parsed.html_body.lower()
        for forbidden in ("<script", "javascript:", "onerror=", "onload=", "<iframe", "<form", "<meta", "<base"):
            assert forbidden not in html, (name, forbidden)
        assert " src=\"http" not in html, name


@needs_corpus
def test_it_never_raises_on_random_or_truncated_bytes():
    rng = random.Random(822)
    samples = [p.read_bytes() for p in CORPUS_FILES if p.stat().st_size < 100_000]
    cases = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(100)]
    for raw in rng.sample(samples, 150):
        cases.append(raw[: rng.randrange(len(raw) + 1)])
        mutated = bytearray(raw)
        for _ in range(25):
            mutated[rng.randrange(len(mutated))] = rng.choice(b'\n\r:;="<>()\\-\x00\xff ')
        cases.append(bytes(mutated))
    crashes = [raw[:80] for raw in cases if crashed(raw)]
    assert crashes == [], "these inputs reached parse_message's crash boundary"


# --- Hostile structure and headers --------------------------------------------------------------

def deeply_nested(levels):
    head = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(levels))
    tail = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(levels)))
    return ("From: a@example.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + head
            + "Content-Type: text/plain\r\n\r\nhello from the bottom" + tail).encode()


def test_a_thousand_levels_of_multipart_give_a_warning_not_an_exception():
    parsed = parse_without_crash(deeply_nested(1000))
    assert parsed.subject == "deep"
    assert any("RecursionError" in w or "nesting deeper" in w for w in parsed.warnings)


def test_nesting_past_max_depth_keeps_inner_parts_as_attachments():
    parsed = parse_message(deeply_nested(40))
    assert "nesting deeper than 30; inner parts kept as attachments" in parsed.warnings
    assert [a.payload for a in parsed.attachments] == [b"hello from the bottom"]
    assert parse_message(deeply_nested(20)).text_body == "hello from the bottom"


def test_an_address_with_a_thousand_nested_comments_does_not_raise():
    comments = "(" * 1000 + "x" + ")" * 1000
    raw = eml([f"From: bob@example.test {comments}", f"To: {comments} carol@example.test", "Subject: comments"], "hi")
    parsed = parse_without_crash(raw)
    assert parsed.sender_address == "bob@example.test"
    assert parsed.to == [{"name": "", "address": "carol@example.test"}]
    assert parsed.subject == "comments"
    assert "RecursionError from the standard parser on the From header; used a simple parser" in parsed.warnings


def test_more_parts_than_the_limit_stop_the_walk_with_a_warning():
    raw = multipart([f"Content-Type: application/octet-stream\r\n\r\n{i}" for i in range(20)])
    parsed = parse_message(raw, Limits(max_parts=5))
    assert len(parsed.attachments) == 4  # the top-level multipart is part 1
    assert "more than 5 MIME parts; the rest were skipped" in parsed.warnings


def test_an_oversized_header_block_is_truncated_with_a_warning():
    filler = [f"X-Filler-{i}: {'x' * 60}" for i in range(400)]
    parsed = parse_message(eml(["Subject: big", *filler, "From: late@example.test"], "body"),
                           Limits(max_header_bytes=4096))
    assert parsed.subject == "big"
    assert parsed.sender_address == ""  # it came after the cut
    assert parsed.text_body == "body"
    assert any(w.startswith("header block is") for w in parsed.warnings)


def test_an_oversized_message_is_parsed_headers_only():
    parsed = parse_message(eml(["Subject: huge", "From: a@example.test"], "x" * 5000), Limits(max_total_bytes=1000))
    assert parsed.subject == "huge"
    assert parsed.text_body == ""
    assert any("over the" in w and "headers only" in w for w in parsed.warnings)
    assert any(w.startswith("no text body:") for w in parsed.warnings)


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"   ", "Subject: only".encode(), bytearray(b"Subject: x\n\nhi")])
def test_empty_or_odd_inputs_give_a_result(raw):
    assert isinstance(parse_message(raw), ParsedMessage)


# --- Headers -----------------------------------------------------------------------------------------

def test_an_unknown_charset_is_decoded_with_a_warning():
    parsed = parse_message(eml(["Subject: charset", "Content-Type: text/plain; charset=x-foo"], "café"))
    assert parsed.text_body == "café"
    assert "unknown charset 'x-foo' in part 1; decoded as utf-8" in parsed.warnings


def test_a_bad_date_gives_a_warning_and_no_date():
    parsed = parse_message(eml(["Subject: x", "Date: Pn, 29 paX 2007 21:13:00 +0100"], "hi"))
    assert parsed.date is None
    assert "date header unparseable: 'Pn, 29 paX 2007 21:13:00 +0100'" in parsed.warnings


def test_a_date_of_unknown_zone_is_still_aware():
    parsed = parse_message(eml(["Subject: x", "Date: Wed, 20 Sep 1995 00:19:00 -0000"], "hi"))
    assert parsed.date.tzinfo is not None and parsed.date.utcoffset().total_seconds() == 0


def test_encoded_words_and_raw_8bit_headers_are_decoded():
    raw = eml(["Subject: =?utf-8?q?caf=C3=A9?= =?iso-8859-1?q?_cr=E8me?=",
               "From: =?utf-8?b?SsO2cmc=?= <Joerg@Example.TEST>",
               "To: J\udcc3\udcb6rg <j@example.test>, M\udce4x <m@example.test>"], "hi")
    parsed = parse_message(raw)
    assert parsed.subject == "café crème"
    assert (parsed.sender_name, parsed.sender_address) == ("Jörg", "joerg@example.test")
    assert parsed.to == [{"name": "Jörg", "address": "j@example.test"}, {"name": "Mäx", "address": "m@example.test"}]
    assert any("not UTF-8" in w for w in parsed.warnings)  # only Mäx was latin-1


def test_message_ids_and_references_come_without_brackets():
    parsed = parse_message(eml(["Message-ID: <own@example.test>", "In-Reply-To: <b@x> (Bob's message)",
                                "References: <a@x>\r\n <b@x>", "Subject: ids"], "hi"))
    assert parsed.message_id == "own@example.test"
    assert parsed.in_reply_to == "b@x"
    assert parsed.references == ["a@x", "b@x"]


def test_headers_of_interest_are_reported():
    parsed = parse_message(eml(["Return-Path: <>", "Auto-Submitted: auto-replied", "Precedence: bulk",
                                "List-Id: <dev.lists.example.test>", "X-Auto-Response-Suppress: All",
                                "X-Mailgate-Relay: hop-1", "X-Mailgate-Relay: hop-2", "Subject: x"], "hi"))
    assert parsed.headers == {
        "auto_submitted": "auto-replied", "x_auto_response_suppress": "All", "precedence": "bulk",
        "list_id": "<dev.lists.example.test>", "return_path": "<>", "x_mailgate_relay": "hop-1, hop-2",
        "content_type": "text/plain",
    }


def test_an_absent_header_is_none_and_an_empty_one_is_an_empty_string():
    parsed = parse_message(eml(["From: a@example.test", "Return-Path: ", "Message-ID: not an id"], "hi"))
    assert parsed.headers["return_path"] == ""
    assert parsed.headers["auto_submitted"] is None and parsed.headers["x_mailgate_relay"] is None
    assert parsed.subject is None and parsed.in_reply_to is None
    assert parsed.message_id == ""
    assert parsed.headers["content_type"] == "text/plain"


def test_a_bug_below_parse_message_is_counted_logged_and_still_gives_a_result(monkeypatch, caplog):
    def broken(*args):
        raise ZeroDivisionError

    monkeypatch.setattr(parsing.parts, "read_parts", broken)
    before = parsing.crash_count()
    parsed = parse_message(eml(["From: a@example.test", "Subject: still here"], "hi"))
    assert parsing.crash_count() == before + 1
    assert parsed.subject == "still here"
    assert "ZeroDivisionError while parsing; the result is partial" in parsed.warnings
    assert [r.name for r in caplog.records if r.levelname == "ERROR"] == ["pipeline.parsing"]


def test_the_top_content_type_keeps_its_parameters():
    parsed = parse_message(eml(["Subject: x", "Content-Type: Multipart/Report;\r\n report-type=delivery-status;"
                                ' boundary="b"'], "--b\r\n\r\nbounced\r\n--b--\r\n"))
    assert parsed.headers["content_type"] == 'multipart/report; report-type=delivery-status; boundary="b"'


def test_a_message_without_from_says_so():
    parsed = parse_message(eml(["Subject: anonymous"], "hi"))
    assert parsed.sender_address == ""
    assert "no From header; sender unknown" in parsed.warnings


# --- Bodies ------------------------------------------------------------------------------------------

def test_html_only_mail_gets_a_text_body():
    parsed = parse_message(eml(["Subject: html", "Content-Type: text/html; charset=utf-8"],
                               "<html><body><h1>Hello</h1><p>Some <b>bold</b> news.</p></body></html>"))
    assert "Hello" in parsed.text_body and "**bold**" in parsed.text_body
    assert parsed.markdown_body == parsed.text_body
    assert parsed.html_body.startswith("<h1>Hello</h1>")
    assert parsed.snippet.startswith("# Hello")


def test_plain_text_wins_over_html_in_an_alternative():
    raw = multipart(["Content-Type: text/plain\r\n\r\nplain words", "Content-Type: text/html\r\n\r\n<p>html words</p>"],
                    subtype="alternative")
    parsed = parse_message(raw)
    assert parsed.text_body == "plain words"
    assert parsed.markdown_body == "html words"
    assert parsed.attachments == []


def test_the_markdown_has_no_javascript_links():
    parsed = parse_message(eml(["Subject: js", "Content-Type: text/html"],
                               '<a href="javascript:alert(1)">click</a> <a href="https://ok.example/">ok</a>'))
    assert "javascript:" not in parsed.markdown_body
    assert "[ok](https://ok.example/)" in parsed.markdown_body
    assert html_text.defuse_markdown("[x](JavaScript:alert(1))\n<vbscript:x>\n[r]: data:text/html,x") == \
        "[x](#)\n<#>\n[r]: #"


def test_html2text_is_one_persistent_worker_not_a_process_per_message():
    parse_message(eml(["Content-Type: text/html"], "<p>one</p>"))
    first = html_text._WORKER._process.pid
    parse_message(eml(["Content-Type: text/html"], "<p>two</p>"))
    assert html_text._WORKER._process.pid == first


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_the_html2text_child_runs_under_a_memory_cap():
    parse_message(eml(["Content-Type: text/html"], "<p>capped</p>"))
    limits = Path(f"/proc/{html_text._WORKER._process.pid}/limits").read_text()
    assert re.search(r"Max address space\s+2147483648\s+2147483648", limits)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_process_gets_its_own_html2text_worker():
    html = eml(["Content-Type: text/html"], "<p>forked</p>")
    parse_message(html)
    parent_worker = html_text._WORKER._process.pid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a django-q worker forked from a busy parent would do
        try:
            parsed = parse_message(html)
            ok = parsed.text_body == "forked" and html_text._WORKER._process.pid != parent_worker
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    assert parse_message(html).text_body == "forked"
    assert html_text._WORKER._process.pid == parent_worker


def test_a_runaway_html2text_is_killed_and_text_comes_from_tag_stripping(monkeypatch):
    # The real child's request loop, with a conversion that never ends.
    slow = (f"import runpy, time; runpy.run_path({html_text.CHILD_SCRIPT!r})"
            "['serve'](lambda markup: time.sleep(60) or '')")
    worker = html_text._Html2TextWorker(command=[sys.executable, "-c", slow])
    monkeypatch.setattr(html_text, "_WORKER", worker)
    started = time.monotonic()
    parsed = parse_message(eml(["Content-Type: text/html"], "<p>Hello</p><p>world &amp; all</p>"),
                           Limits(html_to_text_seconds=1.0))
    assert time.monotonic() - started < 10
    assert "html2text timed out after 1s; text from tag stripping" in parsed.warnings
    assert parsed.text_body == "Hello\nworld & all"
    assert worker._process is None  # killed; the next call starts a fresh one


def test_html2text_output_that_balloons_is_replaced_by_tag_stripping():
    lists = "<ul><li>" * 2000 + "deep" + "</li></ul>" * 2000
    parsed = parse_message(eml(["Content-Type: text/html"], lists), Limits(html_to_text_seconds=30))
    assert parsed.text_body == "deep"
    assert any(w.startswith("html2text output ballooned") or "timed out" in w for w in parsed.warnings)


def test_a_uuencoded_block_in_plain_text_becomes_an_attachment():
    encoded = binascii.b2a_uu(b"hello").decode()
    raw = eml(["Subject: uu"], f"see below\n\nbegin 644 hello.txt\n{encoded}`\nend\n\nbye")
    parsed = parse_message(raw)
    assert [(a.filename, a.payload) for a in parsed.attachments] == [("hello.txt", b"hello")]
    assert parsed.text_body == "see below\n\n[uuencoded attachment: hello.txt]\n\nbye"


def test_the_snippet_is_short_and_collapsed():
    parsed = parse_message(eml(["Subject: long"], "word   \n\n" * 200))
    assert len(parsed.snippet) <= 201
    assert "  " not in parsed.snippet and "\n" not in parsed.snippet


# --- Attachments -----------------------------------------------------------------------------------

def test_an_attachment_named_with_a_path_gets_a_safe_name():
    raw = multipart(["Content-Type: text/plain\r\n\r\nbody",
                     'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; '
                     'filename="../../etc/passwd"\r\n\r\nroot'])
    parsed = parse_message(raw)
    assert [a.filename for a in parsed.attachments] == ["passwd"]
    assert parsed.attachments[0].sha256 == hashlib.sha256(b"root").hexdigest()


def test_rfc2231_and_rfc2047_filenames_are_decoded():
    raw = multipart([
        "Content-Type: text/plain\r\n\r\nbody",
        "Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        " filename*0*=utf-8''Gr%C3%BC%C3%9Fe;\r\n filename*1*=%20aus%20K%C3%B6ln.pdf\r\n\r\n%PDF",
        'Content-Type: application/pdf; name="=?utf-8?B?0J/RgNC40LLQtdGCLnBkZg==?="\r\n\r\n%PDF',
    ])
    assert [a.filename for a in parse_message(raw).attachments] == ["Grüße aus Köln.pdf", "Привет.pdf"]


def test_an_attached_message_becomes_an_eml_attachment():
    inner = "From: carol@example.test\r\nSubject: the original\r\n\r\noriginal text\r\n"
    raw = multipart(["Content-Type: text/plain\r\n\r\nsee attached", f"Content-Type: message/rfc822\r\n\r\n{inner}"])
    parsed = parse_message(raw)
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.content_type) == ("the original.eml", "message/rfc822")
    assert attachment.payload == inner.encode()


def test_a_message_that_only_forwards_another_shows_its_text():
    inner = "From: carol@example.test\r\nSubject: the original\r\n\r\noriginal text\r\n"
    parsed = parse_message(multipart([f"Content-Type: message/rfc822\r\n\r\n{inner}"]))
    assert parsed.text_body == "original text\n"
    assert "no text of its own; text body taken from the attached message in part 2" in parsed.warnings


def test_an_image_shown_by_cid_is_inline():
    raw = multipart([
        'Content-Type: text/html\r\n\r\n<p>logo: <img src="cid:logo@x"></p>',
        "Content-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: attachment\r\n\r\nPNG",
        "Content-Type: image/png\r\nContent-Disposition: attachment; filename=other.png\r\n\r\nPNG",
    ], subtype="related")
    parsed = parse_message(raw)
    assert [(a.filename, a.is_inline, a.content_id) for a in parsed.attachments] == [
        ("attachment-3.png", True, "logo@x"), ("other.png", False, "")]
    assert '<img src="cid:logo@x">' in parsed.html_body


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Windows\\system32\\evil.dll", "evil.dll"),
    (".htaccess", "htaccess"),
    ("..", "fallback.bin"),
    ("", "fallback.bin"),
    (None, "fallback.bin"),
    ("CON.txt", "_CON.txt"),
    ("lpt1", "_lpt1"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ("a\x00b\x07c.txt", "abc.txt"),
    ("report..final...pdf", "report.final.pdf"),
    ('what?<>:"|*.txt', "what_______.txt"),
    ("x" * 300 + ".pdf", "x" * 146 + ".pdf"),
    ("ж" * 200 + ".txt", "ж" * 125 + ".txt"),  # 255-byte budget of UTF-8
])
def test_safe_filename(name, expected):
    assert safe_filename(name, "fallback.bin") == expected


def test_fallback_filenames_follow_the_content_type():
    assert fallback_filename(3, "application/pdf") == "attachment-3.pdf"
    assert fallback_filename(4, "application/x-unknown") == "attachment-4.bin"
    assert fallback_filename(5, "message/rfc822") == "attachment-5.eml"


# --- Sanitizer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("markup, forbidden", [
    ("<img src=x onerror=alert(1)>", ["onerror", "alert"]),
    ('<a href="javascript:alert(1)">x</a>', ["javascript", "alert"]),
    ('<a href=" jAvA&#x09;script:alert(1)">x</a>', ["script", "alert"]),
    ('<a href="vbscript:msgbox(1)">x</a>', ["vbscript"]),
    ("<svg onbegin=alert(1)><animate onbegin=alert(1) attributeName=x /></svg>", ["svg", "onbegin", "alert"]),
    ('<meta http-equiv="refresh" content="0;url=https://evil.example/">', ["meta", "refresh", "evil"]),
    ('<base href="https://evil.example/">', ["base", "evil"]),
    ('<form action="https://evil.example/"><input name=p><button>Go</button></form>', ["form", "input", "evil"]),
    ('<iframe src="https://evil.example/"></iframe><object data=x></object><embed src=x>',
     ["iframe", "object", "embed"]),
    ("<script>alert(1)</script><style>body{display:none}</style>", ["script", "alert", "style", "display"]),
    ('<link rel=stylesheet href="https://evil.example/x.css">', ["link", "evil"]),
    ('<p style="background:url(https://track.example/p.gif);color:red">t</p>', ["url(", "track"]),
    ('<a href="/logout">x</a><a href="#top">y</a>', ["/logout", "#top"]),
    ('<table background="https://track.example/bg.gif"><tr><td>t</td></tr></table>', ["track"]),
    ('<div id="csrf" class="btn-danger" onclick="x()">t</div>', ["csrf", "btn-danger", "onclick"]),
])
def test_the_sanitizer_removes_active_content(markup, forbidden):
    cleaned = sanitize_html(markup).lower()
    for needle in forbidden:
        assert needle not in cleaned, (needle, cleaned)


def test_remote_images_are_parked_and_can_be_enabled():
    cleaned = sanitize_html('<img src="https://track.example/p.gif?u=1&amp;v=2" srcset="https://x/2x.gif 2x"'
                            ' alt="logo">'
                            '<img src="//cdn.example/a.png"><img src="HTTP://up.example/b.png">')
    assert " src=" not in cleaned and "srcset" not in cleaned
    assert 'data-remote-src="https://track.example/p.gif?u=1&amp;v=2"' in cleaned
    assert 'data-remote-src="//cdn.example/a.png"' in cleaned
    enabled = enable_remote_images(cleaned)
    assert '<img src="https://track.example/p.gif?u=1&amp;v=2" alt="logo">' in enabled
    assert '<img src="//cdn.example/a.png">' in enabled
    assert 'src="HTTP://up.example/b.png"' in enabled
    assert "data-remote-src" not in enabled


def test_enable_remote_images_restores_nothing_but_web_urls():
    assert enable_remote_images('<img data-remote-src="javascript:alert(1)">') == \
        '<img data-remote-src="javascript:alert(1)">'


def test_cid_and_data_images_are_kept_but_data_links_are_not():
    cleaned = sanitize_html('<img src="cid:part1@example"><img src="data:image/png;base64,iVBORw0KGgo=">'
                            '<img src="data:image/svg+xml;base64,PHN2Zz4=">'
                            '<a href="data:text/html;base64,PHNjcmlwdD4=">d</a>')
    assert '<img src="cid:part1@example">' in cleaned
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in cleaned
    assert "svg" not in cleaned
    assert "data:text" not in cleaned


def test_links_open_in_a_new_tab_without_a_referrer():
    cleaned = sanitize_html('<a href="https://example.test/" target="_self">x</a>')
    assert 'href="https://example.test/"' in cleaned
    assert 'target="_blank"' in cleaned and 'rel="noopener noreferrer"' in cleaned
    assert "_self" not in cleaned


def test_safe_inline_styles_are_kept():
    assert sanitize_html('<p style="color: red; position: fixed; font-weight: bold">t</p>') == \
        '<p style="color:red;font-weight:bold">t</p>'


# --- Threading keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("subject, expected", [
    ("Re: Re: Hello", "hello"),
    ("AW: [dev-list] Fwd:  Quarterly   Report", "quarterly report"),
    ("SV: FW: RE[2]: Offer", "offer"),
    ("[list] Re: [list] Topic", "topic"),
    ("Rewrite: the plan", "rewrite: the plan"),
    ("", ""),
    (None, ""),
])
def test_normalize_subject(subject, expected):
    assert normalize_subject(subject) == expected


def test_thread_candidates_end_with_the_direct_parent():
    parsed = ParsedMessage(message_id="me@x", references=["a@x", "b@x", "me@x"], in_reply_to="a@x")
    assert thread_candidates(parsed) == ["b@x", "a@x"]
    assert thread_candidates(ParsedMessage()) == []
