"""Admin for the pipeline: messages with their event timeline, deliveries with retry/requeue/cancel,
routes, subscribers with their subscriptions, and queue depth per stage on the admin index."""

from django import forms
from django.contrib import admin, messages as flash
from django.db.models import Q

from mailgate.admin_scope import OwnerScopedAdmin, scoped_choices
from mailgate.admin_widgets import LinesField
from pipeline import history, sending
from pipeline.flag_words import flag_words
from pipeline.models import (Attachment, Delivery, Event, Message, PurgedIdentity, Route, Subscriber, Subscription,
                             Thread)

# Queue depth per stage on the index page (pipeline/templates/admin/pipeline/index.html); another
# app that already replaced the index keeps its own.
admin.site.index_template = admin.site.index_template or "admin/pipeline/index.html"


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class EventInline(ReadOnlyInline):
    model = Event
    fk_name = "message"
    fields = ("at", "kind", "delivery", "worker", "detail")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name_plural = "event timeline"
    show_change_link = False


class AttachmentInline(ReadOnlyInline):
    model = Attachment
    fields = ("position", "filename", "content_type", "size", "is_inline", "file")
    readonly_fields = fields


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = ("service", "address", "status", "not_before", "attempts", "sent_at", "last_error")
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(OwnerScopedAdmin):
    list_display = ("subject_or_id", "sender_address", "owner", "source", "status", "date", "received_at",
                    "has_attachments", "attempts")
    # RelatedOnly: the filter lists only accounts/channels of rows the user may see, not every one.
    list_filter = ("status", "arrival", "source", "has_attachments", ("account", admin.RelatedOnlyFieldListFilter),
                   ("channel", admin.RelatedOnlyFieldListFilter), "received_at")
    search_fields = ("subject", "sender_address", "sender_name", "message_id", "identity", "snippet")
    date_hierarchy = "received_at"
    list_select_related = ("owner",)
    # Flags in words ("Starred, Read"), not the raw IMAP list.
    readonly_fields = [f.name if f.name != "flags" else "flags_in_words" for f in Message._meta.fields]
    inlines = [EventInline, DeliveryInline, AttachmentInline]
    actions = ["retry_dead", "relay_history"]

    @admin.display(description="subject", ordering="subject")
    def subject_or_id(self, obj):
        return str(obj)

    @admin.display(description="flags")
    def flags_in_words(self, obj):
        return ", ".join(flag_words(obj.flags or []))

    def has_add_permission(self, request):
        return False  # messages come in through the pipeline's door only

    @admin.action(description="Retry selected dead messages")
    def retry_dead(self, request, queryset):
        moved = sending.retry_messages(queryset)
        self.message_user(request, f"{moved} message(s) sent back to standardize.", flash.SUCCESS)

    @admin.action(description="Relay selected history (mail that was there before the account was connected)")
    def relay_history(self, request, queryset):
        skipped = queryset.count() - history.relay(queryset, dry_run=True)
        relayed = history.relay(queryset, by=request.user.get_username())
        note = f" {skipped} selected message(s) were not history waiting to relay." if skipped else ""
        self.message_user(request, f"{relayed} history message(s) queued for relay.{note}", flash.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(OwnerScopedAdmin):
    list_display = ("id", "message", "service", "address", "status", "not_before", "attempts", "sent_at",
                    "short_error")
    list_filter = ("status", ("service", admin.RelatedOnlyFieldListFilter))
    search_fields = ("id", "address", "message__subject", "remote_id", "last_error")
    list_select_related = ("message", "service")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["retry", "requeue", "cancel"]

    def owner_filter(self, user) -> Q:
        return Q(message__owner=user)

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error or "")[:120]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Retry failed/dead deliveries now (fresh attempt count)")
    def retry(self, request, queryset):
        self.message_user(request, f"{sending.retry_deliveries(queryset)} delivery(ies) retried.", flash.SUCCESS)

    @admin.action(description="Requeue waiting or cancelled deliveries to go now")
    def requeue(self, request, queryset):
        self.message_user(request, f"{sending.requeue_deliveries(queryset)} delivery(ies) requeued.",
                          flash.SUCCESS)

    @admin.action(description="Cancel deliveries that have not been sent")
    def cancel(self, request, queryset):
        self.message_user(request, f"{sending.cancel_deliveries(queryset)} delivery(ies) cancelled.",
                          flash.SUCCESS)


@admin.register(Route)
class RouteAdmin(OwnerScopedAdmin):
    list_display = ("name", "owner", "enabled", "account", "channel", "folder_pattern", "from_pattern",
                    "subject_pattern", "has_attachment")
    list_filter = ("enabled", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name",)
    filter_horizontal = ("services",)

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}


class SubscriptionInline(admin.StackedInline):
    """Stacked, three short rows per subscription: as a table its eight columns (time pickers,
    a 500-character address) made the page over 2,000 px wide."""

    model = Subscription
    extra = 1
    fields = (("service", "address", "active"), ("mode", "timezone"), ("window_start", "window_end", "digest_time"))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return super().formfield_for_foreignkey(db_field, request, **scoped_choices(db_field, request, kwargs))


def _address_problem(text: str) -> str | None:
    if any(c.isspace() for c in text):
        return "an address has no spaces (one address per line)"
    return None


class SubscriberForm(forms.ModelForm):
    addresses = LinesField(label="Their addresses", item_validator=_address_problem,
                           help_text="Every address this person sends from, one per line: email, phone "
                                     "number or chat id. Their own messages are never relayed back to them.")

    class Meta:
        model = Subscriber
        fields = "__all__"


@admin.register(Subscriber)
class SubscriberAdmin(OwnerScopedAdmin):
    form = SubscriberForm

    def get_changeform_initial_data(self, request):
        # The owner is required: preselected as the service admin does.
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    list_display = ("name", "owner", "addresses")
    search_fields = ("name", "addresses")
    inlines = [SubscriptionInline]


@admin.register(Thread)
class ThreadAdmin(OwnerScopedAdmin):
    list_display = ("__str__", "owner", "message_count", "last_message_at")
    search_fields = ("subject", "normalized_subject")
    readonly_fields = [f.name for f in Thread._meta.fields]


@admin.register(Event)
class EventAdmin(OwnerScopedAdmin):
    list_display = ("at", "kind", "message", "delivery", "worker", "summary")
    list_select_related = ("message", "delivery__service")  # Delivery.__str__ names its service
    list_filter = ("kind",)
    search_fields = ("summary", "detail", "message__subject")
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PurgedIdentity)
class PurgedIdentityAdmin(OwnerScopedAdmin):
    """Tombstones of purged messages: deleting one lets that message be ingested and relayed again."""

    def owner_filter(self, user) -> Q:
        return Q(account__owner=user) | Q(channel__owner=user)

    list_display = ("identity", "account", "channel", "purged_at")
    search_fields = ("identity",)
    readonly_fields = [f.name for f in PurgedIdentity._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
