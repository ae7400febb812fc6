"""A real browser for acceptance tests: Debian's Chromium driven by Playwright.

Playwright is pointed at /usr/bin/chromium with `executable_path`; its own browser download is
never used (this machine cannot fetch it). Pair with the daphne fixtures in tests/servers/web.py:

    @pytest.mark.browser
    @pytest.mark.django_db(transaction=True)
    def test_something(page, live_web, admin_user):
        login(page, live_web.url, "admin", "admin-password")
        page.goto(live_web.url + "/admin/")

Fixtures:
    browser   a headless Chromium for one test
    page      a fresh context and page; a failed test leaves a screenshot in test-output/
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from django.db import connections

from tests.servers import procs

CHROMIUM = os.environ.get("MAILGATE_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which a
# closed network refuses many times a second; --no-sandbox because tests run as root.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]
OUTPUT_DIR = Path(procs.ROOT) / "test-output"


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is not None


@pytest.fixture
def browser():
    """A headless Chromium for one test.

    Function-scoped on purpose: while Playwright's sync API is alive it marks an event loop as
    running in this thread, and Django then refuses every ORM call as "async unsafe", in this
    test and in any later one. For the life of the browser we allow them (the test body's ORM
    calls really are synchronous; Playwright's loop never touches Django) and restore the
    environment afterwards.
    """
    if not chromium_available():
        # scripts/system-packages installs it; in CI a missing browser is a failure, never a skip.
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium not found at {CHROMIUM}")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                yield chromium
            finally:
                chromium.close()
                # While Playwright's loop runs, Django keeps this thread's ORM connections apart
                # from the ones it uses outside it (asgiref's Local is per context then), and the
                # test database teardown cannot reach them: close them here, inside.
                connections.close_all()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def screenshot_path(request, suffix: str = "") -> Path:
    """test-output/<test name><suffix>.png, with a name safe on any file system."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    return OUTPUT_DIR / f"{name}{suffix}.png"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"mailgate_report_{report.when}", report)


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page; a failed test leaves a screenshot in test-output/."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "mailgate_report_call", None)
        if report is not None and report.failed:
            try:
                page.screenshot(path=str(screenshot_path(request, "-failed")), full_page=True)
            except Exception:  # noqa: BLE001 - a screenshot must not hide the real failure
                pass
        context.close()


def off_the_event_loop(fn, *args, **kwargs):
    """Run `fn` in a worker thread and return its result (or raise its exception).

    While Playwright's sync API runs, this thread counts as "inside an event loop": async_to_sync
    (used by channel-layer publishing) refuses to run here. A plain thread has no loop.
    """
    result: dict = {}

    def run():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=run, name="off-the-event-loop")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def login(page, server_or_user, username: str | None = None, password: str | None = None) -> None:
    """Log a page in.

    `login(page, server, "admin", "admin-password")` with a server (or base URL string) goes
    through the admin login form, as a person would (staff users). `login(page, user)` with any
    user (personas from tests/conftest.py are not staff) plants a session cookie for 127.0.0.1,
    where every test server listens; no form round trip.
    """
    if username is None:
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(server_or_user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session,
                                   "domain": "127.0.0.1", "path": "/", "httpOnly": True}])
        return
    base_url = getattr(server_or_user, "url", server_or_user)
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))


def open_live(page, server, path: str = "/", user=None) -> None:
    """Open `path` of `server` (logged in as `user` first, when given) and wait until the page's
    live socket is open, so that an event published from now on reaches it."""
    if user is not None:
        login(page, user)
    page.goto(getattr(server, "url", server) + path)
    page.wait_for_selector("body[data-ws=open]")
