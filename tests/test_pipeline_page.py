"""The pipeline page in a real browser: words instead of enum keys and field names, the next retry
time, Retry offered for retrying deliveries too, one honest state per account, throughput and the
last 24 hours kept live, and no sideways scrolling at 390 px."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from imap.models import Account, IdleSession
from mailgate.realtime import publish_for_message
from pipeline import audit
from pipeline.models import Delivery, Event
from tests.builders import account_row, failed_delivery, stored_message
from tests.servers.browser import off_the_event_loop, open_live, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1366, 390])
def test_the_pipeline_page_speaks_plainly_and_offers_retry_for_retrying_deliveries(browser, live_web, alice,
                                                                                 request, width):
    account = account_row(alice, name="Work")
    Account.objects.filter(pk=account.pk).update(state=Account.State.OK)
    IdleSession.objects.create(account=account, connected=False, last_error="connection refused",
                               lease_owner="host:1:abc", lease_expires_at=timezone.now() + timedelta(minutes=5),
                               reconnect_count=4)
    message = stored_message(alice, account, subject="Pager alert", status="distributed")
    waiting = failed_delivery(alice, message, status="retrying")
    Delivery.objects.filter(pk=waiting.pk).update(not_before=timezone.now() + timedelta(minutes=30),
                                                  last_error="421 4.7.0 try again later")
    dead = failed_delivery(alice, stored_message(alice, account, subject="Old news", status="distributed"),
                           status="dead", name="Pager")
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        open_live(page, live_web, "/pipeline/", user=alice)
        page.wait_for_selector(f"#accounts tr[data-id='{account.pk}']")
        page.wait_for_selector(f"#failing tr[data-id='{waiting.pk}']")

        text = page.inner_text("#dashboard")
        for raw in ("too_large", "not_before", "Claimed by a worker"):
            assert raw not in text, raw
        for count in page.locator(".counts tr").all():
            assert count.locator("th").inner_text() != count.get_attribute("data-status")
        assert page.inner_text("#delivery-counts tr[data-status=retrying] th") == "Will retry"

        row = page.locator(f"#accounts tr[data-id='{account.pk}']")
        assert row.get_attribute("data-health") == "push_down"
        assert row.locator("td.state").inner_text().startswith("Reconnecting")
        assert "Connected" not in row.inner_text()
        assert row.locator("td.error").inner_text() == "connection refused"

        status = page.locator(f"#failing tr[data-id='{waiting.pk}'] td.status").inner_text()
        assert re.fullmatch(r"Will retry at (\d\d:\d\d|.+\d\d:\d\d:\d\d.*)", status), status
        assert page.locator(f"#failing tr[data-id='{dead.pk}'] button.retry").inner_text() == "Retry"
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("window.innerWidth")
        page.screenshot(path=str(screenshot_path(request)), full_page=True)

        page.click(f"#failing tr[data-id='{waiting.pk}'] button.retry")
        page.wait_for_selector("#action-status:has-text('Requeued.')")
        waiting.refresh_from_db()
        assert waiting.not_before <= timezone.now() and waiting.attempts == 3
    finally:
        context.close()


@pytest.mark.parametrize("width", [1366, 390])
def test_throughput_and_the_last_24_hours_follow_the_pipeline_live(browser, live_web, alice, request, width):
    account = account_row(alice, name="Work")
    message = stored_message(alice, account, subject="Pager alert", status="distributed")
    delivery = failed_delivery(alice, message, status="sent")
    for hours_ago, kind, times in ((0, Event.Kind.RECEIVED, 3), (0, Event.Kind.SENT, 2), (2, Event.Kind.RECEIVED, 6),
                                   (2, Event.Kind.SENT, 5), (2, Event.Kind.RETRY, 1), (5, Event.Kind.FAILED, 1)):
        for _ in range(times):
            row = audit.record(kind, message, None if kind == Event.Kind.RECEIVED else delivery)
            # This hour's a second ago, not a minute: in an hour's first minute that was the last hour.
            Event.objects.filter(pk=row.pk).update(
                at=timezone.now() - timedelta(hours=hours_ago, seconds=1 if hours_ago == 0 else 60))
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        open_live(page, live_web, "/pipeline/", user=alice)
        page.wait_for_selector("#throughput tr[data-figure=received]")

        def figure(name, column):
            return page.inner_text(f"#throughput tr[data-figure={name}] td.{column}")

        assert page.inner_text("#throughput tr[data-figure=retried] th") == "Will retry"
        assert (figure("received", "last-hour"), figure("received", "last-day")) == ("3", "9")
        assert (figure("sent", "last-hour"), figure("sent", "last-day")) == ("2", "7")
        assert (figure("retried", "last-day"), figure("failed", "last-day")) == ("1", "1")
        assert figure("received", "rate") == "< 0.1"

        columns = page.locator("#history li")
        assert columns.count() == 24
        last, now = (columns.nth(i).get_attribute("aria-label") for i in (22, 23))
        # A new hour may have begun since the events were written: then they are the last hour's.
        rolled = not now.endswith("(this hour so far): 3 received, 2 sent, 0 failed, 0 will retry")
        if rolled:
            assert last.endswith(": 3 received, 2 sent, 0 failed, 0 will retry"), last
            assert now.endswith("(this hour so far): 0 received, 0 sent, 0 failed, 0 will retry"), now
        # Bars are scaled to the busiest hour (6 received, two hours ago): it fills its column.
        busiest = page.locator("#history li .bar.fig-received[data-n='6']")
        assert busiest.evaluate("b => Math.round(b.getBoundingClientRect().height) === "
                                "Math.round(b.parentElement.getBoundingClientRect().height)")
        assert page.locator("#history .tick").count() == 4
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("window.innerWidth")
        page.screenshot(path=str(screenshot_path(request)), full_page=True)

        # New mail comes in: its event reaches the page, which re-reads the figures (no reload).
        fresh = stored_message(alice, account, subject="Another alert")
        audit.record(Event.Kind.RECEIVED, fresh)
        off_the_event_loop(publish_for_message, fresh, "message.new", {"id": str(fresh.pk)})
        page.wait_for_selector("#throughput tr[data-figure=received] td.last-hour:text-is('4')")
        assert figure("received", "last-day") == "10"
        assert ("1 received" if rolled else "4 received") in page.locator("#history li.now").get_attribute("aria-label")
    finally:
        context.close()


def test_a_count_stays_on_one_line_beside_a_long_status_on_a_phone(browser, live_web, alice):
    # At 390 px "16" beside "Not relayed (loop, auto-reply or bounce)" wrapped to "1" over "6".
    account = account_row(alice, name="Work")
    for n in range(12):
        stored_message(alice, account, subject=f"Bounce {n}", status="suppressed")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        open_live(page, live_web, "/pipeline/", user=alice)
        cell = page.wait_for_selector("#message-counts tr[data-status=suppressed] td.count")
        assert cell.inner_text() == "12"
        lines = cell.evaluate("td => { const r = document.createRange(); r.selectNodeContents(td);"
                              " return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; }")
        assert lines == 1
    finally:
        context.close()
