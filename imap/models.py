"""Mail accounts, their folders, where each message lives on the server, and IDLE state."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from mailgate import crypto
from mailgate.net import is_loopback


class Account(models.Model):
    class Security(models.TextChoices):
        SSL = "ssl", "SSL/TLS"  # implicit TLS, usually port 993
        STARTTLS = "starttls", "STARTTLS"  # plain connect, upgraded before login; port 143
        NONE = "none", "None (loopback only)"  # cleartext; refused for any non-loopback host

    class State(models.TextChoices):
        NEW = "new", "Not connected yet"
        OK = "ok", "Connected"
        ERROR = "error", "Error (retrying with backoff)"
        THROTTLED = "throttled", "Throttled by the provider (slowed down)"
        AUTH_FAILED = "auth_failed", "Authentication failed (stopped; fix the password)"
        NEEDS_CREDENTIALS = "needs_credentials", "Credentials need re-entry (undecryptable)"
        # OAuth2 only: the provider refused the refresh token (invalid_grant: revoked, expired,
        # password changed). Stopped until the owner signs in again (Reconnect).
        SIGN_IN_EXPIRED = "sign_in_expired", "Sign-in expired: reconnect"

    class AuthMethod(models.TextChoices):
        PASSWORD = "password", "Password"  # LOGIN / AUTHENTICATE PLAIN with the stored password
        OAUTH2 = "oauth2", "OAuth2 sign-in"  # SASL XOAUTH2/OAUTHBEARER with the account's OAuthGrant

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="accounts")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_accounts")
    display_name = models.CharField(max_length=200)
    email = models.EmailField()
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=993)
    security = models.CharField(max_length=16, choices=Security.choices, default=Security.SSL)
    username = models.CharField(max_length=255)
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices, default=AuthMethod.PASSWORD)
    # Fernet token (see mailgate/crypto.py). Never shown, logged or put in an error message.
    password_encrypted = models.TextField(blank=True, editable=False)
    # Empty include list = every selectable folder. Names are Unicode (decoded from modified UTF-7).
    folders_include = models.JSONField(default=list, blank=True)
    folders_exclude = models.JSONField(default=list, blank=True)
    # Folders watched with IDLE; each beyond the first uses one more connection.
    push_folders = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)

    state = models.CharField(max_length=20, choices=State.choices, default=State.NEW)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    auth_failures = models.PositiveIntegerField(default=0)
    # Network errors and provider throttling push this forward (exponential backoff with jitter).
    backoff_until = models.DateTimeField(null=True, blank=True)
    backoff_step = models.PositiveIntegerField(default=0)
    # Bumped on every credential or server change so the IDLE manager knows to reconnect.
    config_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(port__gte=1, port__lte=65535), name="imap_account_port_range"),
            # The same mailbox twice for one owner syncs and relays every message twice (once per
            # account scope). Host names and logins are compared as the servers compare them:
            # without case. A disabled copy may stay (it neither syncs nor relays).
            models.UniqueConstraint(
                "owner", Lower("host"), Lower("username"), condition=Q(enabled=True),
                name="imap_account_one_enabled_per_mailbox",
                violation_error_message="This mailbox is already connected (the same server and login).",
            ),
        ]

    def __str__(self):
        return f"{self.display_name} <{self.email}>"

    def clean(self):
        if self.security == self.Security.NONE and not is_loopback(self.host):
            raise ValidationError({"security": "Unencrypted IMAP is only allowed to a loopback host."})

    # A change of any of these bumps config_version whoever saves it (admin, API, shell), so the
    # IDLE manager reconnects with the new settings. Key rotation rewrites password_encrypted with
    # update(), which rightly does not count: the password itself is unchanged.
    CONNECTION_FIELDS = ("host", "port", "security", "username", "password_encrypted", "auth_method")

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_connection = instance._connection_values()
        return instance

    def _connection_values(self) -> dict:
        return {name: self.__dict__[name] for name in self.CONNECTION_FIELDS if name in self.__dict__}

    def save(self, *args, **kwargs):
        loaded = getattr(self, "_loaded_connection", None)
        update_fields = kwargs.get("update_fields")
        bump = loaded is not None and self.pk is not None and any(
            name in loaded and value != loaded[name] and (update_fields is None or name in update_fields)
            for name, value in self._connection_values().items())
        if bump:
            # F(): two concurrent edits must give two versions, not the same one twice.
            self.config_version = models.F("config_version") + 1
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "config_version"}
        super().save(*args, **kwargs)
        if bump:
            self.refresh_from_db(fields=["config_version"])
        self._loaded_connection = self._connection_values()

    # Credentials -----------------------------------------------------------------------------
    encrypted_field = "password_encrypted"  # re-encrypted by mailgate.rotation
    encrypted_label = "accounts"

    @classmethod
    def mark_secrets_unreadable(cls, account_ids) -> int:
        """Accounts whose stored password no configured key decrypts: they stop connecting until the
        owner enters it again (config_version moves, so the IDLE manager lets go). Returns how many."""
        return cls.objects.filter(pk__in=list(account_ids)).update(
            state=cls.State.NEEDS_CREDENTIALS,
            last_error="the stored password cannot be decrypted with the configured keys; enter it again",
            last_error_at=timezone.now(),
            config_version=models.F("config_version") + 1,
        )

    def set_password(self, password: str) -> None:
        self.password_encrypted = crypto.encrypt(password)

    def get_password(self) -> str:
        """Raises crypto.CredentialsUnreadable when no configured key decrypts it."""
        return crypto.decrypt(self.password_encrypted)

    @property
    def push_folder_names(self) -> list[str]:
        return self.push_folders or ["INBOX"]

    def viewer_ids(self) -> list[int]:
        """Who may see this account, its messages and its live events: the owner and the members."""
        return [self.owner_id, *self.members.values_list("pk", flat=True)]


class OAuthGrant(models.Model):
    """The OAuth2 grant an account with auth_method OAUTH2 signs in with (imap/oauth/).

    Both tokens live in one Fernet token (a JSON object) so key rotation, which re-encrypts one
    column per model, covers them together. Never shown, logged or put in an error message.
    """

    class Provider(models.TextChoices):
        GOOGLE = "google", "Google"
        MICROSOFT = "microsoft", "Microsoft"
        GENERIC = "generic", "Another provider"  # MAILGATE_OAUTH_GENERIC_*

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="oauth_grant")
    provider = models.CharField(max_length=16, choices=Provider.choices)
    tokens_encrypted = models.TextField(editable=False)  # {"refresh_token": ..., "access_token": ...}
    access_expires_at = models.DateTimeField(null=True, blank=True)
    access_issued_at = models.DateTimeField(null=True, blank=True)
    scope = models.TextField(blank=True)
    # Moves on every refresh: a login that failed with version N asks for a refresh only if the
    # token is still version N, so ten failing connections cause one refresh, not ten.
    token_version = models.PositiveIntegerField(default=1)
    # The refresh claim (compare-and-set, imap/oauth/tokens.py): one process at a time spends the
    # refresh token, since providers that rotate it revoke the whole grant when an old one is reused.
    refreshing_until = models.DateTimeField(null=True, blank=True)
    refreshing_by = models.CharField(max_length=200, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    encrypted_field = "tokens_encrypted"  # re-encrypted by mailgate.rotation
    encrypted_label = "OAuth grants"

    def __str__(self):
        return f"{self.get_provider_display()} grant of account {self.account_id}"

    @classmethod
    def mark_secrets_unreadable(cls, account_ids) -> int:
        """Grants no configured key decrypts: their accounts stop until the owner signs in again."""
        return Account.objects.filter(pk__in=list(account_ids)).update(
            state=Account.State.SIGN_IN_EXPIRED,
            last_error="the stored sign-in cannot be decrypted with the configured keys; reconnect",
            last_error_at=timezone.now(),
            config_version=models.F("config_version") + 1,
        )


class Folder(models.Model):
    """One mailbox on the server with the sync state that makes sync incremental."""

    class SyncPending(models.TextChoices):
        """Which sync task of this folder is queued (imap/queue.py coalesces requests on it)."""

        NONE = "", "no sync queued"
        FLAGS = "flags", "flags-only sync queued"  # flags and expunges of known messages, nothing new
        FULL = "full", "full sync queued"  # flags, expunges, new messages and their bodies

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=500)  # Unicode; imap/utf7.py encodes it for the wire
    delimiter = models.CharField(max_length=4, blank=True)
    special_use = models.CharField(max_length=32, blank=True)  # \Sent, \Trash, ... (RFC 6154)
    selectable = models.BooleanField(default=True)
    present = models.BooleanField(default=True)  # False once LIST stops returning it
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uidnext = models.BigIntegerField(null=True, blank=True)
    highest_uid = models.BigIntegerField(default=0)  # highest UID whose metadata we stored
    # Mail below this UID (in this UIDVALIDITY) was in the folder at its first sync: history,
    # stored but never relayed (pipeline Message.Arrival). 0 after a UIDVALIDITY reset.
    history_below_uid = models.BigIntegerField(null=True, blank=True)
    highestmodseq = models.BigIntegerField(null=True, blank=True)  # CONDSTORE servers only
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # Coalesces sync requests (imap.queue.enqueue_folder_sync). A marker older than
    # MAILGATE_SYNC_PENDING_STALE counts as lost (e.g. a queue dropped by a SECRET_KEY change) and
    # may be claimed again.
    sync_pending = models.CharField(max_length=8, blank=True, choices=SyncPending.choices)
    sync_requested_at = models.DateTimeField(null=True, blank=True)

    # Where mail imported from files goes (imap/importer.py): a folder of the account that is not
    # on the server (present=False, selectable=False), so sync never lists, selects or fetches it.
    IMPORTED = "Imported"

    class Meta:
        ordering = ["account", "name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="imap_folder_unique_name"),
        ]

    def __str__(self):
        return self.name

    @property
    def listed(self) -> bool:
        """Shown in the inbox's folder list: a server folder that can hold mail, or Imported."""
        return (self.present and self.selectable) or (self.name == self.IMPORTED and not self.present)

    @classmethod
    def listed_filter(cls) -> Q:
        """`listed` as a query."""
        return Q(present=True, selectable=True) | Q(name=cls.IMPORTED, present=False)


