"""The inbox shell in a real browser (Chromium) against daphne and Redis: sidebar and live counts,
screenshots light and dark at 1366 and 390 px, filters in the URL, states, an expired session,
the keyboard, and virtual scrolling over 100,000 messages."""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Error as PlaywrightError

from mailgate.realtime import publish_for_message
from tests.builders import account_row, dovecot_account_row, mail_from_carol, stored_message
from tests.servers.browser import login, off_the_event_loop, open_live, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"wide": (1366, 900), "narrow": (390, 844)}


def inbox_page(browser, live_web, user, size="wide", dark=False, path="/"):
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height},
                                  color_scheme="dark" if dark else "light")
    context.set_default_timeout(15_000)
    page = context.new_page()
    open_live(page, live_web, path, user=user)
    return page


def rows(page):
    return page.locator("tr.message-row")


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.parametrize("size", ["wide", "narrow"])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_the_inbox_looks_like_a_mail_client_and_never_scrolls_sideways(browser, live_web, alice, request, size, dark):
    account = account_row(alice, name="Alice")
    for n in range(30):
        stored_message(alice, account, subject=f"Quarterly planning notes, part {n} " + "with a long subject " * (n % 4),
                       text="Hello team, here is the agenda for the next meeting " * 5,
                       flags=["\\Seen"] if n % 3 else [], has_attachments=n % 4 == 0)
    # Mail from an earlier year carries the year in its date: it must fit its column too.
    stored_message(alice, account, subject="An old one", date=datetime(2012, 7, 10, 9, 0, tzinfo=UTC), flags=["\\Seen"])
    page = inbox_page(browser, live_web, alice, size, dark)
    rows(page).nth(30).wait_for()
    page.wait_for_function("document.getElementById('list-counts').textContent.includes('31 messages')")
    assert page.inner_text("h1") == "All mail"
    assert "10 unread" in page.inner_text("#list-counts")
    assert page.evaluate("getComputedStyle(document.body).colorScheme") == ("dark" if dark else "light")
    # A fixed height: dense, and the row never grows with its text. One line on a wide screen; on a
    # phone two, the sender and the date above the subject, so the sender is not cut to a stub.
    heights = [box["height"] for box in (rows(page).nth(i).bounding_box() for i in range(12))]
    assert max(heights) - min(heights) < 0.5 and max(heights) <= (60 if size == "narrow" else 37), heights
    sender, subject, date = (rows(page).nth(0).locator(f"td.{cell}").bounding_box() for cell in ("sender", "subject", "date"))
    if size == "narrow":
        assert subject["y"] >= sender["y"] + sender["height"] - 1 and abs(date["y"] - sender["y"]) < 1
        assert sender["width"] >= 200, sender
    else:
        assert abs(subject["y"] - sender["y"]) < 1 and abs(date["y"] - sender["y"]) < 1
    assert overflow(page) <= 0
    clipped_dates = page.evaluate("""[...document.querySelectorAll('tr.message-row td.date')]
        .filter((td) => td.scrollWidth > td.clientWidth).map((td) => td.textContent)""")
    assert clipped_dates == []
    tag = f"-{size}-{'dark' if dark else 'light'}"
    page.screenshot(path=str(screenshot_path(request, tag)))

    # Selecting shows the sticky action bar, the row highlighted.
    assert page.locator("#bulk").is_hidden()
    rows(page).nth(1).locator("input.select").check()
    rows(page).nth(2).locator("input.select").check()
    page.wait_for_selector("#bulk:not([hidden])")
    assert "selected" in rows(page).nth(1).get_attribute("class")
    assert page.inner_text("#selection-count") == "2 selected"
    assert overflow(page) <= 0
    page.screenshot(path=str(screenshot_path(request, f"{tag}-selection")))
    page.evaluate("window.scrollTo(0, 400)")
    if size == "wide":
        assert page.locator("#toolbar").bounding_box()["y"] == 0  # stuck to the top

    if size == "narrow":
        # Tap targets: every visible control at least 40 px tall (row checkboxes sit in a 44 px cell).
        small = page.evaluate("""() => [...document.querySelectorAll(
              'button, select, input[type=search], summary, a.folder-link, td.check label, .select-all, header.top nav a')]
            .filter((e) => e.offsetParent !== null && getComputedStyle(e).visibility !== 'hidden')
            .map((e) => [e.id || e.textContent.trim().slice(0, 20), e.getBoundingClientRect().height])
            .filter(([, h]) => h < 40)""")
        assert small == []
        page.click("#toggle-sidebar")
        page.wait_for_function("getComputedStyle(document.getElementById('sidebar')).transform === 'none'")
        page.wait_for_function("document.getAnimations().length === 0")
        page.screenshot(path=str(screenshot_path(request, f"{tag}-folders")))
        page.click("#scrim", position={"x": 370, "y": 400})
        page.wait_for_function("getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden'")
        assert overflow(page) <= 0 and page.evaluate("window.scrollX") == 0
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    page.wait_for_selector("#help[open]")
    assert overflow(page) <= 0 and page.evaluate("window.scrollX") == 0
    page.screenshot(path=str(screenshot_path(request, f"{tag}-help")))
    if size == "narrow":
        # The short form is for the phone's narrow column: wider, the old date reads in full.
        page.keyboard.press("Escape")
        old = page.locator("tr.message-row", has_text="An old one").locator("td.date")
        assert old.inner_text() == "7/10/12"
        page.set_viewport_size({"width": SIZES["wide"][0], "height": SIZES["wide"][1]})
        page.wait_for_function("""[...document.querySelectorAll('tr.message-row')]
            .find((tr) => tr.textContent.includes('An old one')).querySelector('td.date').textContent
            === 'Jul 10, 2012'""")
    page.context.close()


