"""The standard message and everything that relays it: threads, routes, subscribers, deliveries,
and the audit trail. Tables are static; state fields are TextChoices; integrity is in constraints.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Thread(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    subject = models.CharField(max_length=998, blank=True)
    normalized_subject = models.CharField(max_length=998, blank=True, db_index=True)
    gm_thrid = models.BigIntegerField(null=True, blank=True)
    participants = models.JSONField(default=list, blank=True)  # lower-cased addresses
    first_message_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "gm_thrid"], name="pipeline_thread_unique_gm_thrid",
                                    condition=Q(gm_thrid__isnull=False)),
        ]

    def __str__(self):
        return self.subject or f"Thread {self.pk}"


def raw_upload_path(instance, filename):
    return f"raw/{filename[:2]}/{filename}"


class Message(models.Model):
    class Status(models.TextChoices):
        HEADERS = "headers", "Headers stored, body pending"  # sync phase 1
        TOO_LARGE = "too_large", "Too large: metadata only, body not downloaded"  # final
        # Expunged everywhere before phase 2 reached it. Final (retention may purge it) unless
        # the message turns up again in a folder, which puts it back to HEADERS.
        GONE = "gone", "Deleted on the server before its body was downloaded"
        RECEIVED = "received", "Raw bytes stored, waiting to standardize"
        STANDARDIZED = "standardized", "Standardized, waiting to distribute"
        # Final for the message. "Routed", not "queued": a message no route matched ends here too.
        DISTRIBUTED = "distributed", "Routed"
        SUPPRESSED = "suppressed", "Not relayed (loop, auto-reply or bounce)"  # final
        # In the mailbox before it was connected (Arrival.HISTORY): stored, searchable, never
        # distributed unless the owner relays it (pipeline/history.py). Final otherwise.
        HISTORY = "history", "Not relayed"  # shown with its reason: "history: in the mailbox before ..."
        DEAD = "dead", "Gave up after repeated crashes"  # final; retry from admin

    class Arrival(models.TextChoices):
        """How the message came to mailgate, which decides whether it is relayed. Arrival decides,
        never the Date header: a message appended today with a 2018 Date is NEW."""

        NEW = "new", "Arrived after the mailbox was connected"  # relayed
        HISTORY = "history", "In the mailbox before it was connected"  # kept, not relayed

    HISTORY_REASON = "history: in the mailbox before it was connected"

    class Source(models.TextChoices):
        IMAP = "imap", "IMAP"
        IMPORT = "import", "Import"
        WEBHOOK = "webhook", "Inbound webhook"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.IMAP)
    account = models.ForeignKey("imap.Account", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="messages")
    folder = models.ForeignKey("imap.Folder", on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="messages")  # first folder it was seen in
    channel = models.ForeignKey("inbound.InboundChannel", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="messages")
    # Identity used for deduplication within an account or channel (see imap/sync.py and the
    # webhook views): e.g. the X-GM-MSGID, the Message-ID plus a header digest, or the provider's
    # own id (Telegram update_id, Twilio MessageSid).
    identity = models.CharField(max_length=500)
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    gm_msgid = models.BigIntegerField(null=True, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.JSONField(default=list, blank=True)
    thread = models.ForeignKey(Thread, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages")
    subject = models.TextField(blank=True)
    sender_name = models.CharField(max_length=500, blank=True)
    sender_address = models.CharField(max_length=500, blank=True, db_index=True)
    to = models.JSONField(default=list, blank=True)  # [{"name": ..., "address": ...}]
    cc = models.JSONField(default=list, blank=True)
    date = models.DateTimeField(null=True, blank=True)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)  # sanitized; remote images parked in data-remote-src
    markdown_body = models.TextField(blank=True)
    snippet = models.CharField(max_length=300, blank=True)
    size = models.BigIntegerField(default=0)
    flags = models.JSONField(default=list, blank=True)  # union of IMAP flags; \Seen etc.
    labels = models.JSONField(default=list, blank=True)  # Gmail labels
    has_attachments = models.BooleanField(default=False)
    # Raw RFC 822 bytes: content-addressed (sha256) file through Django's storage API.
    raw = models.FileField(upload_to=raw_upload_path, max_length=300, blank=True)
    raw_sha256 = models.CharField(max_length=64, blank=True)
    parse_warnings = models.JSONField(default=list, blank=True)
    suppressed_reason = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    arrival = models.CharField(max_length=8, choices=Arrival.choices, default=Arrival.NEW)
    # Our own attempt count, written at task start: a SIGKILLed worker is not a failed attempt to
    # django-q2, so without this a message that crashes the worker would loop forever.
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    # Where lists place it: when it arrived, never its Date header (a sender's clock, or a 2019
    # date on mail that came in today). IMAP sync writes the server's INTERNALDATE plus the UID
    # in microseconds (imap/sync.py arrival_time); every other source arrives now.
    arrived_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["account", "identity"], name="pipeline_message_unique_in_account",
                                    condition=Q(account__isnull=False)),
            models.UniqueConstraint(fields=["channel", "identity"], name="pipeline_message_unique_in_channel",
                                    condition=Q(channel__isnull=False)),
            models.CheckConstraint(
                condition=Q(account__isnull=False) | Q(channel__isnull=False) | Q(source="import"),
                name="pipeline_message_has_source",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-date"], name="pipeline_msg_owner_date"),
            models.Index(fields=["account", "-date"], name="pipeline_msg_account_date"),
            # The inbox's keyset pages walk these in arrival order and stop after one page
            # (frontend/listing.py); the id makes ties need no sort.
            models.Index(fields=["owner", "-arrived_at", "-id"], name="pipeline_msg_owner_arrival"),
            models.Index(fields=["account", "-arrived_at", "-id"], name="pipeline_msg_account_arrival"),
            # The inbox's scope of a user's own mail without an account (webhooks, imports): with
            # only the index above, both planners walk every one of the user's IMAP messages
            # looking for the few without an account (bench/api.py at 1,000,000: 0.8 s a page).
            models.Index(fields=["owner", "-arrived_at", "-id"], name="pipeline_msg_noacct_arrival",
                         condition=Q(account__isnull=True)),
            # The sweeper looks only at messages still in the pipeline.
            models.Index(fields=["status", "updated_at"], name="pipeline_msg_unfinished",
                         condition=Q(status__in=["received", "standardized"])),
        ]

    def __str__(self):
        return self.subject or f"(no subject) {self.id}"

    def viewer_ids(self) -> list[int]:
        """Who may see this message and its live events: for mail of an account, everyone who may
        see the account now (its owner and members); else its owner. frontend/access.py applies the
        same rule to queries."""
        if self.account_id:
            return sorted(set(self.account.viewer_ids()))
        return [self.owner_id]


def attachment_upload_path(instance, filename):
    # Stored under a UUID: never a name that came from the message.
    return f"attachments/{instance.id.hex[:2]}/{instance.id.hex}"


class Attachment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    position = models.PositiveIntegerField()
    filename = models.CharField(max_length=255)  # sanitized (pipeline/parsing/filenames.py)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=attachment_upload_path, max_length=300)
    is_inline = models.BooleanField(default=False)
    content_id = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["message", "position"]
        constraints = [
            models.UniqueConstraint(fields=["message", "position"], name="pipeline_attachment_unique_position"),
        ]

    def __str__(self):
        return self.filename


class Route(models.Model):
    """Matches messages to outgoing services. Empty criteria match everything."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="routes")
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    account = models.ForeignKey("imap.Account", on_delete=models.CASCADE, null=True, blank=True)
    channel = models.ForeignKey("inbound.InboundChannel", on_delete=models.CASCADE, null=True, blank=True)
    folder_pattern = models.CharField(max_length=500, blank=True, help_text="Shell-style, e.g. INBOX or Lists/*")
    from_pattern = models.CharField(max_length=500, blank=True, help_text="Regular expression on the sender")
    to_pattern = models.CharField(max_length=500, blank=True, help_text="Regular expression on any recipient")
    subject_pattern = models.CharField(max_length=500, blank=True, help_text="Regular expression")
    has_attachment = models.BooleanField(null=True, blank=True)
    services = models.ManyToManyField("outgoing.Service", related_name="routes")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="pipeline_route_unique_name"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        from pipeline.routing import validate_route

        validate_route(self)


