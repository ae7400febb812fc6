"""The reader in a real browser (daphne, Redis, Chromium; Dovecot where the server must change):
back/newer/older, mark-read on open, the body frame sized to its mail, Text/Markdown/Original
and the .eml, attachments with previews and attached messages, parse warnings, empty bodies,
the conversation, and no sideways scrolling at 390 px. Mail from the shared real-world corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models import Message, Thread
from tests.builders import account_row, dovecot_account_row, ingest, mail_from_carol, stored_message
from tests.servers.browser import login, off_the_event_loop, open_live, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "eml"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus/eml")
WIDTHS = [1366, 390]


def corpus_message(owner, name: str) -> Message:
    """A corpus file received and standardized as an import (raw kept, parts stored)."""
    from pipeline.standardize import standardize

    message = ingest(owner, (CORPUS / name).read_bytes())
    standardize(message.pk)
    message.refresh_from_db()
    return message


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def reader_page(browser, user, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    login(page, user)
    return context, page


def open_reader(page, live_web, message):
    open_live(page, live_web, f"/messages/{message.pk}/")


@pytest.mark.parametrize("width", WIDTHS)
def test_an_html_mail_fills_a_frame_exactly_its_height_that_still_runs_nothing(browser, live_web, alice, request, width):
    from pipeline.parsing.sanitize import sanitize_html

    message = corpus_message(alice, "nodemailer__examples--nodemailer.eml")
    account = account_row(alice)
    short = stored_message(alice, account, subject="One line", html="<p>Just one line.</p>")
    wide = stored_message(alice, account, subject="Wide", html=sanitize_html(
        '<table width="100%"><tr>' + "".join(f"<td><pre>{'x' * 60}</pre></td>" for _ in range(8)) + "</tr></table>"
        + "<p>after</p>" * 30))
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, message)
        frame = page.wait_for_selector("#body-frame[data-loaded='1'][data-height]")
        # No scripts in the frame at all: same-origin only so this page can measure it.
        assert frame.get_attribute("sandbox").split() == ["allow-same-origin", "allow-popups",
                                                          "allow-popups-to-escape-sandbox"]
        page.wait_for_function("""() => { const f = document.getElementById('body-frame');
            const root = f.contentDocument.documentElement;
            return Math.abs(f.getBoundingClientRect().height - root.getBoundingClientRect().height) <= 20
                   && root.scrollHeight <= f.clientHeight + 1; }""")
        assert frame.evaluate("f => f.contentDocument.documentElement.scrollHeight") > 300
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-html")), full_page=True)

        # A table of eight long columns: it never widens the page, and the frame still has no
        # scrollbar of its own up and down.
        open_reader(page, live_web, wide)
        frame = page.wait_for_selector("#body-frame[data-loaded='1'][data-height]")
        page.wait_for_function("""() => { const f = document.getElementById('body-frame');
            const root = f.contentDocument.documentElement;
            return root.scrollHeight <= f.clientHeight + 1; }""")
        assert overflow(page) <= 0

        # A one-line mail: a small frame, not a blank box.
        open_reader(page, live_web, short)
        frame = page.wait_for_selector("#body-frame[data-loaded='1'][data-height]")
        assert frame.bounding_box()["height"] < 80
        assert overflow(page) <= 0
    finally:
        context.close()


def test_the_frame_still_blocks_scripts_and_remote_images_until_show_images(page, live_web, alice, clean_http_sink):
    from pipeline.parsing.sanitize import sanitize_html

    sink = clean_http_sink.base_url
    hostile = (f'<p>Hello</p><img src=x onerror="parent.document.title=\'pwned\'">'
               f'<img id="pixel" src="{sink}/pixel.png" alt="pixel">')
    message = stored_message(alice, account_row(alice), subject="Tracked", html=sanitize_html(hostile) + hostile)
    login(page, alice)
    open_reader(page, live_web, message)
    frame = page.wait_for_selector("#body-frame[data-loaded='1']").content_frame()
    frame.wait_for_selector("text=Hello")
    assert page.title() == "Tracked · mailgate"
    assert page.is_visible("#remote-note")
    assert not [r for r in clean_http_sink.requests if r.path == "/pixel.png"]
    page.click("#load-remote")
    page.wait_for_selector("#body-frame[data-loaded='2']")
    [pixel, *_] = clean_http_sink.wait_for(1, path="/pixel.png", timeout=10)
    assert pixel.header("Referer") is None
    assert page.title() == "Tracked · mailgate"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_plain_mail_reads_as_text_markdown_and_original_and_downloads_as_eml(browser, live_web, alice, request, width):
    message = corpus_message(alice, "cpython__msg_01.eml")
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, message)
        assert page.is_visible("#text-body") and not page.query_selector("#body-frame")
        assert page.get_attribute(".views button[data-view=text]", "aria-pressed") == "true"
        # One line under the navigation bar, none of the actions' own under it (the inbox toolbar's).
        assert page.eval_on_selector("#reader-actions", "e => getComputedStyle(e).borderBottomWidth") == "0px"
        page.screenshot(path=str(screenshot_path(request, "-plain")), full_page=True)
        page.click(".views button[data-view=markdown]")
        assert page.is_visible("#markdown-body") and page.is_hidden("#text-body")
        assert "Do you like this message?" in page.inner_text("#markdown-body")
        page.click(".views button[data-view=original]")
        page.wait_for_selector("#raw-body[data-loaded='1']")
        raw = page.inner_text("#raw-body")
        assert "Message-Id:" in raw or "Message-ID:" in raw
        assert page.is_hidden("#text-body")
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-original")), full_page=True)
        with page.expect_download() as info:
            page.click("#download-eml")
        download = info.value
        assert download.suggested_filename.endswith(".eml")
        assert Path(download.path()).read_bytes() == (CORPUS / "cpython__msg_01.eml").read_bytes()
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_attachments_show_size_type_and_image_previews_and_an_attached_message_opens(
        browser, live_web, alice, request, width):
    photo = corpus_message(alice, "flanker__iphone.eml")
    forwarded = corpus_message(alice, "djmailbox__message_with_rfc822_attachment.eml")
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, photo)
        item = page.locator("#attachments li.attachment").first
        item.wait_for()
        assert "image/jpeg" in item.inner_text() and "KB" in item.inner_text()
        page.wait_for_function("[...document.querySelectorAll('#attachments img')].every(i => i.complete && i.naturalWidth > 0)")
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-attachments")), full_page=True)

        open_reader(page, live_web, forwarded)
        page.click("#attachments a.view-attached")
        page.wait_for_selector("#attached-message")
        assert page.inner_text("#attached-message h1")
        assert page.is_visible("#attached-message #text-body, #attached-message .empty-body")
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-attached-message")), full_page=True)
        page.click("#back")
        page.wait_for_url(f"**/messages/{forwarded.pk}/")
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_an_attached_html_message_is_shown_rendered_in_the_sandboxed_frame_and_as_text(
        browser, live_web, alice, request, width):
    forwarded = corpus_message(alice, "flanker__enclosed.eml")
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, forwarded)
        page.click("#attachments a.view-attached")
        frame = page.wait_for_selector("#attached-message #body-frame[data-loaded='1'][data-height]")
        assert frame.get_attribute("sandbox").split() == ["allow-same-origin", "allow-popups",
                                                          "allow-popups-to-escape-sandbox"]
        text = frame.evaluate("f => f.contentDocument.body.innerText")
        assert "kicking ass" in text and "чтобы я без вас делал" in text
        # Sized to its content: no inner scrollbar, no blank box.
        page.wait_for_function("""() => { const f = document.getElementById('body-frame');
            const root = f.contentDocument.documentElement;
            return Math.abs(f.getBoundingClientRect().height - root.getBoundingClientRect().height) <= 20
                   && root.scrollHeight <= f.clientHeight + 1; }""")
        assert page.is_hidden("#text-body")
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-html")), full_page=True)

        page.click(".views button[data-view=text]")
        assert page.is_hidden("#body-frame") and "kicking ass" in page.inner_text("#text-body")
        page.click(".views button[data-view=html]")
        assert page.is_visible("#body-frame") and page.is_hidden("#text-body")
    finally:
        context.close()


def test_parse_warnings_are_said_in_words_and_an_empty_body_says_so(page, live_web, alice):
    raw = b"From: Dora <dora@example.test>\r\nTo: a@example.test\r\nSubject: Nothing here\r\nDate: yesterday-ish\r\n\r\n"
    message = ingest(alice, raw)
    from pipeline.standardize import standardize

    standardize(message.pk)
    login(page, alice)
    open_reader(page, live_web, message)
    assert page.inner_text("#empty-body").startswith("This message has no text.")
    warnings = page.inner_text("#parse-warnings")
    assert "The Date header could not be read" in warnings
    assert "unparseable" not in warnings
    # Alone in the mailbox: nothing related, said as a line, not as entry "1." of the list.
    none = page.wait_for_selector("#related .related-none")
    assert none.inner_text() == "No related messages."
    assert none.evaluate("li => getComputedStyle(li).listStyleType") == "none"


def thread_of(owner, account, subjects):
    thread = Thread.objects.create(owner=owner, subject="Plans")
    return [stored_message(owner, account, subject=s, text=f"{s}: the details of it.", thread=thread,
                           flags=["\\Seen"]) for s in subjects]


@pytest.mark.parametrize("width", WIDTHS)
def test_a_conversation_shows_every_message_the_newest_open_and_older_ones_folded(
        browser, live_web, alice, request, width):
    account = account_row(alice)
    first, second, newest = thread_of(alice, account, ["Plans", "Re: Plans", "Re: Re: Plans"])
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, newest)
        items = page.locator("#conversation > li.conv-item")
        assert items.count() == 3
        assert page.locator("#conversation li.current").get_attribute("data-id") == str(newest.pk)
        older = page.locator(f"#conversation li[data-id='{first.pk}'] details")
        assert older.get_attribute("open") is None
        assert "Plans: the details" in older.locator("summary").inner_text() or width < 640
        older.locator("summary").click()
        page.wait_for_selector(f"#conversation li[data-id='{first.pk}'] pre.text-body:visible")
        assert overflow(page) <= 0
        page.screenshot(path=str(screenshot_path(request, "-conversation")), full_page=True)
        # A new reply arrives while the conversation is open: the page says so and links to it.
        from pipeline import events

        reply = stored_message(alice, account, subject="Re: Plans (late)", thread=newest.thread)
        off_the_event_loop(events.message_updated, reply)
        page.wait_for_selector("#thread-news:not([hidden])")
        assert str(reply.pk) in page.get_attribute("#thread-news-link", "href")
        # Opened on an older one: that one in full, and the newest unfolded too.
        open_reader(page, live_web, second)
        assert page.locator(f"#conversation li[data-id='{reply.pk}'] details").get_attribute("open") is not None
        assert page.locator(f"#conversation li[data-id='{newest.pk}'] details").get_attribute("open") is None
    finally:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_conversation_opened_on_an_older_message_shows_its_headers_below_the_sticky_bar(
        browser, live_web, alice, width):
    # The page scrolls to the message opened; its From line must not end up under the sticky
    # Back/Newer/Older bar (it did: scrollIntoView ignored the bar, hiding subject and sender).
    account = account_row(alice)
    thread = Thread.objects.create(owner=alice, subject="Plans")
    long_text = "\n".join(f"Line {i} of the plan." for i in range(80))
    messages = [stored_message(alice, account, subject=f"Re: Plans {n}", text=long_text, thread=thread,
                               flags=["\\Seen"]) for n in range(6)]
    context, page = reader_page(browser, alice, width)
    try:
        open_reader(page, live_web, messages[2])
        page.wait_for_function("window.scrollY > 0")  # it scrolled to the message, as it should
        bar_bottom, headers_top = page.evaluate("""() => [
            document.querySelector('.reader-nav').getBoundingClientRect().bottom,
            document.querySelector('.conv-item.current .headers').getBoundingClientRect().top]""")
        assert headers_top >= bar_bottom
    finally:
        context.close()


def test_opening_marks_read_on_the_server_and_newer_older_back_walk_the_filtered_list(
        page, live_web, alice, dovecot, mail_user):
    from imap.sync import sync_account_now
    from pipeline.standardize import standardize

    for subject in ["Budget one", "Lunch", "Budget two", "Budget three"]:
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(subject))
    account = dovecot_account_row(alice, dovecot, mail_user)

    def sync():
        assert not sync_account_now(account, ignore_backoff=True).errors
        for m in Message.objects.filter(account=account, status=Message.Status.RECEIVED):
            standardize(m.pk)

    off_the_event_loop(sync)
    by_subject = {m.subject: m for m in Message.objects.filter(account=account)}
    open_live(page, live_web, "/?q=budget", user=alice)
    target = by_subject["Budget two"]
    # Opened from the list: the list's URL (its filters) is where Back leads.
    page.click(f"tr.message-row[data-id='{target.pk}'] td.subject a")
    page.wait_for_url(f"**/messages/{target.pk}/")
    page.wait_for_selector("body[data-ws=open]")
    # Mark-read on open, written back to the server.
    uid = target.locations.get().uid
    page.wait_for_selector("#reader-actions button[data-action=unread]:visible")
    assert "\\Seen" in dovecot.flags(mail_user.name, "INBOX")[uid]
    assert "Read" in page.inner_text("#flags")
    # Newer/older stay inside the search: "Lunch" is skipped.
    assert page.get_attribute("#back", "href") == "/?q=budget"
    page.click("#older")
    page.wait_for_url(f"**/messages/{by_subject['Budget one'].pk}/?back=*")
    assert page.locator("#older").count() == 0
    page.click("#newer")
    page.wait_for_url(f"**/messages/{target.pk}/?back=*")
    page.click("#newer")
    page.wait_for_url(f"**/messages/{by_subject['Budget three'].pk}/?back=*")
    assert page.locator("#newer").count() == 0
    # The same with keys: j older, k newer, s star, Escape back.
    page.keyboard.press("j")
    page.wait_for_url(f"**/messages/{target.pk}/?back=*")
    page.keyboard.press("s")
    page.wait_for_selector("#reader-actions button[data-action=unflag]:visible")
    assert "Starred" in page.inner_text("#flags")
    assert "\\Flagged" in dovecot.flags(mail_user.name, "INBOX")[uid]
    page.keyboard.press("k")
    page.wait_for_url(f"**/messages/{by_subject['Budget three'].pk}/?back=*")
    # Back walks history to the list itself (five reader steps back), not a fresh copy of it.
    length = page.evaluate("history.length")
    page.keyboard.press("Escape")
    page.wait_for_url(f"{live_web.url}/?q=budget")
    assert page.evaluate("history.length") == length
    # Opened with ?back= from elsewhere (a bookmark): Back loads the list.
    page.goto(f"{live_web.url}/messages/{target.pk}/?back=/%3Fq%3Dlunch")
    page.click("#back")
    page.wait_for_url(f"{live_web.url}/?q=lunch")
