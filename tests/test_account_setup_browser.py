"""Account setup in a real browser: the form tested before saving, folders synced at once with
their progress shown, Sync now, import upload, and "Connect with ..." through the local OAuth2
provider's consent page (Chromium, daphne, a `manage.py worker`, Dovecot, Redis)."""

from __future__ import annotations

import itertools
import signal

import pytest

from imap.models import Account
from pipeline.models import Message
from tests.builders import eml
from tests.servers import procs
from tests.servers.browser import login, off_the_event_loop, open_live, screenshot_path
from tests.servers.oauth_fixtures import oauth_env, oauth_mail
from tests.servers.ports import HOST, free_port
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

_logs = itertools.count(1)


@pytest.fixture
def start_worker():
    """Factory: a `manage.py worker` publishing to the browser's channel layer; stopped after."""
    started = []

    def start(web, **env):
        proc = procs.start(["manage.py", "worker"], f"accounts-worker-{next(_logs)}", REDIS_URL=web.redis_url,
                           MAILGATE_CHANNEL_LAYER="", MAILGATE_CHANNEL_PREFIX=web.channel_prefix,
                           MAILGATE_IMAP_TIMEOUT="5", **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        procs.stop(proc, signal.SIGTERM, timeout=10)


def watch_progress(page) -> None:
    """Record every text the progress line shows, however briefly (it hides when a folder is done)."""
    page.evaluate("""() => { window.progressSeen = [];
        const line = document.getElementById("acc-progress");
        new MutationObserver(() => { if (!line.hidden) window.progressSeen.push(line.textContent); })
          .observe(line, {childList: true, characterData: true, subtree: true, attributes: true}); }""")


def folder_state(page, account, folder):
    return page.locator(f"#account-{account.pk} tr[data-folder='{folder}'] .folder-state")


def screenshots(page, request, name: str) -> None:
    for width in (1366, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(screenshot_path(request, f"-{name}-{width}")), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    page.set_viewport_size({"width": 1366, "height": 900})


def test_the_form_refuses_a_typo_then_saves_tested_settings_and_syncs_the_chosen_folders_with_progress(
        page, live_web, alice, dovecot, mail_user, start_worker, request):
    dovecot.create_folder(mail_user.name, "Projects")
    dovecot.create_folder(mail_user.name, "Lists")
    for n in range(4):
        dovecot.append(mail_user.name, "INBOX", eml(subject=f"Inbox {n}", message_id=f"<in-{n}@example.test>"))
        dovecot.append(mail_user.name, "Projects", eml(subject=f"Project {n}", message_id=f"<pr-{n}@example.test>"))
    dovecot.append(mail_user.name, "Lists", eml(subject="List", message_id="<list@example.test>"))
    login(page, alice)
    page.goto(f"{live_web.url}/mail-accounts/")
    page.click("#add-account")
    page.fill("#id_display_name", "Work")
    page.fill("#id_email", f"{mail_user.name}@example.test")
    page.fill("#id_host", dovecot.host)
    page.select_option("#id_security", "none")
    page.fill("#id_port", str(dovecot.port))
    page.fill("#id_username", mail_user.name)
    page.fill("#id_password", "a typo")
    page.click("#save-button")
    assert "The connection test failed: authentication failed" in page.locator("#form-error").inner_text()
    assert not Account.objects.exists()
    screenshots(page, request, "form-failed")

    page.fill("#id_password", mail_user.password)
    page.click("#test-button")
    page.wait_for_selector("#test-ok")
    choices = page.locator("#folder-choice input[type=checkbox]")
    assert sorted(choices.evaluate_all("boxes => boxes.map(b => b.value)")) == ["INBOX", "Lists", "Projects"]
    page.uncheck("#folder-choice input[value=Lists]")
    screenshots(page, request, "form-tested")
    page.click("#save-button")
    page.wait_for_url("**/mail-accounts/?added=*")
    account = Account.objects.get()
    assert account.enabled and account.folders_include == ["INBOX", "Projects"]
    page.wait_for_selector("body[data-ws=open]")
    watch_progress(page)

    # The first sync was queued on save; a worker started now runs it while the page watches.
    # Headers two at a time: a progress event each. One worker process, so the events arrive in
    # the order they were numbered (two publishing at once can deliver out of order; the page
    # then re-reads the state from the API, covered by the folders reaching "synced" below).
    start_worker(live_web, MAILGATE_SYNC_BATCH_SIZE="1", MAILGATE_WORKERS="1", MAILGATE_BULK_WORKERS="1")
    for folder in ("INBOX", "Projects"):
        eventually(lambda: folder_state(page, account, folder).get_attribute("data-done") == "1", 30,
                   f"{folder} synced on the page")
    seen = page.evaluate("() => window.progressSeen")
    assert any("Work / INBOX: 2 of 4" in text for text in seen), seen
    assert any("Work / Projects: 2 of 4" in text for text in seen), seen
    assert "not chosen" in folder_state(page, account, "Lists").inner_text()
    assert Message.objects.filter(account=account).count() == 8
    screenshots(page, request, "list")

    # Sync now: a message that arrived since is fetched on request, not 5 minutes later.
    dovecot.append(mail_user.name, "INBOX", eml(subject="Later", message_id="<later@example.test>"))
    watch_progress(page)
    page.click(f"#account-{account.pk} button.sync-now")
    page.wait_for_selector(".acc-msg.success >> text=Syncing Work now.")
    page.wait_for_selector("body[data-ws=open]")
    eventually(lambda: Message.objects.filter(account=account, message_id__contains="later@").exists(), 30,
               "the new message stored by Sync now")


def test_an_upload_is_imported_and_a_bad_file_is_refused_by_name(page, live_web, alice, tmp_path, request):
    from tests.builders import account_row

    account = account_row(alice, name="Archive")
    good = tmp_path / "note.eml"
    good.write_bytes(eml(subject="Uploaded note", message_id="<uploaded@example.test>"))
    bad = tmp_path / "photo.eml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    login(page, alice)
    page.goto(f"{live_web.url}/mail-accounts/")
    card = page.locator(f"#account-{account.pk}")
    card.locator("summary").click()
    card.locator("input[type=file]").set_input_files(str(good))
    card.locator("form[enctype] button[type=submit]").click()
    message = page.locator(".acc-msg.success")
    assert "Imported 1 message from note.eml" in message.inner_text() and "1 new" in message.inner_text()
    assert Message.objects.filter(account=account, subject="Uploaded note").count() == 1
    # It shows in the inbox, in the account's Imported folder (it has no location on any server).
    page.goto(f"{live_web.url}/inbox/")
    page.wait_for_selector("#message-rows tr.message-row >> text=Uploaded note")
    page.click("#sidebar a.folder-link >> text=Imported")
    page.wait_for_selector("#list-title >> text=Imported")
    page.wait_for_selector("#message-rows tr.message-row >> text=Uploaded note")
    screenshots(page, request, "imported-folder")
    page.goto(f"{live_web.url}/mail-accounts/")

    card = page.locator(f"#account-{account.pk}")
    card.locator("summary").click()
    # Over the cap: refused in the page, before the web server would cut the upload off with a 413.
    card.locator("form[enctype]").evaluate(
        "form => { form.dataset.maxBytes = '10'; form.dataset.maxText = '10 bytes'; }")
    card.locator("input[type=file]").set_input_files(str(good))
    card.locator("form[enctype] button[type=submit]").click()
    assert "the limit is 10 bytes" in card.locator("form[enctype] .acc-field-error").inner_text()
    assert Message.objects.filter(account=account).count() == 1

    page.reload()
    card = page.locator(f"#account-{account.pk}")
    card.locator("summary").click()
    card.locator("input[type=file]").set_input_files(str(bad))
    card.locator("form[enctype] button[type=submit]").click()
    assert "photo.eml: this is a binary file, not mail." in page.locator(".acc-msg.error").inner_text()
    screenshots(page, request, "import-refused")


def test_connect_with_a_provider_in_the_browser_adds_the_account_and_its_inbox_fills(
        page, alice, start_web, start_worker, provider, oauth_dovecot, generic, oauth_user, request):
    for n in range(3):
        oauth_dovecot.append(oauth_user, "INBOX", oauth_mail(100 + n))
    port = free_port()
    env = {**oauth_env(provider, oauth_dovecot), "MAILGATE_PUBLIC_BASE_URL": f"http://{HOST}:{port}"}
    web = start_web(port=port, **env)
    provider.sign_in_as = oauth_user
    login(page, alice)
    page.goto(f"{web.url}/mail-accounts/add/")
    page.click("#connect-generic")
    page.wait_for_selector("text=Sign in as " + oauth_user)  # the provider's own consent page
    page.click("#approve")
    page.wait_for_url("**/mail-accounts/?connected=*")
    account = Account.objects.get()
    assert (account.email, account.owner, account.auth_method) == (oauth_user, alice, Account.AuthMethod.OAUTH2)
    assert "Connected " + oauth_user in page.locator(".acc-msg.success").inner_text()
    screenshots(page, request, "connected")

    open_live(page, web, "/")
    start_worker(web, **env)  # runs the first sync the callback queued
    for n in range(3):
        page.wait_for_selector(f"tr.message-row >> text=OAuth {100 + n}", timeout=30_000)
    assert provider.token_requests.count({"grant_type": "authorization_code"}) == 1

    # Revoked at the provider: the account stops at "Sign-in expired" and Reconnect signs the same
    # account in again; nothing is lost or fetched twice.
    provider.revoke(oauth_user)
    oauth_dovecot.append(oauth_user, "INBOX", oauth_mail(103))
    from imap.sync import sync_account_now

    off_the_event_loop(sync_account_now, account, ignore_backoff=True)
    account.refresh_from_db()
    assert account.state == Account.State.SIGN_IN_EXPIRED
    page.goto(f"{web.url}/mail-accounts/")
    assert page.locator(f"#account-{account.pk} [data-role=state]").inner_text() == "Sign-in expired: reconnect"
    page.click(f"#account-{account.pk} a.reconnect")
    page.click("#approve")
    page.wait_for_url("**/mail-accounts/?connected=*")
    assert Account.objects.count() == 1
    page.goto(f"{web.url}/")
    page.wait_for_selector("tr.message-row >> text=OAuth 103", timeout=30_000)
    assert Message.objects.filter(account=account).count() == 4
    assert page.locator("tr.message-row").count() == 4


def test_the_edit_page_keeps_the_stored_password_and_fits_a_phone(page, live_web, alice, request):
    from tests.builders import account_row

    account = account_row(alice, name="Home")
    login(page, alice)
    page.goto(f"{live_web.url}/mail-accounts/")
    page.click(f"#account-{account.pk} a.edit")
    assert page.locator("#id_password").input_value() == ""  # never rendered from the database
    assert "Leave empty to keep the stored password." in page.inner_text("form.acc-form")
    assert sorted(page.locator("#folder-choice input:checked").evaluate_all("boxes => boxes.map(b => b.value)")) \
        == ["Archive", "INBOX", "Trash"]
    screenshots(page, request, "edit")