def test_every_control_has_a_name(browser, live_web, alice):
    account = account_row(alice)
    stored_message(alice, account, subject="Named")
    page = inbox_page(browser, live_web, alice)
    rows(page).first.wait_for()
    page.click("#more-filters summary")
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, button')]
        .filter((e) => !e.closest('[hidden]') && !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map((e) => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    assert rows(page).first.locator("input.select").get_attribute("aria-label") == "Select: Named"
    page.context.close()


def test_the_sidebar_counts_unread_live_and_new_mail_is_announced(browser, live_web, alice, request):
    account = account_row(alice, name="Alice")
    inbox = account.folders.get(name="INBOX")
    stored_message(alice, account, subject="Already here")
    page = inbox_page(browser, live_web, alice)
    badge = page.locator(f"#sidebar a[data-folder='{inbox.pk}'] .badge")
    page.wait_for_function(f"document.querySelector(\"#sidebar a[data-folder='{inbox.pk}'] .badge\").textContent === '1'")

    fresh = stored_message(alice, account, subject="Fresh news", sender="dora@example.test")
    off_the_event_loop(publish_for_message, fresh, "message.new", {"id": str(fresh.pk)})
    rows(page).filter(has_text="Fresh news").wait_for()
    page.wait_for_function(f"document.querySelector(\"#sidebar a[data-folder='{inbox.pk}'] .badge\").textContent === '2'")
    assert page.locator("#unread-all").inner_text() == "2"
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert page.inner_text("#announcer") == "New message from Carol: Fresh news"
    page.wait_for_function("document.title.startsWith('(2) ')")
    assert badge.get_attribute("aria-label") == "2 unread"
    page.context.close()


def test_filters_and_search_live_in_the_url_and_back_restores_them(browser, live_web, alice, request):
    account = account_row(alice, name="Alice")
    archive = account.folders.get(name="Archive")
    stored_message(alice, account, subject="Budget for 2027", text="numbers")
    stored_message(alice, account, subject="Budget archived", text="old numbers", folder="Archive")
    stored_message(alice, account, subject="Lunch", text="pizza")
    page = inbox_page(browser, live_web, alice)
    rows(page).nth(2).wait_for()

    page.click(f"#sidebar a[data-folder='{archive.pk}']")
    page.wait_for_url(re.compile(rf".*\?folder={archive.pk}$"))
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 1")
    assert page.inner_text("h1").endswith("/ Archive")

    page.click("#sidebar a[data-folder='']")
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 3")
    page.fill("#search", "budget")
    page.wait_for_url(re.compile(r".*\?q=budget$"))
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 2")
    page.wait_for_function("document.getElementById('list-counts').textContent === '2 results'")
    assert page.locator("tr.message-row mark").first.inner_text() == "Budget"

    # Open a result, come Back: the search is still there, and so are its results.
    rows(page).filter(has_text="Budget for 2027").locator("td.sender").click()
    page.wait_for_url(re.compile(r".*/messages/.*"))
    page.go_back()
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 2")
    assert page.input_value("#search") == "budget"
    # Back again: the folder view, then everything.
    page.go_back()
    page.wait_for_url(re.compile(r".*/$"))
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 3")
    page.go_back()
    page.wait_for_function("document.querySelectorAll('tr.message-row').length === 1")
    # Bookmarkable: a fresh page at the URL shows the same view.
    other = page.context.new_page()
    other.goto(f"{live_web.url}/?q=lunch")
    other.wait_for_function("document.querySelectorAll('tr.message-row').length === 1")
    assert other.inner_text("h1") == "Search: lunch"
    page.context.close()


def test_empty_loading_and_error_states_say_what_to_do(browser, live_web, alice, request):
    page = inbox_page(browser, live_web, alice)
    page.wait_for_selector("#empty:not([hidden])")
    assert "No mail yet" in page.inner_text("#empty")
    assert "No mail accounts yet" in page.inner_text("#sidebar")
    page.screenshot(path=str(screenshot_path(request, "-empty")))

    account = account_row(alice)
    stored_message(alice, account, subject="Back again")
    # The list call fails once (a proxy's 500, say), then works: Retry recovers. The first call
    # is held a moment, so the loading skeleton shows first.
    held = []
    page.route(re.compile(r".*/api/messages/\?.*"), lambda route: held.append(route))
    page.reload()
    page.wait_for_selector("#loading:not([hidden])")
    assert page.get_attribute("#search", "aria-busy") == "true"
    page.screenshot(path=str(screenshot_path(request, "-loading")))
    held[0].fulfill(status=500, content_type="application/json", body='{"error": "database unavailable"}')
    page.wait_for_selector("#failed:not([hidden])")
    assert "database unavailable" in page.inner_text("#failed")
    page.screenshot(path=str(screenshot_path(request, "-error")))
    page.unroute(re.compile(r".*/api/messages/\?.*"))
    page.click("#retry")
    rows(page).first.wait_for()
    assert page.locator("#failed").is_hidden()
    page.fill("#search", "nothing-like-this")
    page.wait_for_selector("#empty:not([hidden])")
    assert page.inner_text("#empty-text") == "No messages match this search."
    page.context.close()


def test_an_expired_session_goes_to_the_login_page_and_comes_back(browser, live_web, alice, request):
    from django.contrib.sessions.models import Session

    account = account_row(alice)
    stored_message(alice, account, subject="Keep me")
    page = inbox_page(browser, live_web, alice, path="/?q=keep")
    rows(page).first.wait_for()
    Session.objects.all().delete()  # logged out elsewhere, or expired

    # An action answers 401: straight to the login page, with the way back. (A count still
    # loading may get its 401 first and go there sooner: the same path.)
    with contextlib.suppress(PlaywrightError):
        page.evaluate("Mailgate.api('/api/messages/batch/', {method: 'POST', body: {action: 'read', ids: []}})"
                      ".catch(() => {})")
    page.wait_for_url(re.compile(r".*/accounts/login/\?next=%2F%3Fq%3Dkeep$"))

    # The live socket drops while the session is gone: no reconnect storm, the login page.
    login(page, alice)
    sockets = []
    page.route_web_socket(re.compile(r".*/ws/events/$"), lambda ws: (sockets.append(ws), ws.connect_to_server()))
    page.goto(live_web.url + "/")
    page.wait_for_selector("body[data-ws=open]")
    assert len(sockets) == 1
    Session.objects.all().delete()
    sockets[0].close()
    page.wait_for_url(re.compile(r".*/accounts/login/\?next=%2F$"))
    assert len(sockets) == 1
    page.context.close()


def test_the_keyboard_drives_the_list(browser, live_web, alice, dovecot, mail_user, request):
    from imap.sync import sync_account_now
    from pipeline.models import Message

    dovecot.create_folder(mail_user.name, "Archive")
    for n in range(4):
        dovecot.append(mail_user.name, "INBOX", mail_from_carol(f"Note {n}"))
    account = dovecot_account_row(alice, dovecot, mail_user)
    off_the_event_loop(lambda: sync_account_now(account, ignore_backoff=True))
    by_subject = {m.subject: m for m in Message.objects.filter(account=account)}
    page = inbox_page(browser, live_web, alice)
    rows(page).nth(3).wait_for()
    order = [rows(page).nth(i).get_attribute("data-id") for i in range(4)]
    assert order == [str(by_subject[f"Note {n}"].pk) for n in (3, 2, 1, 0)]
    page.keyboard.press("j")
    page.keyboard.press("j")
    current = page.locator("tr.message-row.current")
    assert current.get_attribute("data-id") == order[1]
    page.keyboard.press("k")
    assert current.get_attribute("data-id") == order[0]
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    assert page.inner_text("#selection-count") == "2 selected"
    page.keyboard.press("s")
    page.wait_for_function("document.querySelectorAll('tr.message-row[data-flagged=true]').length === 2")
    page.keyboard.press("r")
    page.wait_for_function("document.querySelectorAll('tr.message-row[data-unread=false]').length === 2")
    page.keyboard.press("Escape")
    assert page.inner_text("#selection-count") == "0 selected"
    page.keyboard.press("u")  # nothing selected: the highlighted row (order[1])
    page.wait_for_function(f"document.querySelector(\"tr[data-id='{order[1]}']\").dataset.unread === 'true'")
    page.keyboard.press("j")
    page.keyboard.press("e")  # archive the highlighted row: to the Archive folder on the server
    page.wait_for_selector("#undo-bar:has-text('Archived (1).')")
    assert dovecot.flags(mail_user.name, "Archive") != {}
    page.keyboard.press("#")  # delete: to the Trash, made on the server the first time
    page.wait_for_selector("#undo-bar:has-text('Moved to Trash (1).')")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    page.wait_for_selector("#help[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help", state="hidden")
    page.keyboard.press("k")
    target = current.get_attribute("data-id")
    page.keyboard.press("o")
    page.wait_for_url(re.compile(rf".*/messages/{target}/$"))
    page.context.close()


def bulk_messages(owner, account, count: int) -> None:
    """`count` list-ready messages in the account's INBOX, made by the database itself: copies of
    one ORM-made message and its location, with their own ids, identities, subjects and UIDs.
    (Python-side bulk_create took over five minutes for 100,000 on a loaded 2-core machine.)"""
    from django.db import connection

    from frontend import search
    from imap.models import MessageLocation
    from pipeline.models import Message

    template = stored_message(owner, account, subject="Bulk template", text="body", flags=["\\Seen"])
    location = template.locations.get()
    sqlite = connection.vendor == "sqlite"
    new_id = "lower(hex(randomblob(16)))" if sqlite else "md5(random()::text || seq.n::text)::uuid"
    varying = {"id": new_id, "identity": "'bulk-' || seq.n", "message_id": "'<bulk' || seq.n || '@example.test>'",
               "subject": "'Bulk message number ' || seq.n", "snippet": "'snippet of message ' || seq.n"}
    qn = connection.ops.quote_name
    columns = [f.column for f in Message._meta.concrete_fields]
    select = ", ".join(varying.get(c, f"t.{qn(c)}") for c in columns)
    loc_columns = [f.column for f in MessageLocation._meta.concrete_fields if f.column != "id"]
    loc_varying = {"message_id": "b.mid", "uid": "b.n"}
    loc_select = ", ".join(loc_varying.get(c, f"t.{qn(c)}") for c in loc_columns)
    with connection.cursor() as cursor:
        if sqlite:
            # The search index's per-row trigger costs minutes here; these rows are for scrolling,
            # not searching. install() puts the triggers back.
            for name in ("insert", "update", "delete"):
                cursor.execute(f"DROP TRIGGER IF EXISTS frontend_message_fts_{name}")
        cursor.execute(
            f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
            f"INSERT INTO {qn(Message._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
            f"SELECT {select} FROM seq CROSS JOIN {qn(Message._meta.db_table)} t WHERE t.identity = %s",
            [count, template.identity])
        cursor.execute(
            f"INSERT INTO {qn(MessageLocation._meta.db_table)} ({', '.join(qn(c) for c in loc_columns)}) "
            f"SELECT {loc_select} FROM (SELECT id AS mid, ROW_NUMBER() OVER (ORDER BY id) + 1000000 AS n "
            f"FROM {qn(Message._meta.db_table)} WHERE identity LIKE 'bulk-%%') b "
            f"CROSS JOIN {qn(MessageLocation._meta.db_table)} t WHERE t.id = %s", [location.pk])
        if not sqlite:
            # What autovacuum does within a minute of such a load: without statistics the planner
            # takes the 100,000 new rows for a handful and chooses its plans accordingly.
            cursor.execute(f"ANALYZE {qn(Message._meta.db_table)}, {qn(MessageLocation._meta.db_table)}")
    search.install()


# Scrolls one viewport per frame for `frames` frames; records each frame's gap and, after each
# scroll, the time until the row now at the top of the viewport is in the DOM.
# The same two frames without scrolling: what this (shared, loaded) machine gives any page.
IDLE_PROBE = """async (frames) => {
  const gaps = [];
  for (let i = 0; i < frames; i++) {
    const started = performance.now();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    gaps.push(performance.now() - started);
  }
  return gaps;
}"""
SCROLL_PROBE = """async (frames) => {
  const tbody = document.getElementById('message-rows');
  const gaps = [], renders = [], paints = [];
  let maxRows = 0, last = performance.now();
  for (let i = 0; i < frames; i++) {
    const started = performance.now();
    window.scrollBy(0, window.innerHeight);
    // Two frames, or 1 s at most: Chromium can stop animation frames for a while (it hung this
    // probe for pytest's 300 s once in CI); then the check below still says what was painted.
    let fired = false;
    await new Promise((r) => {
      requestAnimationFrame(() => requestAnimationFrame(() => { fired = true; r(); })); setTimeout(r, 1000);
    });
    const now = performance.now();
    // The row under the sticky toolbar must be painted: a spacer there would be a blank screen.
    const probe = document.elementFromPoint(window.innerWidth - 300, window.innerHeight / 2);
    renders.push({ms: now - started, fired, painted: Boolean(probe && probe.closest('tr.message-row'))});
    gaps.push(now - last); last = now;
    maxRows = Math.max(maxRows, tbody.querySelectorAll('tr.message-row').length);
    paints.push(Number(tbody.dataset.paintMs));
  }
  return {gaps, renders, paints, maxRows, loaded: Number(tbody.dataset.loaded), y: window.scrollY};
}"""


@pytest.mark.slow
def test_a_folder_of_100000_messages_scrolls_with_a_bounded_dom(browser, live_web, alice, request):
    account = account_row(alice, name="Big")
    bulk_messages(alice, account, 100_000)
    page = inbox_page(browser, live_web, alice)
    rows(page).first.wait_for()
    page.wait_for_function("document.getElementById('list-counts').textContent.startsWith('100,001 messages')",
                           timeout=60_000)

    # Page on (keyset, 200 rows a call) until 5,000 rows are held, scrolling as a reader would.
    while page.evaluate("Number(document.getElementById('message-rows').dataset.loaded)") < 5000:
        held = page.evaluate("Number(document.getElementById('message-rows').dataset.loaded)")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        page.wait_for_function(f"Number(document.getElementById('message-rows').dataset.loaded) > {held}",
                               timeout=60_000)  # a page of 200 rows; generous for a loaded CI machine
    page.evaluate("window.scrollTo(0, 0)")
    idle = sorted(page.evaluate(IDLE_PROBE, 60))
    result = page.evaluate(SCROLL_PROBE, 120)
    stalled = sum(1 for r in result["renders"] if not r["fired"])
    if stalled > 12:
        # Chromium stopped producing animation frames (seen once in CI: a frame gap of 1.0 s for
        # 110 of 120 scrolls, after a normal idle probe), so the list was never given a frame to
        # render in: nothing about the list was measured. Measure once more.
        print(f"no animation frame in {stalled} of 120 scrolls; probing again", file=sys.stderr)
        page.evaluate("window.scrollTo(0, 0)")
        result = page.evaluate(SCROLL_PROBE, 120)
        stalled = sum(1 for r in result["renders"] if not r["fired"])
    assert stalled <= 12, f"Chromium gave no animation frame in {stalled} of 120 scrolls, twice: nothing measured"
    gaps = sorted(result["gaps"])
    renders = sorted(r["ms"] for r in result["renders"])
    # Painted within the two frames the list had to render in.
    unpainted = sum(1 for r in result["renders"] if r["fired"] and not r["painted"])
    figures = {"loaded": result["loaded"], "max_dom_rows": result["maxRows"],
               "frame_gap_median_ms": round(statistics.median(gaps), 1),
               "frame_gap_p95_ms": round(gaps[int(len(gaps) * 0.95) - 1], 1),
               "render_after_scroll_median_ms": round(statistics.median(renders), 1),
               "render_after_scroll_max_ms": round(max(renders), 1), "unpainted_frames": unpainted,
               "idle_two_frames_median_ms": round(statistics.median(idle), 1),
               "scroll_vs_idle_ratio": round(statistics.median(renders) / statistics.median(idle), 2),
               "paint_js_median_ms": round(statistics.median(result["paints"]), 2),
               "paint_js_max_ms": round(max(result["paints"]), 2)}
    print("virtual scrolling, 100,000 messages (shared 2-core machine):", figures)
    (screenshot_path(request, "-figures").with_suffix(".txt")).write_text(repr(figures))
    # The DOM holds a window of the viewport plus overscan (about 55 rows at 900 px), never the
    # thousands loaded; each scroll is painted within two frames, with no blank screen.
    assert result["loaded"] >= 5000
    assert result["maxRows"] <= 80
    assert unpainted == 0
    # Smooth: the list's own work for a scroll of a whole viewport is a few ms (printed above).
    # The bound asserted is loose, because on a loaded CI machine every JS timing stretches; a list
    # that rendered its thousands of loaded rows would take hundreds of ms and still fail it.
    assert statistics.median(result["paints"]) < 40, figures
    page.screenshot(path=str(screenshot_path(request)))

    # Live mail still lands on top of a list this size.
    fresh = stored_message(alice, account, subject="Fresh on top of 100k")
    off_the_event_loop(publish_for_message, fresh, "message.new", {"id": str(fresh.pk)})
    page.wait_for_selector("#new-pill:not([hidden])")
    page.click("#new-pill")
    rows(page).first.filter(has_text="Fresh on top of 100k").wait_for()
    assert rows(page).count() <= 80
    page.context.close()


def test_no_404_for_the_favicon_and_the_subscriber_admin_fits_the_window(browser, live_web, admin_user, request):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    missing = []
    page.on("response", lambda response: response.status == 404 and missing.append(response.url))
    login(page, live_web, "admin", "admin-password")
    open_live(page, live_web)
    page.goto(live_web.url + "/admin/pipeline/subscriber/add/")
    page.wait_for_selector("#subscriber_form")
    assert page.inner_text("#site-name") == "mailgate administration"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    page.screenshot(path=str(screenshot_path(request, "-subscriber")), full_page=True)
    status, _ = live_web.get("/favicon.ico")
    assert status == 200
    assert missing == []
    context.close()
