"""The inbox as a mail client, in a real browser against daphne, Redis and Dovecot: delete to the
Trash with Undo, arrival order with live new mail, no sideways overflow, one local date format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imap.models import Folder
from pipeline import audit
from mailgate.realtime import publish_for_message
from pipeline.models import Delivery, Event, Message
from tests.builders import (
    account_row,
    dovecot_account_row,
    failed_delivery,
    mail_from_carol,
    stored_message,
    sync_and_standardize,
)
from tests.servers.browser import login, off_the_event_loop, open_live, screenshot_path
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def row(page, message):
    return page.locator(f"tr.message-row[data-id='{message.pk}']")


def test_delete_moves_to_trash_leaves_every_tab_and_search_and_undo_moves_it_back(
        page, live_web, alice, dovecot, mail_user, request):
    dovecot.create_folder(mail_user.name, "Trash")
    account = dovecot_account_row(alice, dovecot, mail_user)
    for n in range(3):
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(f"Budget {n}"))
    off_the_event_loop(sync_and_standardize, account)
    messages = {m.subject: m for m in Message.objects.filter(account=account)}
    victim = messages["Budget 1"]

    open_live(page, live_web, user=alice)
    # A second tab, searching: the deleted message must leave its results too.
    other = page.context.new_page()
    open_live(other, live_web)
    # Exact words: the default (words and meaning) also ranks the other budgets below it.
    other.check("#exact-words")
    other.fill("#search", "budget 1")
    other.wait_for_function("document.querySelectorAll('tr.message-row').length === 1")
    row(other, victim).wait_for()

    row(page, victim).locator("input.select").check()
    page.click("#toolbar button[data-action=delete]")
    row(page, victim).wait_for(state="detached")
    row(other, victim).wait_for(state="detached")
    assert len(dovecot.flags(mail_user.name, "INBOX")) == 2
    assert len(dovecot.flags(mail_user.name, "Trash")) == 1
    page.wait_for_selector("#undo-bar:not([hidden])")
    assert "Moved to Trash (1)" in page.inner_text("#undo-bar")
    page.screenshot(path=str(screenshot_path(request, "-deleted")), full_page=True)

    # Undo: a move back on the server, and the row returns in both tabs.
    page.click("#undo")
    row(page, victim).wait_for()
    row(other, victim).wait_for()
    assert len(dovecot.flags(mail_user.name, "INBOX")) == 3 and dovecot.flags(mail_user.name, "Trash") == {}

    # Delete again; in the Trash view only "Delete forever" is offered, and it asks first.
    row(page, victim).locator("input.select").check()
    page.click("#toolbar button[data-action=delete]")
    row(page, victim).wait_for(state="detached")
    trash = Folder.objects.get(account=account, name="Trash")
    page.click(f"#sidebar a[data-folder='{trash.pk}']")
    row(page, victim).wait_for()
    row(page, victim).locator("input.select").check()
    assert page.locator("#delete").is_hidden() and page.locator("#delete-forever").is_visible()
    page.click("#delete-forever")
    page.wait_for_selector("#confirm-forever[open]")
    page.click("#confirm-forever button[value=cancel]")
    assert len(dovecot.flags(mail_user.name, "Trash")) == 1
    page.click("#delete-forever")
    page.click("#confirm-ok")
    row(page, victim).wait_for(state="detached")
    assert eventually(lambda: dovecot.flags(mail_user.name, "Trash") == {} or None)
    assert len(dovecot.flags(mail_user.name, "INBOX")) == 2


def test_new_mail_lands_on_top_in_arrival_order_whatever_its_date_with_a_pill_and_the_title_count(
        page, live_web, alice, dovecot, mail_user, request):
    account = dovecot_account_row(alice, dovecot, mail_user)
    for n in range(55):
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(f"Old {n}"))
    off_the_event_loop(sync_and_standardize, account)

    open_live(page, live_web, user=alice)
    page.wait_for_function("document.title.startsWith('(55) ')")
    # The title comes from /api/stats/, the rows from the first page: wait for those too.
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 50")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("window.scrollY > 200")

    # A 2019 date, no date, a 2027 date, then five sent in the same second: arrival decides.
    subjects = ["Dated 2019", "Undated", "Dated 2027", *[f"Same second {n}" for n in range(1, 6)]]
    dates = ["Tue, 01 Jan 2019 09:00:00 +0000", None, "Fri, 01 Jan 2027 09:00:00 +0000",
             *["Thu, 03 Dec 2026 18:00:00 +0000"] * 5]
    for subject, date in zip(subjects, dates):
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(subject, date=date))
    off_the_event_loop(sync_and_standardize, account)

    # Scrolled to the end, the list fetched the last 5 rows (keyset) by itself.
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 63")
    top = page.locator("tr.message-row td.subject a").all_inner_texts()[:8]
    assert top == list(reversed(subjects))
    page.wait_for_selector("#new-pill:not([hidden])")
    assert page.inner_text("#new-pill") == "8 new"
    page.wait_for_function("document.title.startsWith('(63) ')")
    page.screenshot(path=str(screenshot_path(request, "-pill")))
    page.click("#new-pill")
    page.wait_for_selector("#new-pill", state="hidden")
    assert page.evaluate("window.scrollY") < 80

    # The order holds after a reload: the API pages by arrival too.
    page.reload()
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 50")
    assert page.locator("tr.message-row td.subject a").all_inner_texts()[:8] == list(reversed(subjects))


LONG_URL = "https://example.test/" + "a1b2c3d4" * 250


def _overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


@pytest.mark.parametrize("width", [1366, 390])
def test_long_unbroken_strings_never_make_a_page_wider_than_the_window(browser, live_web, alice, request, width):
    account = account_row(alice, name="Alice")
    for n in range(3):
        stored_message(alice, account, subject=f"Normal message {n}", text=f"Hello there, number {n}.")
    message = stored_message(alice, account, subject="Look " + "x" * 400,
                             text=f"See [{LONG_URL}?version=3] and {LONG_URL} now", sender="a" * 200 + "@example.test")
    delivery = failed_delivery(alice, message, status="dead")
    Delivery.objects.filter(pk=delivery.pk).update(last_error="refused: " + "z" * 600)
    context = browser.new_context(viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        login(page, alice)
        for name, path, ready in [("inbox", "/", f"tr.message-row[data-id='{message.pk}']"),
                                  ("message", f"/messages/{message.pk}/", "#timeline tr"),
                                  ("pipeline", "/pipeline/", "#failing tr")]:
            page.goto(live_web.url + path)
            page.wait_for_selector(ready)
            page.wait_for_selector("body[data-ws=open]")
            page.screenshot(path=str(screenshot_path(request, f"-{name}")), full_page=True)
            assert _overflow(page) <= 0, f"{name} page overflows at {width}px"
        page.goto(live_web.url + "/")
        snippet = page.locator(f"tr.message-row[data-id='{message.pk}'] .snippet")
        if width > 640:
            assert "http" not in snippet.inner_text() and "[" not in snippet.inner_text()
    finally:
        context.close()


def test_dates_read_the_same_in_the_readers_time_zone_everywhere(browser, live_web, alice, request):
    account = account_row(alice)
    sent = datetime(2026, 12, 3, 18, 59, 26, tzinfo=UTC)
    message = stored_message(alice, account, subject="Zoned", date=sent)
    undated = stored_message(alice, account, subject="No Date header")
    # A message without a Date header lists when it arrived, as mail clients show it, not a blank.
    Message.objects.filter(pk=undated.pk).update(date=None, arrived_at=datetime(2026, 12, 2, 3, 0, tzinfo=UTC))
    event = audit.record(Event.Kind.STANDARDIZED, message, detail="to ops-ok at 2026-12-03 18:59:26+0000")
    Event.objects.filter(pk=event.pk).update(at=sent)
    context = browser.new_context(viewport={"width": 1366, "height": 900}, timezone_id="America/New_York",
                                  locale="en-US")
    try:
        page = context.new_page()
        login(page, alice)
        page.goto(live_web.url + "/")
        cell = page.locator(f"tr.message-row[data-id='{message.pk}'] td.date")
        cell.wait_for()
        assert cell.inner_text() == "Dec 3"
        assert cell.get_attribute("title") == "Sent Thu, Dec 3, 2026, 13:59:26 EST"
        arrival = page.locator(f"tr.message-row[data-id='{undated.pk}'] td.date")
        assert arrival.inner_text() == "Dec 1"
        assert arrival.get_attribute("title") == "No Date header; arrived Tue, Dec 1, 2026, 22:00:00 EST"

        page.goto(f"{live_web.url}/messages/{undated.pk}/")
        page.wait_for_function("document.querySelector('dl.headers time').textContent.endsWith('EST')")
        assert page.locator("dl.headers dt:text-is('Date') + dd").inner_text() == \
            "none given; arrived Tue, Dec 1, 2026, 22:00:00 EST"

        page.goto(f"{live_web.url}/messages/{message.pk}/")
        page.wait_for_function("(document.querySelector('#timeline td') || {}).textContent?.endsWith('EST')")
        header = page.locator("dl.headers time").inner_text()
        assert header == "Thu, Dec 3, 2026, 13:59:26 EST"
        when, _, _, detail = page.locator("#timeline tr").first.locator("td").all_inner_texts()
        assert when == header
        assert detail == "to ops-ok at Thu, Dec 3, 2026, 13:59:26 EST"
        # After a live refresh the timeline keeps the same format.
        page.evaluate("document.querySelector('#timeline td').textContent = 'stale'")
        off_the_event_loop(publish_for_message, message, "message.updated", {"id": str(message.pk)})
        page.wait_for_function("document.querySelector('#timeline td').textContent.endsWith('EST')")
        assert "T18:59" not in page.inner_text("#timeline")
        page.screenshot(path=str(screenshot_path(request)), full_page=True)
    finally:
        context.close()
