"""Message listing: filters, keyset pagination on (arrived_at, id), thread and pipeline counts.

Keyset, not OFFSET: page 2,000 costs the same as page 1. Newest arrival first (Message.arrived_at:
when the server or mailgate received it, never the Date header, so new mail always lands on
top), ties broken by id. The cursor is that position, opaque to clients (base64 of JSON) and
validated like any other input.

Deleted mail leaves every list: a message of an account shows only while it has a live location
outside the account's Trash (imap.trash), unless the Trash itself (or another folder) is chosen.
"""

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, time

from django.db import connection
from django.db.models import BooleanField, Count, Exists, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from frontend import access, search
from imap.models import Folder, MessageLocation
from pipeline.models import Delivery, Message

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SEEN = "\\Seen"
FLAGGED = "\\Flagged"
# Only what a list row shows: bodies stay on disk.
ROW_FIELDS = ("id", "account_id", "folder_id", "thread_id", "subject", "sender_name", "sender_address", "date",
              "snippet", "flags", "has_attachments", "status", "received_at", "arrived_at")

# Filters that keep only some of a scope's rows (the account filter only picks a scope).
NARROWING = ("folder", "unread", "flagged", "has_attachment", "after", "before", "id")


class BadFilter(Exception):
    """An invalid filter or cursor: shown to the user as a 400."""


@dataclass
class Page:
    rows: list[dict]
    next_cursor: str | None


def has_flag(flag: str) -> Q:
    """Messages whose `flags` JSON list contains `flag` (no JSON `contains` lookup on SQLite)."""
    if connection.vendor == "postgresql":
        return Q(flags__contains=[flag])
    return Q(RawSQL("EXISTS (SELECT 1 FROM json_each(pipeline_message.flags) WHERE json_each.value = %s)",
                    (flag,), output_field=BooleanField()))


