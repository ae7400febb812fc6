"""Full-text search over messages: SQLite FTS5 on the default install, PostgreSQL's own FTS there.

The index is created by `install()` from a post_migrate handler (frontend/apps.py), because
tests build tables with --nomigrations and a migration's RunSQL would never run there. Every
statement is idempotent (IF NOT EXISTS), so running it after each migrate or flush is harmless.

SQLite: an FTS5 table `frontend_message_fts(message_id UNINDEXED, subject, sender, body)` kept in
sync by triggers on pipeline_message. The FTS rowid is the message row's rowid, so triggers find
the row to replace without scanning; `rebuild()` repairs the index from scratch (e.g. after a
VACUUM, which may renumber rowids of a table without an INTEGER PRIMARY KEY).

PostgreSQL: a GIN expression index on `to_tsvector('simple', subject || sender || body)`; the
query repeats exactly that expression so the planner uses the index. No trigger needed.

User input never reaches either query language raw: it is split into words, each quoted (FTS5)
or reduced to word characters (tsquery), the last word matching as a prefix (search as you type).
Words joined by punctuation ("LIVE-B", "report-299.pdf") stay together as a phrase: otherwise
"LIVE-B" would be "live AND b*" and match "LIVE-A ... before". Attachment file names match too
(a substring of the name), through a second, OR-ed condition on the attachment table.
"""

import re

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

MAX_TERMS = 12
# Above this many matches, walking the date index and probing the match set finds a page sooner
# than sorting every match by date (SQLite's planner cannot know; see matching()).
DENSE_MATCHES = 2000
_WORD = re.compile(r"\w+", re.UNICODE)

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

POSTGRES_DOCUMENT = (
    "to_tsvector('simple'::regconfig, coalesce(pipeline_message.subject, '') || ' ' || "
    "coalesce(pipeline_message.sender_name, '') || ' ' || coalesce(pipeline_message.sender_address, '') "
    "|| ' ' || coalesce(pipeline_message.text_body, ''))"
)
POSTGRES_SETUP = [
    "CREATE INDEX IF NOT EXISTS frontend_message_search ON pipeline_message USING GIN (("
    + POSTGRES_DOCUMENT.replace("pipeline_message.", "") + "))",
]


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
            cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'frontend_message_search'")
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
    """Re-index every message (SQLite; PostgreSQL's expression index needs no upkeep)."""
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


def matching(text: str) -> Q | None:
    """A Q for messages matching `text`, or None when `text` has no searchable words.

    On SQLite the Q reads the matches collected by this call: use it before the next call."""
    phrases = groups(text)
    if not phrases:
        return None
    names = _attachment_names(text)
    if connection.vendor == "sqlite":
        # The matches are collected once into a temporary table keyed by rowid (this connection's
        # own; refilled by each call), so the inbox's per-scope queries (frontend/listing.py) each
        # probe its primary key instead of rebuilding the match set: at 1,000,000 messages a
        # common word has ~240,000 matches, 40 ms to build per scope (bench/api.py).
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {SQLITE_MATCHES} (id INTEGER PRIMARY KEY)")
            cursor.execute(f"DELETE FROM temp.{SQLITE_MATCHES}")
            cursor.execute(f"INSERT INTO temp.{SQLITE_MATCHES} SELECT rowid FROM {SQLITE_FTS} "
                           f"WHERE {SQLITE_FTS} MATCH %s", (fts5_query(phrases),))
            dense = cursor.rowcount >= DENSE_MATCHES
        # Few matches: fetch them by rowid and sort (cheap). Many: a unary + stops SQLite from
        # driving the query from the match list, so it walks the (owner|account, date, id) index
        # in page order and stops after one page of matches.
        column = "+pipeline_message.rowid" if dense else "pipeline_message.rowid"
        # rowid IN (...) probes the message table's own b-tree; cheaper than matching UUID text.
        return Q(RawSQL(f"{column} IN (SELECT id FROM temp.{SQLITE_MATCHES})", (), output_field=_bool())) | names
    if connection.vendor == "postgresql":
        return Q(RawSQL(f"{POSTGRES_DOCUMENT} @@ to_tsquery('simple'::regconfig, %s)", (tsquery(phrases),),
                        output_field=_bool())) | names
    # Any other database: a slow but correct fallback.
    condition = Q()
    for word in (w for words in phrases for w in words):
        condition &= Q(subject__icontains=word) | Q(sender_address__icontains=word) | Q(
            sender_name__icontains=word) | Q(text_body__icontains=word)
    return condition | names


def _bool():
    from django.db.models import BooleanField

    return BooleanField()
