"""Search by meaning, hybrid ranking and related messages, over what the user may see.

Modes of GET /api/messages/?q=…&mode=… (docs/api.md):

- text: the full-text search of frontend/search.py, newest first, keyset pages (unchanged).
- semantic: the nearest messages to the query's vector, best first.
- hybrid (what the search box asks for; the API's default stays text): reciprocal rank fusion (RRF, k=60) of three rankings: the
  messages with every word (BM25 order on SQLite, ts_rank on PostgreSQL), the messages with any
  of the words (same order), and the semantic ranking. A message with every word is on two lists
  and so ahead of one found by meaning alone: exact words never lose to hybrid ranking, and a
  question with no message holding all its words is answered by meaning.

Access: the vector indexes searched are only the scopes of access.message_scopes (the user's
accounts and their own mail without one), and every hit is read back through listing.filtered
(access, deletion and the request's filters) before it is shown, so nothing another user owns,
nothing deleted and nothing filtered out can appear, whatever the index holds.
"""

import base64
import binascii
import json
import re
import uuid

import numpy as np
from django.db import connection
from django.db.models import Exists, OuterRef, Q

from frontend import access, listing, search
from pipeline.models import Message
from pipeline.semantic import chunking, index, model
from pipeline.semantic.embed import scope_key
from pipeline.semantic.models import MessageVector

MODES = ("hybrid", "text", "semantic")
RRF_K = 60
CANDIDATES = 100  # per ranking fused
MAX_DEPTH = 2 * listing.MAX_LIMIT  # the deepest ranking a page asks for (limit * 2)
RELATED = 10
# WordLlama's cosine between unrelated texts sits around 0 (±0.1); "plane ticket" to a flight
# booking is 0.23, a bill to a hosting statement 0.45. Below these a hit is noise, not meaning:
# better no suggestion than "Lunch on Thursday?" next to an invoice.
MIN_SIMILARITY = 0.15
MIN_RELATED_SIMILARITY = 0.2
# Words that say nothing about which message is meant; dropped from the any-word ranking only.
STOPWORDS = set("""a an and are as at be by can did do does for from had has have how i in is it its me my
of on or our that the their them this to was we were what when where which who why with you your
mail email message messages about find show last""".split())
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def mode_of(params) -> str:
    """The search mode asked for. Without one the API keeps its full-text answer with keyset pages
    (existing clients page with cursors); the search box asks for hybrid."""
    mode = params.get("mode", "") or "text"
    if mode not in MODES:
        raise listing.BadFilter(f"mode must be one of: {', '.join(MODES)}")
    return mode


def _scope_keys(user) -> list[str]:
    return [scope_key(pk, None) for pk in access.account_ids(user)] + [scope_key(None, user.pk)]


def semantic_ranking(user, text: str, limit: int = CANDIDATES) -> list[tuple[str, float]]:
    """(message id hex, similarity) best first, from every scope the user may see."""
    vector = model.quantize(model.embed_texts([text]))[0]
    hits = []
    for key in _scope_keys(user):
        hits.extend(index.scope(key).search(vector, limit))
    hits.sort(key=lambda hit: -hit.similarity)
    return [(hit.message_id, hit.similarity) for hit in hits[:limit] if hit.similarity >= MIN_SIMILARITY]


def _text_ranking(user, words: list[str], every: bool, limit: int = CANDIDATES) -> list[str]:
    """Message ids matching the words (all, or any), by relevance, within the user's scopes."""
    if not words:
        return []
    accounts = access.account_ids(user)
    scope_sql = "(m.account_id IN ({}) OR (m.account_id IS NULL AND m.owner_id = %s))".format(
        ", ".join(["%s"] * len(accounts)) or "NULL")
    if connection.vendor == "sqlite":
        quoted = ['"' + word.replace('"', '""') + '"' for word in words]
        match = (" AND " if every else " OR ").join(quoted)
        # Weights per column (message_id, subject, sender, body): the subject says the most.
        fts, rank = search.SQLITE_FTS, f"bm25({search.SQLITE_FTS}, 0, 4, 2, 1)"
        # Ranked inside FTS5 first, and only the best few hundred read from the message table:
        # joining every match cost ~40 % more CPU for frequent words (200,000 messages). Should
        # other users' mail crowd the user's out of that head, the whole query answers below.
        head = (f"SELECT m.id FROM (SELECT rowid, {rank} AS score FROM {fts} WHERE {fts} MATCH %s ORDER BY score "
                f"LIMIT {int(limit) * 4}) f JOIN pipeline_message m ON m.rowid = f.rowid WHERE {scope_sql} "
                f"ORDER BY f.score LIMIT {int(limit)}")
        params = [match, *accounts, user.pk]
        with connection.cursor() as cursor:
            cursor.execute(head, params)
            found = cursor.fetchall()
        if len(found) == limit:
            return [uuid.UUID(str(row[0])).hex for row in found]
        sql = (f"SELECT m.id FROM {fts} f JOIN pipeline_message m ON m.rowid = f.rowid "
               f"WHERE {fts} MATCH %s AND {scope_sql} ORDER BY {rank} LIMIT {int(limit)}")
    elif connection.vendor == "postgresql":
        document = search.POSTGRES_DOCUMENT.replace("pipeline_message.", "m.")
        query = (" & " if every else " | ").join(word.lower() for word in words)
        # ts_rank reads each match's document: rank a bounded set of matches, not all of them.
        sql = (f"SELECT id FROM (SELECT m.id, {document} AS doc FROM pipeline_message m "
               f"WHERE {document} @@ to_tsquery('simple'::regconfig, %s) AND {scope_sql} LIMIT 2000) hits "
               f"ORDER BY ts_rank(doc, to_tsquery('simple'::regconfig, %s)) DESC LIMIT {int(limit)}")
        params = [query, *accounts, user.pk, query]
    else:
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [uuid.UUID(str(row[0])).hex for row in cursor.fetchall()]