class Subscriber(models.Model):
    """A person who receives relayed messages. Their own mail is never relayed back to them."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscribers")
    name = models.CharField(max_length=200)
    # Every address this person sends from (email, phone, chat id), to recognise them as sender.
    addresses = models.JSONField(default=list, blank=True)

    def __str__(self):
        return self.name


class Subscription(models.Model):
    class Mode(models.TextChoices):
        IMMEDIATE = "immediate", "Each message (inside the delivery window)"
        DIGEST = "digest", "Daily digest"

    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="subscriptions")
    service = models.ForeignKey("outgoing.Service", on_delete=models.CASCADE, related_name="subscriptions")
    address = models.CharField(max_length=500)  # email, phone number, chat id, or "" for webhooks
    active = models.BooleanField(default=True)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.IMMEDIATE)
    window_start = models.TimeField(null=True, blank=True)  # local time in `timezone`
    window_end = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    digest_time = models.TimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscriber", "service", "address"],
                                    name="pipeline_subscription_unique"),
            models.CheckConstraint(
                condition=Q(window_start__isnull=True, window_end__isnull=True)
                | Q(window_start__isnull=False, window_end__isnull=False),
                name="pipeline_subscription_window_both_or_neither",
            ),
        ]

    def __str__(self):
        return f"{self.subscriber} via {self.service}"

    def clean(self):
        from django.core.exceptions import ValidationError

        from pipeline.scheduling import zone

        try:
            zone(self.timezone)
        except ValidationError as exc:
            raise ValidationError({"timezone": exc.messages}) from None
        if self.mode == self.Mode.DIGEST and self.digest_time is None:
            raise ValidationError({"digest_time": "A daily digest needs a digest time."})


class Delivery(models.Model):
    class Status(models.TextChoices):
        # Labels are what people read (admin filters, pages); the field behind the wait is not_before.
        SCHEDULED = "scheduled", "Scheduled"  # waits for not_before (window, digest, rate limit)
        SENDING = "sending", "Sending"  # claimed by a worker
        RETRYING = "retrying", "Will retry"  # transient error; tried again at not_before
        SENT = "sent", "Sent"  # final
        FAILED = "failed", "Failed"  # final (permanent error); retry from admin
        DEAD = "dead", "Gave up after retries"  # final; retry from admin
        CANCELLED = "cancelled", "Cancelled"  # final; by an admin

    FINAL = (Status.SENT, Status.FAILED, Status.DEAD, Status.CANCELLED)

    # Also the Idempotency-Key sent to webhook targets.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    service = models.ForeignKey("outgoing.Service", on_delete=models.CASCADE, related_name="deliveries")
    address = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    not_before = models.DateTimeField("next try")  # sent no earlier than this (window, backoff, rate limit)
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    remote_id = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        # Named by where it goes, never by its id (the admin's event list shows this).
        return f"{self.service} → {self.address}" if self.address else str(self.service)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["message", "subscription"], name="pipeline_delivery_once"),
        ]
        indexes = [
            # Workers and the sweeper pick due, unfinished deliveries.
            models.Index(fields=["not_before"], name="pipeline_delivery_due",
                         condition=Q(status__in=["scheduled", "sending", "retrying"])),
        ]

    def record_progress(self, remote_id: str) -> None:
        """Keep the remote ids of the parts of a multi-part send already delivered (a transport
        calls this after each part), so a retry does not send them again."""
        self.remote_id = remote_id[:500]
        Delivery.objects.filter(pk=self.pk).update(remote_id=self.remote_id)


class Event(models.Model):
    """Audit trail: one row per stage transition. Survives retention as a summary line."""

    class Kind(models.TextChoices):
        FETCHED = "fetched", "Fetched from the source"
        RECEIVED = "received", "Received (raw stored)"
        STANDARDIZED = "standardized", "Standardized"
        DISTRIBUTED = "distributed", "Distributed to routes"
        SUPPRESSED = "suppressed", "Suppressed (loop or auto-reply)"
        HISTORY = "history", "Not relayed: history"
        QUEUED = "queued", "Delivery queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        RETRY = "retry", "Transient error, will retry"
        FAILED = "failed", "Failed permanently"
        DEAD = "dead", "Dead after retries"
        REQUEUED = "requeued", "Requeued"
        CANCELLED = "cancelled", "Cancelled"
        CRASHED = "crashed", "Worker crashed or stage errored"
        PURGED = "purged", "Removed by retention"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="+")
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    delivery = models.ForeignKey(Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    worker = models.CharField(max_length=200, blank=True)
    detail = models.TextField(blank=True)
    summary = models.CharField(max_length=500, blank=True)  # kept after the message is purged

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind}"


class PurgedIdentity(models.Model):
    """A tombstone: retention removed the message with this identity from this account or channel.

    Without it a purged message would come back as new - a folder rescanned after a UIDVALIDITY
    change, the same file imported again, a webhook delivered again - and be relayed a second time.
    Sync (phase 1) and pipeline.ingest.ingest_raw skip tombstoned identities. The scope mirrors
    Message's unique constraints; messages with neither account nor channel have no identity scope
    and get no tombstone. Kept as long as the account or channel exists (docs/pipeline.md).
    """

    account = models.ForeignKey("imap.Account", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+")
    channel = models.ForeignKey("inbound.InboundChannel", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="+")
    identity = models.CharField(max_length=500)
    purged_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "purged identities"
        constraints = [
            models.UniqueConstraint(fields=["account", "identity"], name="pipeline_purged_unique_in_account",
                                    condition=Q(account__isnull=False)),
            models.UniqueConstraint(fields=["channel", "identity"], name="pipeline_purged_unique_in_channel",
                                    condition=Q(channel__isnull=False)),
            models.CheckConstraint(condition=Q(account__isnull=False) | Q(channel__isnull=False),
                                   name="pipeline_purged_has_scope"),
        ]

    def __str__(self):
        return self.identity
