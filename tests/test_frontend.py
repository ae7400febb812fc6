"""The live web UI in a real browser (Debian's Chromium) against daphne, Redis and Dovecot."""

from __future__ import annotations

import pytest
from django.utils import timezone

from mailgate.realtime import publish_for_message
from imap.models import Account, Folder
from pipeline.models import Message
from tests.builders import (
    PNG,
    account_row,
    dovecot_account_row,
    failed_delivery,
    mail_from_carol,
    make_attachment,
    stored_message,
    sync_and_standardize,
)
from tests.servers.browser import login, off_the_event_loop, open_live, screenshot_path
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_message_appended_on_the_server_appears_in_the_open_inbox_without_a_reload(
        page, live_web, alice, dovecot, mail_user, request):
    account = dovecot_account_row(alice, dovecot, mail_user)
    open_live(page, live_web, user=alice)
    navigations = []
    page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
    assert page.locator("tr.message-row").count() == 0

    dovecot.append(mail_user.name, "INBOX", mail_from_carol("Quarterly numbers are in"))
    [message] = off_the_event_loop(sync_and_standardize, account)

    row = page.locator(f"tr.message-row[data-id='{message.pk}']")
    row.wait_for()
    assert "Quarterly numbers are in" in row.inner_text()
    assert row.get_attribute("data-unread") == "true"
    assert navigations == []
    page.screenshot(path=str(screenshot_path(request)), full_page=True)


def test_a_gap_in_sequence_numbers_makes_the_page_refetch(page, live_web, alice):
    account = account_row(alice)
    open_live(page, live_web, user=alice)
    # Published to nobody's socket: the event is lost, as channels-redis may lose one.
    from mailgate.realtime import next_seq

    missed = stored_message(alice, account, subject="Missed while away")
    next_seq(alice.pk)
    seen = stored_message(alice, account, subject="Announced", date=timezone.now())
    off_the_event_loop(publish_for_message, seen, "message.new")
    page.locator(f"tr.message-row[data-id='{missed.pk}']").wait_for()
    page.locator(f"tr.message-row[data-id='{seen.pk}']").wait_for()


def test_selecting_three_messages_and_marking_them_read_sets_seen_on_the_server(
        page, live_web, alice, dovecot, mail_user, request):
    account = dovecot_account_row(alice, dovecot, mail_user)
    uids = [dovecot.append(mail_user.name, "INBOX", mail_from_carol(f"Report {n}")) for n in range(3)]
    other = dovecot.append(mail_user.name, "INBOX", mail_from_carol("Leave me unread"))
    off_the_event_loop(sync_and_standardize, account)
    messages = {m.subject: m for m in Message.objects.filter(account=account)}
    assert dovecot.flags(mail_user.name, "INBOX") == {uid: set() for uid in [*uids, other]}

    open_live(page, live_web, user=alice)
    for n in range(3):
        page.locator(f"tr[data-id='{messages[f'Report {n}'].pk}'] input.select").check()
    page.click("#toolbar button[data-action=read]")
    page.wait_for_selector("#action-status:has-text('Done (3).')")

    assert eventually(lambda: dovecot.flags(mail_user.name, "INBOX")) == {
        uids[0]: {"\\Seen"}, uids[1]: {"\\Seen"}, uids[2]: {"\\Seen"}, other: set()}
    for n in range(3):
        page.wait_for_selector(f"tr[data-id='{messages[f'Report {n}'].pk}'][data-unread=false]")
    assert page.locator(f"tr[data-id='{messages['Leave me unread'].pk}']").get_attribute("data-unread") == "true"
    for n in range(3):
        message = Message.objects.get(pk=messages[f"Report {n}"].pk)
        assert message.flags == ["\\Seen"]
        assert message.locations.get().flags == ["\\Seen"]
    page.screenshot(path=str(screenshot_path(request)), full_page=True)


HOSTILE = """
<p>Quarterly report</p>
<img src=x onerror="document.title='pwned';document.body.dataset.pwned='img'">
<a id="js-link" href="javascript:document.title='pwned';document.body.dataset.pwned='link'">open</a>
<svg><animate onbegin="document.title='pwned';document.body.dataset.pwned='svg'" attributeName="x" dur="1s"/></svg>
<meta http-equiv="refresh" content="0;url={sink}/refresh">
<img id="tracker" src="{sink}/pixel.png" alt="tracker">
"""


