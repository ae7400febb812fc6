"""Admin for mail accounts: a write-only password, a "Test connection" button and the live IDLE
state.

The button POSTs to a per-account admin URL and shows the JSON answer next to it without a
reload (imap/static/imap/test_connection.js). The IDLE columns and the read-only "IDLE" fieldset
come from the account's imap.IdleSession row, joined in the same query (list_select_related).
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from imap.account_state import health
from imap.accounts import check_connection, connection_changed, first_sync, needs_test_before_enabling
from imap.models import Account, Folder, IdleSession
from imap.oauth import grants, providers as oauth_providers
from mailgate.admin_scope import OwnerScopedAdmin, owned
from mailgate.admin_widgets import LinesField

# An admin click should answer quickly even if MAILGATE_IMAP_TIMEOUT is long for batch sync.
ADMIN_TEST_TIMEOUT = 15.0


def _folder_problem(name: str) -> str | None:
    if any(ord(c) < 32 for c in name):
        return "a folder name cannot hold control characters"
    return None


class AccountForm(forms.ModelForm):
    # Lists of folder names (shell-style patterns), one per line; stored as the JSON lists they were.
    folders_include = LinesField(label="Folders to sync", item_validator=_folder_problem,
                                 help_text="One folder per line; * matches anything (e.g. Lists/*). "
                                           "Leave empty to sync every folder.")
    folders_exclude = LinesField(label="Folders to skip", item_validator=_folder_problem,
                                 help_text="One per line; wins over the list above (e.g. Spam, Trash).")
    push_folders = LinesField(label="Folders with instant new mail", item_validator=_folder_problem,
                              help_text="Watched with IDLE, one per line; each beyond the first uses one more "
                                        "connection. Leave empty for INBOX only.")

    # Write-only: never rendered back into the page (render_value=False), blank keeps the stored one.
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        required=False, strip=False,
        help_text="Stored encrypted. Leave blank to keep the current password.",
    )

    class Meta:
        model = Account
        fields = ["display_name", "email", "owner", "members", "host", "port", "security", "username",
                  "password", "folders_include", "folders_exclude", "push_folders", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            names = list(self.instance.folders.filter(present=True).order_by("name").values_list("name", flat=True)[:40])
            if names:
                for field in ("folders_include", "folders_exclude", "push_folders"):
                    self.fields[field].help_text += f" On the server: {', '.join(names)}."

    def clean(self):
        cleaned = super().clean()
        oauth = self.instance.auth_method == Account.AuthMethod.OAUTH2
        if not oauth and not self.instance.password_encrypted and not cleaned.get("password"):
            self.add_error("password", "A password is required for a new account.")
        return cleaned

    def save(self, commit=True):
        account = super().save(commit=False)
        if self.cleaned_data.get("password"):
            account.set_password(self.cleaned_data["password"])
        if self.instance.pk:
            connection_changed(account, set(self.changed_data))
        if commit:
            account.save()
            self.save_m2m()
        return account


IDLE_FIELDS = ["idle_connected", "idle_idling_since", "idle_last_push", "idle_last_error", "idle_last_error_at",
               "idle_reconnect_count", "idle_lease_owner", "idle_lease_expires_at"]


def _session(account):
    try:
        return account.idle_session
    except IdleSession.DoesNotExist:
        return None


def _lease_live(session) -> bool:
    # A manager that died without releasing leaves connected=True until its lease expires and
    # another manager takes over; the admin must not show that as connected.
    return bool(session and session.lease_owner and session.lease_expires_at
                and session.lease_expires_at > timezone.now())


@admin.register(Account)
class AccountAdmin(OwnerScopedAdmin):
    form = AccountForm
    add_form_template = "admin/imap/account/add_form.html"  # the "Connect with ..." buttons
    list_display = ["display_name", "email", "host", "security", "enabled", "status", "idle_connected",
                    "idle_last_push", "last_sync_at", "test_connection_button"]
    list_select_related = ["idle_session"]
    list_filter = ["enabled", "state", "security"]
    search_fields = ["display_name", "email", "host", "username"]
    readonly_fields = ["status", "last_error", "last_error_at", "last_sync_at", "auth_failures",
                       "backoff_until", "config_version", "created_at", "updated_at", "test_connection_button",
                       "sign_in", *IDLE_FIELDS]
    filter_horizontal = ["members"]
    fieldsets = [
        (None, {"fields": ["display_name", "email", "owner", "members", "enabled"]}),
        ("Server", {"fields": ["host", "port", "security", "username", "password", "sign_in",
                               "test_connection_button"]}),
        ("Folders", {"fields": ["folders_include", "folders_exclude", "push_folders"]}),
        ("Status", {"fields": ["status", "last_error", "last_error_at", "last_sync_at", "auth_failures",
                               "backoff_until", "config_version", "created_at", "updated_at"]}),
        ("IDLE", {"fields": IDLE_FIELDS,
                  "description": "The push connection, as the IDLE manager holding the lease last wrote it."}),
    ]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and obj.auth_method == Account.AuthMethod.OAUTH2:
            # Signed in with OAuth2: no password to enter, the grant is shown (never its tokens).
            return [(name, {**opts, "fields": [f for f in opts["fields"] if f != "password"]})
                    for name, opts in fieldsets]
        fieldsets = [(name, {**opts, "fields": [f for f in opts["fields"] if f != "sign_in"]})
                     for name, opts in fieldsets]
        return fieldsets if obj is not None else [f for f in fieldsets if f[0] != "IDLE"]

    def add_view(self, request, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "oauth_providers": oauth_providers.enabled()}
        return super().add_view(request, form_url, extra_context)

    @admin.display(description="Sign-in")
    def sign_in(self, obj):
        grant = getattr(obj, "oauth_grant", None) if obj else None
        if grant is None:
            return "OAuth2, not signed in"
        url = reverse("imap:oauth_start", args=[grant.provider]) + f"?account={obj.pk}"
        return format_html('OAuth2 with {} <a class="button mailgate-reconnect" href="{}">Reconnect</a>',
                           grant.get_provider_display(), url)

    def save_model(self, request, obj, form, change):
        # The admin save runs the connection test (B6 of issue #17): a login that fails is saved
        # but left disabled, with the cause shown, so a typo never locks the mailbox and nothing
        # typed is lost. Tick "Enabled" and save again once it is fixed (the test runs again).
        if needs_test_before_enabling(obj, form.changed_data, adding=not change):
            report = check_connection(obj, timeout=min(ADMIN_TEST_TIMEOUT, settings.MAILGATE_IMAP_TIMEOUT),
                                      record=False)
            if not report.ok:
                obj.enabled = False
                messages.warning(request, f"Saved but NOT enabled: the connection test failed ({report.message}). "
                                          "Fix the settings, tick Enabled and save again.")
        was_enabled = change and Account.objects.filter(pk=obj.pk, enabled=True).exists()
        super().save_model(request, obj, form, change)
        if not was_enabled:  # new, or enabled at last once its test passed: sync every folder now
            first_sync(obj)

    def delete_model(self, request, obj):
        grants.delete_account(obj)  # also revokes an OAuth2 grant at the provider

    def delete_queryset(self, request, queryset):
        for account in queryset:
            grants.delete_account(account)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            # Sharing an account shows its mail to the members: only a superuser chooses them, so
            # a tenant is never shown the list of every user nor can add one to their mail.
            fields.append("members")
        return fields

    @admin.display(description="State", ordering="state")
    def status(self, obj):
        # The words the app's pages use (imap.account_state.health), from the state and the IDLE
        # connection together: never "Connected" beside a push connection that is reconnecting.
        session = _session(obj)
        live = _lease_live(session)
        idle = None if session is None else {"connected": session.connected and live, "leased": live,
                                             "last_error": session.last_error}
        words = health(obj, idle)
        if words.get("retry_at"):
            when = formats.localize(timezone.template_localtime(obj.backoff_until))
            return format_html('<span title="{}">{} (next try {})</span>', words["detail"], words["label"], when)
        return format_html('<span title="{}">{}</span>', words["detail"], words["label"])

    # IDLE state (imap.IdleSession) -----------------------------------------------------------
    def _idle_time(self, obj, name: str, *, only_connected: bool = False):
        session = _session(obj)
        value = getattr(session, name) if session else None
        if only_connected and not (session and session.connected and _lease_live(session)):
            value = None
        # Read-only callables are rendered with str() on the change page: format like the list.
        return formats.localize(timezone.template_localtime(value)) if value else self.get_empty_value_display()

    @admin.display(description="IDLE", boolean=True, ordering="idle_session__connected")
    def idle_connected(self, obj):
        session = _session(obj)
        return bool(session and session.connected and _lease_live(session))

    @admin.display(description="Idling since")
    def idle_idling_since(self, obj):
        return self._idle_time(obj, "idling_since", only_connected=True)

    @admin.display(description="Last push", ordering="idle_session__last_push_at")
    def idle_last_push(self, obj):
        return self._idle_time(obj, "last_push_at")

    @admin.display(description="Last IDLE error")
    def idle_last_error(self, obj):
        session = _session(obj)
        return session.last_error if session else ""

    @admin.display(description="Last IDLE error at")
    def idle_last_error_at(self, obj):
        return self._idle_time(obj, "last_error_at")

    @admin.display(description="Reconnects")
    def idle_reconnect_count(self, obj):
        session = _session(obj)
        return session.reconnect_count if session else 0

    @admin.display(description="Lease owner (IDLE manager)")
    def idle_lease_owner(self, obj):
        session = _session(obj)
        if not session or not session.lease_owner:
            return "none (no IDLE manager holds this account)"
        return session.lease_owner if _lease_live(session) else f"{session.lease_owner} (lease expired)"

    @admin.display(description="Lease expires")
    def idle_lease_expires_at(self, obj):
        return self._idle_time(obj, "lease_expires_at")

    class Media:
        js = ["imap/test_connection.js"]

    def get_queryset(self, request):
        # The change page reads the IDLE fields too: one query with the session joined.
        return owned(super().get_queryset(request), request.user).select_related("idle_session")

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    @method_decorator(sensitive_post_parameters("password"))
    def changeform_view(self, request, *args, **kwargs):
        # Keeps the password out of error reports should a save ever fail with a 500.
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description="Connection")
    def test_connection_button(self, obj):
        if not obj or not obj.pk:
            return "Save the account first."
        url = reverse("admin:imap_account_test_connection", args=[obj.pk])
        return format_html(
            '<button type="button" class="button mailgate-test-connection" data-url="{}" '
            'data-account="{}">Test connection</button> '
            '<span class="mailgate-test-result" id="test-connection-result-{}" role="status" '
            'aria-live="polite"></span>',
            url, obj.pk, obj.pk,
        )

    def get_urls(self):
        custom = [
            path("<int:account_id>/test-connection/",
                 self.admin_site.admin_view(self.test_connection_view),
                 name="imap_account_test_connection"),
        ]
        return custom + super().get_urls()

    @method_decorator(require_POST)  # a test writes the account's state: never on a GET
    def test_connection_view(self, request, account_id):
        account = get_object_or_404(self.get_queryset(request), pk=account_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        report = check_connection(account, timeout=min(ADMIN_TEST_TIMEOUT, settings.MAILGATE_IMAP_TIMEOUT))
        return JsonResponse({**report.as_dict(), "state": account.state,
                             "state_display": account.get_state_display()})


@admin.register(Folder)
class FolderAdmin(OwnerScopedAdmin):
    list_display = ["name", "account", "special_use", "selectable", "present", "highest_uid", "last_synced_at"]
    list_filter = ["special_use", "selectable", "present"]
    search_fields = ["name", "account__email"]
    readonly_fields = ["uidvalidity", "uidnext", "highest_uid", "highestmodseq", "history_below_uid",
                       "last_synced_at"]

    def owner_filter(self, user) -> Q:
        return Q(account__owner=user)  # the account choices are the user's own too (OwnerScopedAdmin)


@admin.register(IdleSession)
class IdleSessionAdmin(admin.ModelAdmin):
    list_display = ["account", "connected", "idling_since", "last_push_at", "reconnect_count", "lease_owner",
                    "lease_expires_at", "last_error"]
    list_filter = ["connected"]
    list_select_related = ["account"]

    def get_queryset(self, request):
        # Like the accounts themselves: staff see the sessions of the accounts they own.
        return owned(super().get_queryset(request), request.user, Q(account__owner=request.user))

    def has_add_permission(self, request):
        return False  # written by the IDLE manager only

    def has_change_permission(self, request, obj=None):
        return False
