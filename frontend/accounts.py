"""Account setup inside the app: the list of one's accounts, a password account form that tests
the connection before saving, "Connect with ..." (OAuth2), Reconnect, Sync now, folder choice,
mail-file import and delete.

A user manages only the accounts they own (access.owned_accounts); accounts shared with them are
read in the inbox but not listed here. Thin views: the logic is imap/accounts.py (connection test,
first sync), imap/oauth/ (sign-in), imap/importer.py (import) and imap/queue.py (sync requests).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from frontend import access
from frontend.account_forms import (FORM_OVERHEAD, DisplayForm, ImportForm, PasswordAccountForm, import_cap,
                                    megabytes)
from imap import account_state, accounts as imap_accounts, importer, queue
from imap.models import Account, Folder
from imap.oauth import flow, grants, providers
from mailgate.realtime import current_seq

log = logging.getLogger(__name__)

# A person waits for this answer: shorter than a batch sync's MAILGATE_IMAP_TIMEOUT may be.
FORM_TEST_TIMEOUT = 15.0


def _page(request, template, **context):
    context.setdefault("seq", current_seq(request.user.pk))
    return render(request, template, context)


def _account(request, account_id) -> Account:
    return access.get_or_404(access.owned_accounts(request.user), pk=account_id)


def _selectable_names(account: Account) -> list[str]:
    names = account.folders.filter(present=True, selectable=True).values_list("name", flat=True)
    return sorted(names, key=lambda name: (name.upper() != "INBOX", name.casefold()))


@login_required
def index(request):
    rows = (access.owned_accounts(request.user).select_related("oauth_grant")
            .prefetch_related("folders").order_by("display_name", "pk"))
    labels = {provider.key: provider.label for provider in providers.enabled()}
    listed = []
    for account in rows:
        grant = getattr(account, "oauth_grant", None) if account.auth_method == Account.AuthMethod.OAUTH2 else None
        folders = sorted((f for f in account.folders.all() if f.present and f.selectable),
                         key=lambda f: (f.name.upper() != "INBOX", f.name.casefold()))
        listed.append({"account": account, "folders": folders,
                       "oauth": account.auth_method == Account.AuthMethod.OAUTH2,
                       "expired": account.state == Account.State.SIGN_IN_EXPIRED,
                       "stopped": account.state in account_state.STOPPED_STATES,
                       "provider": grant.provider if grant else "",
                       "provider_label": labels.get(grant.provider, grant.get_provider_display()) if grant else ""})
    return _page(request, "frontend/accounts/list.html", rows=listed, providers=providers.enabled(),
                 import_form=ImportForm(), added=request.GET.get("connected") or request.GET.get("added"),
                 import_cap=import_cap(), import_cap_text=megabytes(import_cap()))


def _test(form: PasswordAccountForm, account: Account):
    """Run the connection test on `account` (unsaved values); adds the failure to the form."""
    report = imap_accounts.check_connection(
        account, timeout=min(FORM_TEST_TIMEOUT, settings.MAILGATE_IMAP_TIMEOUT), record=False)
    if report.ok:
        form.set_folder_choices(report.folders)
        if "folder_choice_shown" not in form.data:
            # First time the list is shown: every folder ticked, the user unticks what to skip.
            form.data = form.data.copy()
            form.data.setlist("folders", report.folders)
    else:
        form.add_error(None, f"The connection test failed: {report.message}. Nothing was saved; "
                             "check the server, security and password.")
    return report


def _some_chosen(form) -> bool:
    if form.data.getlist("folders"):
        return True
    form.add_error("folders", "Choose at least one folder to sync.")
    return False


def _chosen(form, folders: list[str]) -> list[str]:
    """The include list: empty (every folder, new ones too) when all were chosen."""
    chosen = [name for name in form.cleaned_data.get("folders") or [] if name in folders]
    return [] if not chosen or set(chosen) == set(folders) else chosen


@sensitive_post_parameters("password")
@login_required
def add(request):
    """GET: the form. POST "test": test and list the folders. POST "save": test again, then save
    (enabled: the test has just passed) and start the first sync of every chosen folder."""
    form = PasswordAccountForm(request.POST or None)
    tested = False
    if request.method == "POST" and form.is_valid():
        account = Account(owner=request.user, **form.connection_values())
        account.set_password(form.cleaned_data["password"])
        try:
            account.full_clean(exclude=["owner"])
        except ValidationError as exc:
            for field, errs in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errs)
        else:
            if copy := imap_accounts.connected_copy(request.user, account.host, account.username):
                form.add_error(None, imap_accounts.already_connected(copy))
                return _page(request, "frontend/accounts/form.html", form=form, tested=False, account=None,
                             providers=providers.enabled())
            report = _test(form, account)
            tested = report.ok
            if report.ok and request.POST.get("action") == "save" and _some_chosen(form):
                account.folders_include = _chosen(form, report.folders)
                with transaction.atomic():
                    account.save()
                    imap_accounts.record_result(account, report)  # state "connected", not "not yet"
                    _list_folders(account, report.folders)
                    imap_accounts.first_sync(account)
                messages.success(request, f"Added {account.display_name}; syncing its folders now.")
                return redirect(f"{reverse('frontend:accounts')}?added={account.pk}")
    return _page(request, "frontend/accounts/form.html", form=form, tested=tested, account=None,
                 providers=providers.enabled())


@sensitive_post_parameters("password")
@login_required
def edit(request, account_id):
    account = _account(request, account_id)
    oauth = account.auth_method == Account.AuthMethod.OAUTH2
    known = _selectable_names(account)
    if oauth:
        form = DisplayForm(request.POST or None, initial={"display_name": account.display_name,
                                                          "folders": account.folders_include or known})
        form.set_folder_choices(known)
        if request.method == "POST" and form.is_valid():
            Account.objects.filter(pk=account.pk).update(display_name=form.cleaned_data["display_name"],
                                                         folders_include=_chosen(form, known))
            queue.enqueue_account_sync(account.pk)
            messages.success(request, f"Saved {form.cleaned_data['display_name']}.")
            return redirect("frontend:accounts")
        return _page(request, "frontend/accounts/form.html", form=form, tested=True, account=account)

    form = PasswordAccountForm(request.POST or None, account=account)
    form.set_folder_choices(known)
    if not request.POST and not account.folders_include:
        form.initial["folders"] = known
    tested = bool(known)
    if request.method == "POST" and form.is_valid():
        values = form.connection_values()
        changed = {name for name, value in values.items() if getattr(account, name) != value}
        for name, value in values.items():
            setattr(account, name, value)
        if form.cleaned_data.get("password"):
            account.set_password(form.cleaned_data["password"])
            changed.add("password")
        imap_accounts.connection_changed(account, changed)
        if copy := imap_accounts.connected_copy(account.owner, account.host, account.username, exclude=account):
            form.add_error(None, imap_accounts.already_connected(copy))
            return _page(request, "frontend/accounts/form.html", form=form, tested=tested, account=account)
        # Every save is tested: the folder list comes from the server, and a stopped account
        # ("authentication failed") is enabled again only on a login that works.
        report = _test(form, account.__class__(**{**_probe_values(account), "pk": None}))
        tested = report.ok
        if report.ok and request.POST.get("action") == "save" and _some_chosen(form):
            account.folders_include = _chosen(form, report.folders)
            account.enabled = True
            with transaction.atomic():
                account.save()
                imap_accounts.record_result(account, report)
                transaction.on_commit(lambda: queue.enqueue_account_sync(account.pk))
            messages.success(request, f"Saved {account.display_name}; syncing the chosen folders now.")
            return redirect("frontend:accounts")
    return _page(request, "frontend/accounts/form.html", form=form, tested=tested, account=account)


def _list_folders(account: Account, names: list[str]) -> None:
    # The page lists them at once, "waiting for the first sync"; the sync's own LIST fills in
    # delimiters and special-use flags.
    for name in names:
        Folder.objects.get_or_create(account=account, name=name)


def _probe_values(account: Account) -> dict:
    # The test runs on an unsaved copy: it needs no connection slot of the stored account (which
    # may be stopped after failed logins: the copy with the new password is what to try).
    names = ["owner_id", "email", "host", "port", "security", "username", "auth_method", "password_encrypted",
             "display_name"]
    return {name: getattr(account, name) for name in names}


@require_POST
@login_required
def sync_now(request, account_id):
    account = _account(request, account_id)
    blocked = account_state.blocked_reason(account)
    if blocked and account.enabled and account.state not in account_state.STOPPED_STATES:
        # Backing off: the owner asked, so try now; the backoff is for automatic retries.
        Account.objects.filter(pk=account.pk).update(backoff_until=None)
        blocked = None
    if blocked:
        messages.error(request, f"{account.display_name} cannot sync now: {blocked}.")
    else:
        queue.enqueue_account_sync(account.pk)
        messages.success(request, f"Syncing {account.display_name} now.")
    return redirect("frontend:accounts")


@require_POST
@login_required
def upload(request, account_id):
    account = _account(request, account_id)
    # Refused before the body is read: the whole upload would otherwise land in a temporary file.
    if int(request.META.get("CONTENT_LENGTH") or 0) > import_cap() + FORM_OVERHEAD:
        messages.error(request, f"Import refused: the upload is larger than the limit of {megabytes(import_cap())}.")
        return redirect("frontend:accounts")
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Import refused: " + " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("frontend:accounts")
    with tempfile.TemporaryDirectory(prefix="mailgate-import-") as tmp:
        paths = []
        for n, upload_file in enumerate(form.cleaned_data["files"]):
            path = Path(tmp) / f"{n}.{upload_file.name.rsplit('.', 1)[-1].lower()}"
            with open(path, "wb") as out:
                for chunk in upload_file.chunks():
                    out.write(chunk)
            paths.append(path)
        result = importer.import_paths(account, paths)
    names = [f.name for f in form.cleaned_data["files"]]
    text = (f"Imported {result['messages']} message{'s' if result['messages'] != 1 else ''} from "
            f"{', '.join(names)} into {account.display_name} / {importer.IMPORTED_FOLDER}: "
            f"{result['created']} new, {result['existing']} already there.")
    if result["errors"]:
        # The temporary file names mean nothing to the user: name the upload instead.
        problems = "; ".join(e.split(": ", 1)[-1] for e in result["errors"][:5])
        messages.warning(request, f"{text} Skipped: {problems}")
    else:
        messages.success(request, text)
    return redirect("frontend:accounts")


@login_required
def connect(request, provider):
    """Start "Connect with ..." (or ?account=ID: Reconnect that account) and come back here."""
    account = _account(request, request.GET["account"]) if request.GET.get("account") else None
    try:
        return redirect(flow.start(request, provider, account, return_to=reverse("frontend:accounts")))
    except flow.FlowError as exc:
        messages.error(request, str(exc))
        return redirect("frontend:accounts")


@require_POST
@login_required
def delete(request, account_id):
    account = _account(request, account_id)
    name = account.display_name
    with transaction.atomic():
        grants.delete_account(account)
    messages.success(request, f"Deleted {name} and the mail mailgate stored for it (the server keeps its copy).")
    return redirect("frontend:accounts")
