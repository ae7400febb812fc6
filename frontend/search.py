"""Full-text search over messages: SQLite FTS5 on the default install, PostgreSQL's own FTS there.

The index is created by `install()` from a post_migrate handler (frontend/apps.py), because
tests build tables with --nomigrations and a migration's RunSQL would never run there. Every
statement is idempotent (IF NOT EXISTS), so running it after each migrate or flush is harmless.

SQLite: an FTS5 table `frontend_message_fts(message_id UNINDEXED, subject, sender, body)` kept in
sync by triggers on pipeline_message. The FTS rowid is the message row's rowid, so triggers find
the row to replace without scanning; `rebuild()` repairs the index from scratch (e.g. after a
VACUUM, which may renumber rowids of a table without an INTEGER PRIMARY KEY).

PostgreSQL: a stored generated column `search_document`, `to_tsvector('simple', subject || sender
|| body)`, with a GIN index. Stored, not an expression index: a query that walks the date index and
tests each row reads the vector instead of re-parsing the text (~0.25 ms a row), and ANALYZE keeps
word statistics on the column. A search first collects the user's matches with the GIN index, up
to SPARSE_MATCHES (see matching()). Adding the column rewrites the table once, under an exclusive
lock (2.5 minutes for 200,000 messages on a loaded 2-core machine); a later migration that changes the type of subject,
sender or text_body must drop the column first (install() adds it back).

User input never reaches either query language raw: it is split into words, each quoted (FTS5)
or reduced to word characters (tsquery), the last word matching as a prefix (search as you type).
Words joined by punctuation ("LIVE-B", "report-299.pdf") stay together as a phrase: otherwise
"LIVE-B" would be "live AND b*" and match "LIVE-A ... before". Attachment file names match too
(a substring of the name), through a second, OR-ed condition on the attachment table.
"""

import json
import math
import re
from datetime import datetime, timedelta, timezone

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

MAX_TERMS = 12
# Above this many matches, walking the date index and probing the match set finds a page sooner
# than sorting every match by date (SQLite's planner cannot know; see matching()).
DENSE_MATCHES = 2000
# A window (see Window) of more rows per scope than this is left for collecting every match: a
# less common word, whose page is spread over many rows.
WINDOW_ROWS = 2000
# Reading a row into a scope's window costs about as much as collecting this many matches (0.8 µs
# and 0.2 µs at 300,000 messages).
WINDOW_COST = 4
_WORD = re.compile(r"\w+", re.UNICODE)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