def fuse(rankings: list[list[str]], k: int = RRF_K) -> list[str]:
    """Reciprocal rank fusion: score(d) = Σ 1 / (k + rank of d in each ranking)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, ident in enumerate(ranking, start=1):
            scores[ident] = scores.get(ident, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda ident: -scores[ident])


def ranked_ids(user, text: str, mode: str, limit: int = CANDIDATES) -> list[str]:
    """The ranking of `mode` (semantic or hybrid) for `text`, before access and filters."""
    semantic = [ident for ident, _score in semantic_ranking(user, text, limit)]
    if mode == "semantic":
        return semantic
    words = search.terms(text)
    content = [word for word in words if word.lower() not in STOPWORDS] or words
    return fuse([_text_ranking(user, words, every=True, limit=limit),
                 _text_ranking(user, content, every=False, limit=limit), semantic])


def _visible_page(user, params, ids: list[str], start: int, limit: int) -> tuple[list[dict], int | None]:
    """Up to `limit` rows the user may see, in the order of `ids` from position `start`, and the
    position the next page starts from (None: no more). The candidates are read back a page's
    worth at a time, not all of them: most are visible, so one read of ~limit ids usually does."""
    rows, position, step = [], start, limit + 1 + limit // 2
    while position < len(ids) and len(rows) <= limit:
        chunk = ids[position:position + step]
        found = _visible_rows(user, params, chunk)
        for ident in chunk:
            if ident in found:
                if len(rows) == limit:  # one more visible row: there is a next page, from here
                    return rows, position
                rows.append(found[ident])
            position += 1
        step *= 2  # filters hide many: read further ahead
    return rows, None


def _visible_rows(user, params, ids: list[str]) -> dict[str, dict]:
    """The rows of `ids` that the user may see and the request's filters keep (no `q`)."""
    filters = params.copy()  # a QueryDict's copy is mutable; listing reads `id` with getlist
    for key in ("q", "mode", "cursor"):
        filters.pop(key, None)
    rows = _by_id_within(listing.filtered(user, filters), ids).values(*listing.ROW_FIELDS)
    found = {row["id"].hex: row for row in rows}
    _forget_deleted(user, [i for i in ids if i not in found])
    return found


def _by_id_within(allowed, ids: list[str]):
    """The messages of `ids` that the queryset `allowed` holds, driven by the primary key: with
    `allowed.filter(pk__in=ids)` SQLite (without ANALYZE statistics) walks the owner's whole date
    index instead, ~300 ms at 100,000 messages; here each candidate is one correlated probe."""
    return Message.objects.order_by().filter(pk__in=[uuid.UUID(i) for i in ids]).filter(
        Exists(allowed.filter(pk=OuterRef("pk"))))


def _forget_deleted(user, missing: list[str]) -> None:
    """Hits whose message no longer exists leave this process's indexes (deleted mail)."""
    if not missing:
        return
    existing = {m.hex for m in Message.objects.filter(pk__in=[uuid.UUID(i) for i in missing])
                .values_list("pk", flat=True)}
    gone = [i for i in missing if i not in existing]
    if gone:
        for key in _scope_keys(user):
            index.scope(key).forget(gone)