def test_hostile_html_runs_nothing_and_remote_images_wait_for_the_click(
        page, live_web, alice, clean_http_sink, request):
    from pipeline.parsing.sanitize import sanitize_html

    hostile = HOSTILE.format(sink=clean_http_sink.base_url)
    # Control: the same markup in an unprotected page does run, so the checks below can fail.
    # (Without the meta refresh, which would navigate the control page away.)
    control = "\n".join(line for line in hostile.splitlines() if "http-equiv" not in line)
    page.set_content(control.replace(clean_http_sink.base_url, "http://127.0.0.1:9"))
    page.wait_for_function("document.title === 'pwned'")

    account = account_row(alice)
    # Sanitized as the pipeline stores it, plus the raw markup: the page must hold even if the
    # sanitizer missed something.
    message = stored_message(alice, account, subject="Report", html=sanitize_html(hostile) + hostile)
    login(page, alice)
    page.goto(f"{live_web.url}/messages/{message.pk}/")
    frame_element = page.wait_for_selector("#body-frame[data-loaded='1']")
    # No allow-scripts: nothing in the mail runs (same-origin only so the page can size the frame).
    assert frame_element.get_attribute("sandbox").split() == ["allow-same-origin", "allow-popups",
                                                              "allow-popups-to-escape-sandbox"]
    body = frame_element.content_frame()
    body.wait_for_selector("text=Quarterly report")
    body.click("#js-link", timeout=2000)

    assert page.title() == "Report · mailgate"
    assert body.evaluate("document.title") != "pwned"
    assert body.locator("body[data-pwned]").count() == 0
    assert not [r for r in clean_http_sink.requests if r.path in ("/pixel.png", "/refresh")]

    page.click("#load-remote")
    page.wait_for_selector("#body-frame[data-loaded='2']")
    [pixel, *_] = clean_http_sink.wait_for(1, path="/pixel.png", timeout=10)
    assert pixel.header("Referer") is None
    body = page.frame_locator("#body-frame")
    assert page.title() == "Report · mailgate"
    assert body.locator("body[data-pwned]").count() == 0
    assert not [r for r in clean_http_sink.requests if r.path == "/refresh"]
    page.screenshot(path=str(screenshot_path(request)), full_page=True)


def test_the_dashboard_retries_a_dead_delivery_and_follows_it_live(page, live_web, alice):
    account = account_row(alice)
    message = stored_message(alice, account, subject="Pager alert", status="distributed")
    delivery = failed_delivery(alice, message, status="dead")
    open_live(page, live_web, "/pipeline/", user=alice)
    page.wait_for_selector("#delivery-counts tr[data-status=dead] td:has-text('1')")
    page.click(f"#failing tr[data-id='{delivery.pk}'] button.retry")
    page.wait_for_selector("#action-status:has-text('Requeued.')")
    page.wait_for_selector("#delivery-counts tr[data-status=dead] td:has-text('0')")
    delivery.refresh_from_db()
    assert delivery.status == "scheduled"

    # An account's state change arrives live.
    Account.objects.filter(pk=account.pk).update(state=Account.State.AUTH_FAILED, last_error="bad password")
    from mailgate.realtime import publish_for_account

    off_the_event_loop(publish_for_account, account, "account.status", {"account_id": account.pk})
    page.wait_for_selector(f"#accounts tr[data-id='{account.pk}'][data-state=auth_failed]")
    assert Folder.objects.filter(account=account).count() == 3

    # The IDLE manager's account.status (another payload: {"account_id", "idle": {...}}) too.
    from imap import leases

    row = page.locator(f"#accounts tr[data-id='{account.pk}']")
    assert row.get_attribute("data-idle") == "none"
    off_the_event_loop(leases.claim, "host-a:1:beef", [account.pk], 1)
    off_the_event_loop(leases.record_connected, "host-a:1:beef", account.pk)
    page.wait_for_selector(f"#accounts tr[data-id='{account.pk}'][data-idle=true]")
    assert row.locator("td.idle").inner_text().startswith("connected since")
    off_the_event_loop(leases.record_disconnected, "host-a:1:beef", account.pk, "connection lost: BYE")
    page.wait_for_selector(f"#accounts tr[data-id='{account.pk}'][data-idle=false]")
    assert row.locator("td.reconnects").inner_text() == "1"
    assert row.locator("td.error").inner_text() == "connection lost: BYE"


