"""Admin for the pipeline: messages with their event timeline, deliveries with retry/requeue/cancel,
routes, subscribers with their subscriptions, and queue depth per stage on the admin index."""

from django.contrib import admin, messages as flash

from pipeline import sending
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
class MessageAdmin(admin.ModelAdmin):
    list_display = ("subject_or_id", "sender_address", "owner", "source", "status", "date", "received_at",
                    "has_attachments", "attempts")
    list_filter = ("status", "source", "has_attachments", "account", "channel", "received_at")
    search_fields = ("subject", "sender_address", "sender_name", "message_id", "identity", "snippet")
    date_hierarchy = "received_at"
    list_select_related = ("owner",)
    readonly_fields = [f.name for f in Message._meta.fields]
    inlines = [EventInline, DeliveryInline, AttachmentInline]
    actions = ["retry_dead"]

    @admin.display(description="subject", ordering="subject")
    def subject_or_id(self, obj):
        return str(obj)

    def has_add_permission(self, request):
        return False  # messages come in through the pipeline's door only

    @admin.action(description="Retry selected dead messages")
    def retry_dead(self, request, queryset):
        moved = sending.retry_messages(queryset)
        self.message_user(request, f"{moved} message(s) sent back to standardize.", flash.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "message", "service", "address", "status", "not_before", "attempts", "sent_at",
                    "short_error")
    list_filter = ("status", "service")
    search_fields = ("id", "address", "message__subject", "remote_id", "last_error")
    list_select_related = ("message", "service")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["retry", "requeue", "cancel"]

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
class RouteAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "enabled", "account", "channel", "folder_pattern", "from_pattern",
                    "subject_pattern", "has_attachment")
    list_filter = ("enabled", "owner")
    search_fields = ("name",)
    filter_horizontal = ("services",)


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    extra = 1
    fields = ("service", "address", "active", "mode", "window_start", "window_end", "timezone", "digest_time")


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "addresses")
    search_fields = ("name", "addresses")
    inlines = [SubscriptionInline]


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "message_count", "last_message_at")
    search_fields = ("subject", "normalized_subject")
    readonly_fields = [f.name for f in Thread._meta.fields]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("at", "kind", "message", "delivery", "worker", "summary")
    list_filter = ("kind",)
    search_fields = ("summary", "detail", "message__subject")
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PurgedIdentity)
class PurgedIdentityAdmin(admin.ModelAdmin):
    """Tombstones of purged messages: deleting one lets that message be ingested and relayed again."""

    list_display = ("identity", "account", "channel", "purged_at")
    search_fields = ("identity",)
    readonly_fields = [f.name for f in PurgedIdentity._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