def encode_cursor(row: dict) -> str:
    raw = json.dumps([row["arrived_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        arrived, ident = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        parsed = parse_datetime(arrived) if isinstance(arrived, str) else None
        if parsed is None:
            raise ValueError(arrived)
        if not isinstance(ident, str):  # uuid.UUID(123) raises AttributeError, not ValueError
            raise TypeError(ident)
        return parsed, uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadFilter("invalid cursor") from None


def _flag_param(params, name) -> bool | None:
    value = params.get(name, "")
    if value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadFilter(f"{name} must be 1 or 0")


def _date_param(params, name, end_of_day=False):
    value = params.get(name, "")
    if not value:
        return None
    # parse_datetime/parse_date answer None to a malformed text but raise ValueError on a
    # well-formed impossible one (2024-02-30, month 13): both are the user's mistake.
    try:
        parsed = parse_datetime(value)
        day = parse_date(value) if parsed is None and len(value) == 10 else None
    except ValueError:
        parsed = day = None
    if parsed is None:
        if day is None:
            raise BadFilter(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 date-time")
        parsed = datetime.combine(day, time.max if end_of_day else time.min)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def _int_param(params, name):
    value = params.get(name, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadFilter(f"{name} must be a number") from None


_SEARCH = object()


def filtered(user, params, scope: Q | None = None, match=_SEARCH):
    """The user's messages (or those in `scope`, one of access.message_scopes) narrowed by the
    request's filters (see docs/api.md). `match`: search.matching(q) when the caller already has
    it (one search for several scopes)."""
    rows = Message.objects.filter(scope if scope is not None else access.message_filter(user))
    query = params.get("q", "").strip()
    if query:
        match = search.matching(query, user) if match is _SEARCH else match
        rows = rows.filter(match) if match is not None else rows.none()
    account_id = _int_param(params, "account")
    if account_id is not None:
        access.get_or_404(access.accounts(user), pk=account_id)
        rows = rows.filter(account_id=account_id)
    folder_id = _int_param(params, "folder")
    if folder_id is not None:
        access.get_or_404(access.folders(user), pk=folder_id)
        rows = rows.filter(Q(Exists(MessageLocation.objects.filter(
            message_id=OuterRef("pk"), folder_id=folder_id, expunged_at__isnull=True)))
            | Q(folder_id=folder_id) & imported_only())
    else:
        rows = rows.filter(not_deleted(access.trash_folder_ids(user), probe=scope is not None or isinstance(
            match, search.Listed)))
    unread = _flag_param(params, "unread")
    if unread is not None:
        rows = rows.exclude(has_flag(SEEN)) if unread else rows.filter(has_flag(SEEN))
    flagged = _flag_param(params, "flagged")
    if flagged is not None:
        rows = rows.filter(has_flag(FLAGGED)) if flagged else rows.exclude(has_flag(FLAGGED))
    attachment = _flag_param(params, "has_attachment")
    if attachment is not None:
        rows = rows.filter(has_attachments=attachment)
    after = _date_param(params, "after")
    if after is not None:
        rows = rows.filter(date__gte=after)
    before = _date_param(params, "before", end_of_day=True)
    if before is not None:
        rows = rows.filter(date__lte=before)
    ids = params.getlist("id") if hasattr(params, "getlist") else []
    if ids:
        try:
            rows = rows.filter(pk__in=[uuid.UUID(i) for i in ids[:MAX_LIMIT]])
        except ValueError:
            raise BadFilter("id must be a message id") from None
    return rows


def imported_only() -> Q:
    """Mail imported into an account (imap/importer.py) that no sync has found on the server: it
    has no location, live or expunged, and is listed in the account's Imported folder.

    On PostgreSQL the look-up runs per row, and so only for imported rows: as a hashed NOT EXISTS
    the planner may choose, it would read every location of the install once per query (see
    not_deleted's `probe`)."""
    if connection.vendor == "postgresql":
        return Q(source=Message.Source.IMPORT) & Q(RawSQL(
            f"NOT EXISTS (SELECT 1 FROM {MessageLocation._meta.db_table} loc "
            "WHERE loc.message_id = pipeline_message.id OFFSET 0)", (), output_field=BooleanField()))
    return Q(source=Message.Source.IMPORT) & ~Exists(MessageLocation.objects.filter(message_id=OuterRef("pk")))


def not_deleted(trash_ids, probe=False) -> Q:
    """Mail that is not deleted: off-server mail (webhooks, imports not found on the server), or
    mail with a live location outside its account's Trash (`trash_ids`: access.trash_folder_ids).
    Moved to Trash, expunged here or by another client: gone.

    `probe`: for a query that stops after a page. PostgreSQL may otherwise hash every live location
    once per query (a scan of the whole table, 80 ms at 200,000 messages) where looking up the
    page's few rows by index costs well under a millisecond; OFFSET 0 forbids that rewrite."""
    if probe and connection.vendor == "postgresql":
        return Q(account__isnull=True) | imported_only() | Q(RawSQL(
            f"EXISTS (SELECT 1 FROM {MessageLocation._meta.db_table} live WHERE live.message_id = pipeline_message.id "
            "AND live.expunged_at IS NULL AND NOT (live.folder_id = ANY(%s)) OFFSET 0)", (list(trash_ids),),
            output_field=BooleanField()))
    live = MessageLocation.objects.filter(message_id=OuterRef("pk"), expunged_at__isnull=True)
    if trash_ids:
        live = live.exclude(folder_id__in=trash_ids)
    return Q(account__isnull=True) | imported_only() | Q(Exists(live))


def _order_key(row):
    return (row["arrived_at"], row["id"])


def _after(rows, cursor):
    """The rows after `cursor`, in page order."""
    if cursor is not None:
        arrived, ident = cursor
        # The redundant `arrived_at <= a` gives both planners a range to seek to on the index.
        rows = rows.filter(arrived_at__lte=arrived).filter(Q(arrived_at__lt=arrived) | Q(arrived_at=arrived,
                                                                                          id__lt=ident))
    return rows.order_by("-arrived_at", "-id")


def _scope_page(rows, cursor, limit) -> list[dict]:
    """Up to limit + 1 rows of one scope after `cursor`, in page order."""
    return list(_after(rows, cursor)[: limit + 1])


def message_page(user, params) -> Page:
    limit = _int_param(params, "limit") or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadFilter(f"limit must be between 1 and {MAX_LIMIT}")
    cursor = decode_cursor(params["cursor"]) if params.get("cursor") else None
    scopes = access.message_scopes(user)
    if not scopes:
        return Page(rows=[], next_cursor=None)
    # One keyset walk per scope (the user's own messages, then each shared account), each on its
    # own index and stopping after a page, merged here: cheap however deep the cursor is.
    merged: dict = {}
    query = params.get("q", "").strip()
    # A window (search.Window) holds a page when the words alone are frequent: filters that keep
    # fewer rows would make it miss, and each miss costs a second collection.
    narrowed = any(params.get(name) for name in NARROWING)
    match = search.matching(query, user, window=not narrowed) if query else None
    if isinstance(match, search.Listed):
        found = listed_page(user, params, match, cursor, limit)
        scopes = []
    elif isinstance(match, search.Window):
        found, scopes = windowed_page(user, params, match, scopes, cursor, limit)
        merged = {row["id"]: row for row in found}
    for scope in scopes:
        for row in _scope_page(filtered(user, params, scope, match).values(*ROW_FIELDS), cursor, limit):
            merged[row["id"]] = row
    if merged or scopes:
        found = sorted(merged.values(), key=_order_key, reverse=True)[: limit + 1]
    more = len(found) > limit
    found = found[:limit]
    return Page(rows=found, next_cursor=encode_cursor(found[-1]) if more and found else None)


def windowed_page(user, params, window, scopes, cursor, limit) -> tuple[list[dict], list[Q]]:
    """Up to limit + 1 rows of each scope after `cursor` among many search matches (search.Window),
    without collecting them all: the next `span` rows of each scope bound both the rowids whose
    matches are collected and the scope's walk. Answers the rows of the scopes whose window held a
    page (or their last rows) and the scopes left to walk with every match collected (a scope where
    the words are rarer than in the whole table, or that has much Trash)."""
    span = window.span(limit, len(scopes))
    if span is None:
        search.collect(window)
        return [], scopes
    # The window is read from the scope's index alone: testing each row for the Trash as well (as
    # the walk does) would double the cost. The walk's rows are some of the window's, so their
    # matches are collected all the same.
    account = _int_param(params, "account")
    heads = [_window(_after(Message.objects.filter(scope, *([Q(account_id=account)] if account else [])), cursor),
                     span) for scope in scopes]
    rowids = [edge for low, high, _end in heads if low is not None for edge in (low, high)]
    if rowids:
        search.collect(window, min(rowids), max(rowids))
    found, left = [], []
    for scope, (_low, _high, end) in zip(scopes, heads):
        rows = filtered(user, params, scope, window)
        if end is not None:  # the walk stops at the window's last row: the rows after it are not collected
            rows = rows.filter(RawSQL("(pipeline_message.arrived_at, pipeline_message.id) >= (%s, %s)", end,
                                      output_field=BooleanField()))
        page = _scope_page(rows.values(*ROW_FIELDS), cursor, limit)
        if len(page) > limit or end is None:
            found += page
        else:
            left.append(scope)
    if left:
        search.collect(window)
    return found, left


def _window(rows, span) -> tuple[int | None, int | None, tuple | None]:
    """The lowest and highest rowid among the first `span` of `rows` (None, None: no rows) and the
    last one's (arrived_at, id) as stored, None when there are fewer than `span`. One query, in
    SQL: loading the rows (dates and UUIDs) would cost more than walking them."""
    sql, params = rows.annotate(row=RawSQL("pipeline_message.rowid", ())).values(
        "row", "arrived_at", "id")[:span].query.sql_with_params()
    with connection.cursor() as cursor:
        # CAST: the text as stored, which the walk's bound compares with (no date converter).
        cursor.execute(f"SELECT min(row) OVER (), max(row) OVER (), count(*) OVER (), CAST(arrived_at AS TEXT), id "
                       f"FROM ({sql}) ORDER BY arrived_at, id LIMIT 1", params)
        found = cursor.fetchone()
    if found is None:
        return None, None, None
    low, high, count, arrived, ident = found
    return low, high, ((arrived, ident) if count == span else None)


def listed_page(user, params, listed, cursor, limit) -> list[dict]:
    """Up to limit + 1 rows after `cursor` among search matches listed newest first (search.Listed):
    their head is read in growing slices, through the request's filters, until a page is full, so
    a page costs what it shows, not what matched."""
    start = 0
    if cursor is not None:  # the first match after the cursor, in the (arrived_at, id) order of pages
        after = (search.micros(cursor[0]), str(cursor[1]))  # a UUID's text sorts as the UUID does
        while start < len(listed.ids) and (listed.times[start], listed.ids[start]) >= after:
            start += 1
    rows, step = [], 2 * limit + 2
    while start < len(listed.ids) and len(rows) <= limit:
        chunk = search.Listed(search.ids_in(listed.ids[start:start + step]))
        rows += _scope_page(filtered(user, params, None, chunk).values(*ROW_FIELDS), None, limit - len(rows))
        start, step = start + step, step * 4
    return rows[: limit + 1]


def thread_rows(user, message) -> list[dict]:
    if message.thread_id is None:
        return list(access.messages(user).filter(pk=message.pk).values(*ROW_FIELDS))
    # The open message stays even in Trash; its deleted neighbours leave the conversation.
    rows = access.messages(user).filter(Q(thread_id=message.thread_id)).filter(
        not_deleted(access.trash_folder_ids(user)) | Q(pk=message.pk))
    return list(rows.values(*ROW_FIELDS).order_by("arrived_at", "id")[:500])


def stats(user) -> dict:
    messages = dict(access.messages(user).order_by().values_list("status").annotate(n=Count("pk")))
    deliveries = dict(access.deliveries(user).order_by().values_list("status").annotate(n=Count("pk")))
    return {
        # What the lists show as unread (deleted mail aside): the tab title's count.
        "unread": filtered(user, {"unread": "1"}).count(),
        "messages": {status: messages.get(status, 0) for status in Message.Status.values},
        "deliveries": {status: deliveries.get(status, 0) for status in Delivery.Status.values},
    }


def counts(user, params) -> dict:
    """Total and unread of the list the filters describe: the heading's counts and a search's
    result count."""
    rows = filtered(user, params)
    return {"total": rows.count(), "unread": rows.exclude(has_flag(SEEN)).count()}


def folder_unread(user) -> dict[int, int]:
    """Unread messages per folder of the user's accounts (the sidebar), in two grouped queries: a
    message counts in every folder it has a live location in; mail imported_only in its Imported
    folder."""
    unread = Message.objects.filter(account_id__in=access.account_ids(user)).exclude(has_flag(SEEN))
    rows = (unread.filter(locations__expunged_at__isnull=True)
            .values("locations__folder_id").annotate(n=Count("pk", distinct=True)).order_by())
    counts = {row["locations__folder_id"]: row["n"] for row in rows}
    # Through the Imported folders' ids (an index), not a scan of every unread message's source:
    # the sidebar is counted again after every live event.
    imported_folders = Folder.objects.filter(account_id__in=access.account_ids(user), name=Folder.IMPORTED,
                                             present=False).values("pk")
    for row in (unread.filter(folder_id__in=imported_folders).filter(imported_only())
                .values("folder_id").annotate(n=Count("pk")).order_by()):
        counts[row["folder_id"]] = counts.get(row["folder_id"], 0) + row["n"]
    return counts