def test_an_inline_cid_image_shows_in_the_body_frame_and_remote_ones_still_wait(
        page, live_web, alice, clean_http_sink, request):
    from pipeline.models import Attachment
    from pipeline.parsing.sanitize import sanitize_html

    account = account_row(alice)
    html = sanitize_html(f'<p>Signed</p><img src="cid:logo@example.test" alt="logo" width="20" height="20">'
                         f'<img src="{clean_http_sink.base_url}/remote.png" alt="remote">')
    message = stored_message(alice, account, subject="With logo", html=html)
    part = make_attachment(message, filename="logo.png", content_type="image/png", content=PNG)
    Attachment.objects.filter(pk=part.pk).update(content_id="logo@example.test", is_inline=True)

    login(page, alice)
    page.goto(f"{live_web.url}/messages/{message.pk}/")
    body = page.wait_for_selector("#body-frame[data-loaded='1']").content_frame()
    logo = body.wait_for_selector("img[alt=logo]")
    # Loaded and decoded under the frame's CSP, with the session cookie (a 302 to the login page
    # or a CSP block would leave naturalWidth at 0).
    body.wait_for_function("document.querySelector('img[alt=logo]').complete")
    assert logo.evaluate("img => img.naturalWidth") == 1
    assert not [r for r in clean_http_sink.requests if r.path == "/remote.png"]
    page.screenshot(path=str(screenshot_path(request)), full_page=True)


def test_the_body_opened_on_its_own_is_still_sandboxed(page, live_web, alice):
    account = account_row(alice)
    message = stored_message(alice, account, subject="Opened alone", html="<p>Plain body</p>")
    login(page, alice)
    page.goto(f"{live_web.url}/messages/{message.pk}/body/")
    page.wait_for_selector("text=Plain body")
    # Top-level, with no iframe sandbox attribute: the response's CSP sandbox alone gives the
    # document an opaque origin, so nothing in it could reach mailgate's cookies or pages.
    assert page.evaluate("self.origin") == "null"
    assert page.evaluate("(() => { try { return document.cookie; } catch (e) { return e.name; } })()") \
        == "SecurityError"


def test_a_first_sync_shows_its_progress_and_its_messages_before_their_bodies(
        page, live_web, alice, dovecot, mail_user, settings):
    from imap.sync import sync_account_now

    settings.MAILGATE_SYNC_BATCH_SIZE = 1  # phase 1 then reads headers two at a time: two progress events
    for n in range(3):
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(f"Waiting mail {n}"))
    account = dovecot_account_row(alice, dovecot, mail_user)
    open_live(page, live_web, user=alice)
    # Every text the progress line shows, however briefly (it hides when the folder is done).
    page.evaluate("""() => { window.progressSeen = [];
        new MutationObserver(() => { const line = document.getElementById("sync-progress");
            if (!line.hidden) window.progressSeen.push(line.textContent); })
          .observe(document.getElementById("sync-progress"), {childList: true, characterData: true,
                                                              subtree: true, attributes: true}); }""")

    report = off_the_event_loop(lambda: sync_account_now(account, ignore_backoff=True))
    assert not report.errors
    # Not standardized: rows appear from the headers alone (phase 1) and the bodies' hint.
    assert not Message.objects.filter(account=account, status=Message.Status.STANDARDIZED).exists()
    page.locator("tr.message-row").nth(2).wait_for()
    assert "Waiting mail" in page.locator("tr.message-row").first.inner_text()
    page.wait_for_function("() => document.getElementById('sync-progress').hidden")
    seen = page.evaluate("() => window.progressSeen")
    assert any("/ INBOX: 2 of 3" in text for text in seen), seen