def message_page(user, params) -> listing.Page:
    """The answer of /api/messages/ for mode semantic or hybrid: best first, one page."""
    limit = listing._int_param(params, "limit") or listing.DEFAULT_LIMIT
    if not 1 <= limit <= listing.MAX_LIMIT:
        raise listing.BadFilter(f"limit must be between 1 and {listing.MAX_LIMIT}")
    # The ranking's depth is fixed by the first page and carried in the cursor: every page cuts
    # the same ranking, so pages neither repeat nor skip a message whatever their `limit`.
    start, depth = decode_cursor(params["cursor"]) if params.get("cursor") else (0, max(CANDIDATES, limit * 2))
    text = params.get("q", "").strip()
    ids = ranked_ids(user, text, mode_of(params), limit=depth)
    rows, following = _visible_page(user, params, ids, start, limit)
    return listing.Page(rows=rows, next_cursor=encode_cursor(following, depth) if following is not None else None)


def counts(user, params) -> dict:
    """The heading's counts of a semantic or hybrid search: the messages its pages list (the
    ranking depth of a first page of the default size, the search box's), not the full-text
    matches, which are another set."""
    limit = listing._int_param(params, "limit") or listing.DEFAULT_LIMIT
    ids = ranked_ids(user, params.get("q", "").strip(), mode_of(params), limit=max(CANDIDATES, limit * 2))
    rows = _visible_rows(user, params, ids).values()
    return {"total": len(rows), "unread": sum(1 for row in rows if listing.SEEN not in row["flags"])}


def encode_cursor(position: int, depth: int) -> str:
    raw = json.dumps(["rank", position, depth]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    """(position in the ranking, the ranking's depth) of a ranked page's next_cursor."""
    try:
        kind, position, depth = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise listing.BadFilter("invalid cursor") from None
    if kind != "rank" or not all(type(n) is int for n in (position, depth)) or not (
            0 <= position < depth <= MAX_DEPTH):
        raise listing.BadFilter("invalid cursor")
    return position, depth


# -- related messages -----------------------------------------------------------------------------

def _normalized_subject(subject: str) -> set[str]:
    return {w.lower() for w in search.terms(_SUBJECT_PREFIX.sub("", subject or "")) if w.lower() not in STOPWORDS}


def _message_vector(message) -> np.ndarray | None:
    """The message's own vector: the mean of its chunks' (stored) vectors, or computed now."""
    stored = list(MessageVector.objects.filter(message_id=message.pk).values_list("vector", flat=True))
    if stored:
        vectors = np.frombuffer(b"".join(bytes(v) for v in stored), dtype=np.int8).reshape(len(stored), -1)
        mean = vectors.astype(np.float32).mean(axis=0, keepdims=True)
        return model.quantize(mean / max(float(np.linalg.norm(mean)), 1e-9))[0]
    texts = chunking.chunks(message.subject, message.text_body)
    if not texts:
        return None
    return model.quantize(model.embed_texts([" ".join(texts)]))[0]


def reason(message, other: dict) -> str:
    """One line saying why `other` is related to `message`."""
    if message.sender_address and other["sender_address"].lower() == message.sender_address.lower():
        return f"Same sender: {other['sender_name'] or other['sender_address']}"
    mine, theirs = _normalized_subject(message.subject), _normalized_subject(other["subject"])
    if mine and theirs and len(mine & theirs) / len(mine | theirs) >= 0.5:
        return "Similar subject"
    return "Similar content"


def related(user, message, limit: int = RELATED) -> list[dict]:
    """Up to `limit` messages nearest to `message` across the user's accounts, other threads only,
    each row with a `reason`."""
    vector = _message_vector(message)
    if vector is None:
        return []
    wanted = limit * 4 + 10  # room for the message's own thread and deleted mail
    hits = []
    for key in _scope_keys(user):
        hits.extend(index.scope(key).search(vector, wanted))
    hits.sort(key=lambda hit: -hit.similarity)
    ids = [hit.message_id for hit in hits
           if hit.message_id != message.pk.hex and hit.similarity >= MIN_RELATED_SIMILARITY]
    rows = _by_id_within(listing.filtered(user, {}), ids)
    if message.thread_id is not None:
        rows = rows.filter(~Q(thread_id=message.thread_id) | Q(thread_id__isnull=True))
    found = {row["id"].hex: row for row in rows.values(*listing.ROW_FIELDS)}
    _forget_deleted(user, [i for i in ids if i not in found])
    similarity = {hit.message_id: hit.similarity for hit in hits}
    out = []
    for ident in ids:
        row = found.get(ident)
        if row is not None:
            out.append({**row, "reason": reason(message, row), "similarity": round(similarity[ident], 3)})
            if len(out) == limit:
                break
    return out
