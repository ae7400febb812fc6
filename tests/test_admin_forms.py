"""The admin's JSON columns edited with proper widgets, in a real browser: folders and subscriber
addresses one per line, a service's settings as name/value rows with clear errors, only the
selected kind's secret fields shown, and the index's queue table beside "Recent actions"."""

from __future__ import annotations

import pytest

from imap.models import Account
from outgoing.models import Service
from pipeline.models import Subscriber
from tests.builders import account_row
from tests.servers.browser import login, screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# private_server_for_admin_saves: a test that saves in the admin runs on a daphne of its own. The
# admin's change log caches ContentType ids in the server process, and the database flush between
# transactional tests renumbers them: on the shared server a later test's save would then fail
# with a foreign key error.


def admin_page(page, live_web, path):
    login(page, live_web, "admin", "admin-password")
    page.goto(live_web.url + path)


def test_a_service_shows_only_its_kinds_secrets_and_takes_settings_as_rows(page, start_web, admin_user, request):
    live_web = start_web()  # see private_server_for_admin_saves
    admin_page(page, live_web, "/admin/outgoing/service/add/")
    page.select_option("#id_kind", "slack")
    assert page.is_visible(".form-row.field-webhook_url")
    assert page.is_hidden(".form-row.field-bot_token") and page.is_hidden(".form-row.field-auth_token")
    page.select_option("#id_kind", "telegram")
    assert page.is_visible(".form-row.field-bot_token") and page.is_hidden(".form-row.field-webhook_url")
    assert "chat_id" in page.inner_text("#settings-known-keys")

    page.fill("#id_name", "Team chat")
    page.fill("#id_bot_token", "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11")
    keys, values = page.locator("input.settings-key"), page.locator("textarea.settings-value")
    keys.nth(0).fill("chat_id")
    values.nth(0).fill("-1001234")
    keys.nth(1).fill("chat_id")
    values.nth(1).fill("5")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "“chat_id” is given twice" in page.inner_text(".errorlist")
    page.screenshot(path=str(screenshot_path(request, "-error")), full_page=True)

    page.locator("input.settings-key").nth(1).fill("template")
    page.locator("textarea.settings-value").nth(1).fill("{subject}")
    page.fill("#id_bot_token", "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    service = Service.objects.get(name="Team chat")
    assert service.config == {"chat_id": -1001234, "template": "{subject}"}
    # Shown back as rows, and saved again unchanged.
    assert page.locator("input.settings-key").nth(0).input_value() == "chat_id"
    assert page.locator("textarea.settings-value").nth(1).input_value() == "{subject}"
    page.screenshot(path=str(screenshot_path(request)), full_page=True)


def test_folders_and_addresses_are_one_per_line_and_stored_as_lists(page, start_web, admin_user, request):
    live_web = start_web()  # see private_server_for_admin_saves
    account = account_row(admin_user, name="Work")
    Account.objects.filter(pk=account.pk).update(folders_include=["INBOX", "Lists/*"])
    admin_page(page, live_web, f"/admin/imap/account/{account.pk}/change/")
    assert page.input_value("#id_folders_include") == "INBOX\nLists/*"
    assert "On the server:" in page.inner_text(".field-folders_include")
    page.fill("#id_folders_exclude", "Spam\n\nTrash\n")
    page.fill("#id_push_folders", "INBOX\nAlerts")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    account.refresh_from_db()
    assert (account.folders_include, account.folders_exclude, account.push_folders) == (
        ["INBOX", "Lists/*"], ["Spam", "Trash"], ["INBOX", "Alerts"])
    page.screenshot(path=str(screenshot_path(request, "-account")), full_page=True)

    page.goto(live_web.url + "/admin/pipeline/subscriber/add/")
    # The subscriptions inline no longer makes the page wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    page.fill("#id_name", "Dora")
    page.fill("#id_addresses", "dora@example.test\n+15550100\nnot an address")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "Line 3 (not an address): an address has no spaces" in page.inner_text(".field-addresses .errorlist")
    page.fill("#id_addresses", "dora@example.test\n+15550100")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert Subscriber.objects.get(name="Dora").addresses == ["dora@example.test", "+15550100"]


def test_the_queue_table_leaves_recent_actions_at_the_top(page, live_web, admin_user, request):
    admin_page(page, live_web, "/admin/")
    queue = page.locator("#pipeline-queue-depth").bounding_box()
    recent = page.locator("#recent-actions-module").bounding_box()
    assert recent["y"] < 200, recent
    assert recent["x"] > queue["x"] + queue["width"] - 1  # beside it, not below
    page.screenshot(path=str(screenshot_path(request)), full_page=True)
