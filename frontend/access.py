"""Who may see what: the only place the UI, the API, downloads and live events decide it.

A user sees the accounts they own or are a member of, the messages they own or that belong to
such an account, the deliveries of those messages, and the services they own. Anything else is
answered as if it did not exist (404), so ids cannot be probed.

Seeing is not managing. An account's members read its mail and change its flags (read, flagged:
the shared state a team works with, undone with one click); moving and deleting on the owner's
server, with the owner's password, stay the owner's (owned_messages). A delivery goes through a
service and to an address its owner chose and pays for: everyone who sees the message sees that it
was sent, but the address and the error texts, and a retry, are the service owner's
(manages_delivery). Refusals of what a user can see but not do are NotAllowed (403).
"""

from contextvars import ContextVar

from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.http import Http404

from imap.models import Account, Folder
from outgoing.models import Service
from pipeline.models import Attachment, Delivery, Message


def accounts(user):
    """Accounts `user` owns or is a member of."""
    if not user.is_authenticated:
        return Account.objects.none()
    return Account.objects.filter(Q(owner=user) | Q(members=user)).distinct()


def owned_accounts(user):
    """Accounts `user` owns: the only ones they set up, sync, import into, reconnect or delete
    (a member reads an account's mail; its server, password and sign-in are the owner's)."""
    if not user.is_authenticated:
        return Account.objects.none()
    return Account.objects.filter(owner=user)


# Per request (RequestCache below), what several helpers read back about the user: an inbox page
# asks for the account ids once per scope, and a ranked search several times more. None outside a
# request (workers, the websocket consumer, tests calling helpers directly): always read afresh.
_request_cache: ContextVar[dict | None] = ContextVar("access_request_cache", default=None)


class RequestCache:
    """Middleware: one cache of access answers for the duration of each request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request_cache.set({})
        try:
            return self.get_response(request)
        finally:
            _request_cache.reset(token)


def cached(key, compute):
    """compute() once per request for `key`; every call outside a request."""
    cache = _request_cache.get()
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _forget(**_kwargs):
    # A request that changes who sees an account (or its folders) reads the new answer afterwards.
    cache = _request_cache.get()
    if cache:
        cache.clear()


post_save.connect(_forget, sender=Account, dispatch_uid="access_forget_account_saved")
post_delete.connect(_forget, sender=Account, dispatch_uid="access_forget_account_deleted")
post_save.connect(_forget, sender=Folder, dispatch_uid="access_forget_folder_saved")
post_delete.connect(_forget, sender=Folder, dispatch_uid="access_forget_folder_deleted")
m2m_changed.connect(_forget, sender=Account.members.through, dispatch_uid="access_forget_members")


def account_ids(user) -> list[int]:
    # Materialised once per request: a short literal IN list keeps the message queries on their
    # indexes, where an OR with a subquery would make the planners scan.
    if not user.is_authenticated:
        return []
    return cached(("account_ids", user.pk), lambda: list(accounts(user).values_list("pk", flat=True)))


def trash_folder_ids(user) -> list[int]:
    """The Trash folder of each account `user` sees (imap.trash), once per request."""
    from imap import trash

    return cached(("trash", user.pk), lambda: trash.folder_ids(account_ids(user)))


def message_filter(user) -> Q:
    """The Q that limits Message rows to those `user` may see: mail of an account they may see
    (whoever owned the account when it arrived), and their own mail that has no account (webhooks,
    imports). An account handed to a new owner takes its mail with it, and the old owner keeps none."""
    if not user.is_authenticated:
        return Q(pk__in=[])
    return Q(account_id__in=account_ids(user)) | Q(account__isnull=True, owner=user)


def messages(user):
    return Message.objects.filter(message_filter(user))


class NotAllowed(Exception):
    """`user` sees the object but may not do this to it: a 403 with this text."""


def owned_messages(user):
    """Messages `user` may move and delete on their server: the mail of the accounts they own, and
    their own mail that has no account (members of an account only read it and change its flags)."""
    if not user.is_authenticated:
        return Message.objects.none()
    return Message.objects.filter(Q(account__owner=user) | Q(account__isnull=True, owner=user))


def message_scopes(user) -> list[Q]:
    """message_filter split into its OR branches, for queries that run one index walk per branch
    and merge (frontend/listing.py): an OR across two indexes makes both planners sort everything."""
    if not user.is_authenticated:
        return []
    return [Q(account__isnull=True, owner=user), *(Q(account_id=pk) for pk in account_ids(user))]


def folders(user):
    return Folder.objects.filter(account_id__in=account_ids(user))


def attachments(user):
    return Attachment.objects.filter(message__in=messages(user).values("pk"))


def deliveries(user):
    return Delivery.objects.filter(message__in=messages(user).values("pk"))


def manages_delivery(user, delivery) -> bool:
    """Whether `user` sees the delivery's address and errors and may retry it: the owner of the
    service it goes through (`delivery.service` should be loaded: lists select_related it)."""
    return user.is_authenticated and delivery.service.owner_id == user.pk


def managed_delivery_ids(user, message) -> set:
    """The deliveries of `message` whose details `user` may see (see manages_delivery)."""
    return set(message.deliveries.filter(service__owner_id=user.pk).values_list("pk", flat=True))


def services(user):
    if not user.is_authenticated:
        return Service.objects.none()
    return Service.objects.filter(owner=user)


def get_or_404(queryset, **lookup):
    """One row of an access-limited queryset, or 404 (also for malformed ids)."""
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404("not found") from None
    except Exception as exc:  # malformed UUIDs raise ValidationError
        from django.core.exceptions import ValidationError

        if isinstance(exc, ValidationError):
            raise Http404("not found") from None
        raise
