"""Semantic search in the browser: the search box's hybrid ranking and its "Exact words only"
switch, and the message page's "Related messages" block (daphne + Chromium)."""

import pytest
from django.core.management import call_command
from io import StringIO

from tests.builders import account_row, stored_message
from tests.servers.browser import login, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_search_box_finds_by_meaning_and_the_message_page_shows_related_mail(page, live_web, alice, bob,
                                                                                  request):
    account = account_row(alice)
    invoice = stored_message(alice, account, subject="Your March statement from Hostwind Cloud",
                             sender="billing@hostwind.test",
                             text="The amount of $42.10 for your virtual private servers was charged to your card.")
    stored_message(alice, account, subject="Your April statement from Hostwind Cloud", sender="billing@hostwind.test",
                   text="The amount of $44.80 for your virtual private servers was charged to your card.")
    stored_message(alice, account, subject="Lunch on Thursday?", sender="erin@example.test",
                   text="Shall we try the new ramen place near the office?")
    stored_message(bob, account_row(bob), subject="Bob's statement from Hostwind Cloud", sender="billing@hostwind.test",
                   text="The amount of $42.10 for your virtual private servers was charged to your card.")
    call_command("reindex_vectors", stdout=StringIO())

    login(page, alice)
    page.goto(live_web.url + "/")
    page.wait_for_selector("tr.message-row")
    page.fill("#search", "bill for my web hosting")
    first = page.locator("tr.message-row").first
    first.locator(".subject a").filter(has_text="statement from Hostwind").wait_for()
    assert "Bob's" not in page.locator("#message-rows").inner_text()
    assert "Lunch" not in page.locator("#message-rows").inner_text()  # no meaning in common: not listed
    page.screenshot(path=str(screenshot_path(request, "-hybrid")), full_page=True)
    page.check("#exact-words")
    page.wait_for_selector("tr.message-row", state="detached")  # no message holds every one of those words

    page.goto(live_web.url + f"/messages/{invoice.pk}/")
    item = page.locator("#related li.related-item").first
    item.wait_for()
    assert "Your April statement from Hostwind Cloud" in item.inner_text()
    assert "Same sender" in item.locator(".related-reason").inner_text()
    assert "Bob's" not in page.locator("#related").inner_text()
    page.screenshot(path=str(screenshot_path(request, "-related")), full_page=True)