class MessageLocation(models.Model):
    """Where a message sits on the server: one row per (folder, UIDVALIDITY, UID).

    The same message in two folders is one pipeline.Message with two locations.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="locations")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="locations")
    message = models.ForeignKey("pipeline.Message", on_delete=models.CASCADE, related_name="locations")
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    flags = models.JSONField(default=list, blank=True)
    modseq = models.BigIntegerField(null=True, blank=True)
    internaldate = models.DateTimeField(null=True, blank=True)
    size = models.BigIntegerField(default=0)
    gm_labels = models.JSONField(default=list, blank=True)
    expunged_at = models.DateTimeField(null=True, blank=True)  # gone from this folder on the server
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "folder", "uidvalidity", "uid"], name="imap_location_unique_uid"
            ),
        ]
        indexes = [
            # Flag sync walks the live locations of one folder by UID.
            models.Index(fields=["folder", "uidvalidity", "uid"], name="imap_location_folder_uid",
                         condition=Q(expunged_at__isnull=True)),
        ]


class ConnectionSlot(models.Model):
    """A claim on one of the account's MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT connections.

    Shared by every process on every host; a holder that dies frees its slot at `expires_at`.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="connection_slots")
    slot = models.PositiveSmallIntegerField()
    holder = models.CharField(max_length=200, blank=True)
    purpose = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "slot"], name="imap_connection_slot_unique"),
        ]


class IdleManager(models.Model):
    """One running IDLE manager (a process on some host); its heartbeat feeds /healthz."""

    name = models.CharField(max_length=200, unique=True)  # host:pid:random
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()

    def __str__(self):
        return self.name


class IdleSession(models.Model):
    """The lease and live state of an account's single IDLE connection.

    A manager claims the lease by compare-and-set on (lease_owner, lease_expires_at) and renews it
    by heartbeat; if it dies another manager takes over once the lease expires.
    """

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True,
                                   related_name="idle_session")
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    connected = models.BooleanField(default=False)
    idling_since = models.DateTimeField(null=True, blank=True)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    reconnect_count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["lease_expires_at"], name="imap_idle_lease_expiry")]