SQLITE_FTS = "frontend_message_fts"
SQLITE_MATCHES = "frontend_search_matches"  # a TEMP table: per connection, see matching()
SQLITE_SETUP = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {SQLITE_FTS} USING fts5(
        message_id UNINDEXED, subject, sender, body, tokenize = 'unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER IF NOT EXISTS frontend_message_fts_insert AFTER INSERT ON pipeline_message BEGIN
        INSERT INTO {SQLITE_FTS}(rowid, message_id, subject, sender, body)
        VALUES (new.rowid, new.id, new.subject, new.sender_name || ' ' || new.sender_address, new.text_body);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS frontend_message_fts_update
        AFTER UPDATE OF subject, sender_name, sender_address, text_body ON pipeline_message BEGIN
        DELETE FROM {SQLITE_FTS} WHERE rowid = old.rowid;
        INSERT INTO {SQLITE_FTS}(rowid, message_id, subject, sender, body)
        VALUES (new.rowid, new.id, new.subject, new.sender_name || ' ' || new.sender_address, new.text_body);
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS frontend_message_fts_delete AFTER DELETE ON pipeline_message BEGIN
        DELETE FROM {SQLITE_FTS} WHERE rowid = old.rowid;
    END""",
]

POSTGRES_DOCUMENT = "pipeline_message.search_document"  # a tsvector column, see POSTGRES_SETUP
POSTGRES_INDEX = "frontend_message_document"
POSTGRES_SETUP = [
    "ALTER TABLE pipeline_message ADD COLUMN IF NOT EXISTS search_document tsvector GENERATED ALWAYS AS ("
    "to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || coalesce(sender_name, '') || ' ' || "
    "coalesce(sender_address, '') || ' ' || coalesce(text_body, ''))) STORED",
    f"CREATE INDEX IF NOT EXISTS {POSTGRES_INDEX} ON pipeline_message USING GIN (search_document)",
    "DROP INDEX IF EXISTS frontend_message_search",  # the expression index of earlier versions
]
# Up to this many matches (within the user's scopes) a PostgreSQL search collects them, newest
# first, with the GIN index, and the inbox reads its page from the head of that list
# (listing.listed_page): cost grows with the matches, not the mailbox. Above it the queries walk
# the date index and test each row's stored vector, which finds a page after ~50 / frequency
# rows: a few hundred for a common word. Without the list a rare word made the planner walk a
# whole account (an OR with the attachment-name subquery cannot use the GIN index): 24 s at 200,000.
SPARSE_MATCHES = 10_000
# Collecting costs a row read per match up to the limit: when the planner's statistics on the
# column already promise this many matches in the whole table, the walk is taken without it.
DENSE_ESTIMATE = SPARSE_MATCHES


class Listed(Q):
    """matching()'s answer when it is the list of the matches (PostgreSQL, not many): `times` (in
    micros()) and `ids` (text) of the matches, newest first; the Q itself selects them all.

    Two flat lists, not a pair per match: 10,000 tuples and UUID objects per request made Python's
    garbage collector sweep the whole process every few requests (+70 ms at p95)."""

    times: list[int] = []
    ids: list[str] = []


class Window(Q):
    """matching(window=True)'s answer on SQLite when the words match DENSE_MATCHES messages or more.

    Collecting every match costs ~0.2 µs each (a common word is in a quarter of 1,000,000 messages:
    ~50 ms), while a page of such a word is found among a few hundred rows of each scope. So only
    the matches with a rowid from `low` up to `high` (None: no bound) are collected: the Q is true
    of the matches among rows whose rowid is within that span, false elsewhere. The caller bounds
    its walk to rows whose rowids it has had collected (collect(); listing.windowed_page).
    matching() collects the DENSE_MATCHES matches of highest rowid (newest mail: rowids grow with
    arrival), which often hold page 1's window already.

    `density`: matches per rowid among the collected ones (of all users' mail); `estimate`: the
    matches in the whole table at that density."""

    query = ""
    low: int | None = None
    high: int | None = None
    density = 1.0
    estimate = 0.0

    def span(self, limit: int, scopes: int) -> int | None:
        """How many rows of each scope to bound a walk to: twice what holds `limit` + 1 matches at
        the window's density. None when that is more than WINDOW_ROWS, or when walking it in every
        scope would cost more than collecting every match (WINDOW_COST)."""
        rows = math.ceil(2 * (limit + 1) / self.density)
        if rows > WINDOW_ROWS or rows * scopes * WINDOW_COST > self.estimate:
            return None
        return rows


def install(using=None) -> None:
    """Create the search index and its triggers if missing (idempotent)."""
    from django.db import connections

    conn = connections[using or "default"]
    if "pipeline_message" not in conn.introspection.table_names():
        return
    with conn.cursor() as cursor:
        if conn.vendor == "sqlite":
            created = SQLITE_FTS not in conn.introspection.table_names()
            for statement in SQLITE_SETUP:
                cursor.execute(statement)
            if created:
                _sqlite_fill(cursor)
        elif conn.vendor == "postgresql":
            cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [POSTGRES_INDEX])
            if cursor.fetchone():
                return
            # Deferred foreign-key checks queued earlier in this transaction make PostgreSQL
            # refuse CREATE INDEX ("pending trigger events"); run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for statement in POSTGRES_SETUP:
                cursor.execute(statement)


def _sqlite_fill(cursor) -> None:
    cursor.execute(f"DELETE FROM {SQLITE_FTS}")
    cursor.execute(
        f"""INSERT INTO {SQLITE_FTS}(rowid, message_id, subject, sender, body)
            SELECT rowid, id, subject, sender_name || ' ' || sender_address, text_body FROM pipeline_message"""
    )


def rebuild() -> None:
    """Re-index every message (SQLite; PostgreSQL's generated column needs no upkeep)."""
    install()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            _sqlite_fill(cursor)


def terms(text: str) -> list[str]:
    return _WORD.findall(text or "")[:MAX_TERMS]


def groups(text: str) -> list[list[str]]:
    """The query's whitespace-separated tokens, each as its words (a phrase when more than one),
    MAX_TERMS words in all."""
    found, budget = [], MAX_TERMS
    for token in (text or "").split():
        words = _WORD.findall(token)[:budget]
        if words:
            found.append(words)
            budget -= len(words)
        if budget <= 0:
            break
    return found


def fts5_query(phrases: list[list[str]]) -> str:
    """Each token a quoted FTS5 string (no operators, columns or syntax errors; several words in
    one string are a phrase); the last token's last word a prefix."""
    quoted = ['"' + " ".join(word.replace('"', '""') for word in words) + '"' for words in phrases]
    quoted[-1] += " *"
    return " AND ".join(quoted)


def tsquery(phrases: list[list[str]]) -> str:
    # \w+ words contain no tsquery operators; '<->' keeps a token's words adjacent, in order;
    # ':*' makes the last word a prefix.
    parts = [[word.lower() for word in words] for words in phrases]
    parts[-1][-1] += ":*"
    return " & ".join("(" + " <-> ".join(words) + ")" if len(words) > 1 else words[0] for words in parts)


def _attachment_names(text: str) -> Q:
    from pipeline.models import Attachment

    # Messages whose attachment name contains the query as typed ("report-299.pdf", "299.pdf").
    return Q(pk__in=Attachment.objects.filter(filename__icontains=text.strip()).values("message_id"))


def matching(text: str, user=None, window=False) -> Q | None:
    """A Q for messages matching `text`, or None when `text` has no searchable words. `user`: the
    matches are for that user's messages (PostgreSQL collects only those; None: anyone's).

    On SQLite the Q reads the matches collected by this call: use it before the next call.
    `window`: the caller reads one page per scope and handles a Window (listing.message_page):
    when there are many matches, only some are collected (see Window)."""
    phrases = groups(text)
    if not phrases:
        return None
    if connection.vendor == "postgresql":
        return _postgres_matching(phrases, text, user)
    names = _attachment_names(text)
    if connection.vendor == "sqlite":
        return _sqlite_matching(fts5_query(phrases), names, window)
    # Any other database: a slow but correct fallback.
    condition = Q()
    for word in (w for words in phrases for w in words):
        condition &= Q(subject__icontains=word) | Q(sender_address__icontains=word) | Q(
            sender_name__icontains=word) | Q(text_body__icontains=word)
    return condition | names


def _sqlite_matching(query: str, names: Q, window: bool) -> Q:
    # The matches are collected once into a temporary table keyed by rowid (this connection's
    # own; refilled by each call), so the inbox's per-scope queries (frontend/listing.py) each
    # probe its primary key instead of rebuilding the match set: at 1,000,000 messages a common
    # word has ~240,000 matches, 40 ms to build per scope (bench/api.py). FTS5 reads a prefix's
    # whole doclist whatever the LIMIT (~3 ms at 300,000 for `invoice*`); the inserts cost most.
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {SQLITE_MATCHES} (id INTEGER PRIMARY KEY)")
        # With a window: the DENSE_MATCHES matches of highest rowid, all of them when fewer.
        count = _collect(cursor, query, limit=DENSE_MATCHES if window else None)
        dense = count >= DENSE_MATCHES
        if dense and window:
            cursor.execute(f"SELECT min(id), max(id) FROM temp.{SQLITE_MATCHES}")
            low, high = cursor.fetchone()
            cursor.execute("SELECT max(rowid) FROM pipeline_message")
            last = cursor.fetchone()[0] or high
    # Few matches: fetch them by rowid and sort (cheap). Many: a unary + stops SQLite from
    # driving the query from the match list, so it walks the (owner|account, date, id) index
    # in page order and stops after one page of matches.
    column = "+pipeline_message.rowid" if dense else "pipeline_message.rowid"
    # rowid IN (...) probes the message table's own b-tree; cheaper than matching UUID text.
    condition = Q(RawSQL(f"{column} IN (SELECT id FROM temp.{SQLITE_MATCHES})", (), output_field=_bool())) | names
    if not (dense and window):
        return condition
    found = Window(condition)
    found.query, found.low, found.high = query, low, None
    found.density = count / (high - low + 1)
    found.estimate = found.density * last
    return found


def _collect(cursor, query: str, low=None, high=None, limit=None) -> int:
    """Fill the match table with the matches of `query` whose rowid is within low..high (None: no
    bound), the `limit` of highest rowid if given; answer how many."""
    cursor.execute(f"DELETE FROM temp.{SQLITE_MATCHES}")
    sql, params = f"INSERT INTO temp.{SQLITE_MATCHES} SELECT rowid FROM {SQLITE_FTS} WHERE {SQLITE_FTS} MATCH %s", [
        query]
    if low is not None:
        sql, params = sql + " AND rowid >= %s", params + [low]
    if high is not None:
        sql, params = sql + " AND rowid <= %s", params + [high]
    if limit is not None:
        sql, params = sql + " ORDER BY rowid DESC LIMIT %s", params + [limit]
    cursor.execute(sql, params)
    return cursor.rowcount


def collect(window: "Window", low=None, high=None) -> None:
    """Make the window's match table hold every match with a rowid within low..high (None: no
    bound; both None: every match, which makes the window's Q true of all matches)."""
    held = (window.low is None or (low is not None and low >= window.low)) and (
        window.high is None or (high is not None and high <= window.high))
    if not held:
        with connection.cursor() as cursor:
            _collect(cursor, window.query, low, high)
        window.low, window.high = low, high


def _postgres_matching(phrases, text: str, user) -> Q:
    """The matches of `phrases` and of attachment names (see SPARSE_MATCHES): the list of their ids
    when there are few, else the test on each row's vector."""
    from pipeline.models import Attachment

    condition = f"{POSTGRES_DOCUMENT} @@ to_tsquery('simple'::regconfig, %s)"
    query = tsquery(phrases)
    scope, scope_params = "", []
    if user is not None:
        from frontend import access

        scope = " AND (account_id = ANY(%s) OR (account_id IS NULL AND owner_id = %s))"
        scope_params = [access.account_ids(user), user.pk]
    with connection.cursor() as cursor:
        found = None
        if _estimated_matches(cursor, condition, query) < DENSE_ESTIMATE:
            # OFFSET 0 keeps the scope test outside: the planner would otherwise AND the GIN
            # index's matches with every row of the accounts, read from their index.
            # The time as integer microseconds: loading 10,000 timestamps with their time zone
            # costs ~40 ms of Python, integers almost nothing (and sort as exactly). One row of two
            # arrays, sorted newest first (see Listed).
            cursor.execute(f"SELECT array_agg(m ORDER BY m DESC, id DESC), array_agg(id::text ORDER BY m DESC, id "
                           f"DESC) FROM (SELECT (extract(epoch FROM arrived_at) * 1000000)::bigint AS m, id FROM "
                           f"(SELECT id, account_id, owner_id, arrived_at FROM pipeline_message WHERE {condition} "
                           f"OFFSET 0) hits WHERE true{scope} LIMIT %s) found",
                           [query, *scope_params, SPARSE_MATCHES + 1])
            times, ids = cursor.fetchone()
            found = (times or [], ids or [])
    named = [(micros(arrived), str(ident)) for arrived, ident in Attachment.objects.filter(
        filename__icontains=text.strip()).order_by().values_list("message__arrived_at", "message_id").distinct()[
        :SPARSE_MATCHES + 1]]
    if found is not None and len(found[1]) <= SPARSE_MATCHES and len(named) <= SPARSE_MATCHES:
        times, ids = found
        if named:
            merged = sorted(set(zip(times, ids)) | set(named), reverse=True)
            times, ids = [m for m, _ident in merged], [ident for _m, ident in merged]
        listed = Listed(ids_in(ids))
        listed.times, listed.ids = times, ids
        return listed
    words = Q(RawSQL(condition, (query,), output_field=_bool()))
    if not named:
        return words
    if len(named) > SPARSE_MATCHES:
        return words | _attachment_names(text)
    return words | ids_in([ident for _m, ident in named])


def micros(moment: datetime) -> int:
    """A time as whole microseconds since the epoch (Listed.times), exactly."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _estimated_matches(cursor, condition: str, query: str) -> float:
    """The planner's estimate of the matches. For several words it assumes they occur independently,
    but words of one message go together (a long mail holds more of every word): "budget deadl" has
    2.6 times the matches it expects at 200,000. The geometric mean with the rarest word's count (a
    bound the matches cannot exceed) corrects for much of that."""
    estimate = _estimated_rows(cursor, condition, query)
    parts = query.split(" & ")  # tsquery() joins the tokens so
    if len(parts) > 1 and estimate < DENSE_ESTIMATE:
        rarest = min(_estimated_rows(cursor, condition, part) for part in parts)
        estimate = math.sqrt(max(estimate, 1) * rarest)
    return estimate


def _estimated_rows(cursor, condition: str, query: str) -> float:
    cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM pipeline_message WHERE {condition}", [query])
    plan = cursor.fetchone()[0]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]


def ids_in(ids: list) -> Q:
    # A semi-join on the list (one array parameter): the planner probes the primary key for each
    # id. With `id = ANY(list)` it ANDs the list's bitmap with every row of the account from the
    # account index instead (2.5x slower at 200,000 messages, and growing with the account).
    return Q(RawSQL("pipeline_message.id IN (SELECT unnest(%s::uuid[]))", (ids,), output_field=_bool()))


def _bool():
    from django.db.models import BooleanField

    return BooleanField()
