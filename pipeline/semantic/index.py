"""Nearest neighbours over one scope's vectors, held in this process and kept current.

A scope is an account (its mail) or a user's mail without an account: exactly the units access
is granted on (frontend/access.py message_scopes), so a search reads only indexes the user may
see, and each index serves every user who sees that scope.

Freshness without a message bus: vectors are only inserted or deleted, never updated, so each
query first reads the rows with an id above the last one this index holds (an index range scan,
usually empty) and adds them. Vectors deleted with their message (retention, delete forever, a
removed account: foreign-key cascade) stay in the index until a hit is checked against the
database (forget()), which every caller does before showing anything; replaced vectors (a
reindex) bump VectorScope.generation, and an index of an older generation is rebuilt.

Below EXACT_LIMIT vectors the search is exact (usearch's SIMD brute force over an int8 matrix,
~30 ms for 150,000 vectors on one core); above it, an HNSW graph (usearch) is built once and
updated incrementally.
"""

import threading
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection
from usearch.index import Index, MetricKind, search as exact_search

from pipeline.semantic.model import DIMENSIONS
from pipeline.semantic.models import MessageVector, VectorScope


def exact_limit() -> int:
    return settings.MAILGATE_SEMANTIC_EXACT_LIMIT


@dataclass
class Hit:
    message_id: str  # 32 hex digits, as the Message UUID
    similarity: float  # cosine, -1..1


class ScopeIndex:
    """The vectors of one scope: an int8 matrix (exact) or an HNSW graph, plus the message of each row."""

    def __init__(self, key: str, generation: int):
        self.key, self.generation = key, generation
        self.last_id = 0
        self.count = 0
        self.matrix = np.zeros((0, DIMENSIONS), dtype=np.int8)  # exact mode; capacity >= count
        self.messages = np.zeros(0, dtype="V16")  # UUID bytes per row
        self.alive = np.zeros(0, dtype=bool)
        self.graph: Index | None = None
        self.lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------------

    def _rows_after(self, last_id: int):
        field, value = ("account_id", int(self.key[1:])) if self.key[0] == "a" else ("owner_id", int(self.key[1:]))
        rows = MessageVector.objects.filter(id__gt=last_id, **{field: value})
        if field == "owner_id":
            rows = rows.filter(account__isnull=True)
        # Raw rows: building Django model instances for a million vectors would dominate the load.
        sql, params = rows.order_by("id").values_list("id", "message_id", "vector").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def top_up(self) -> int:
        """Add the vectors written since the last call; returns how many."""
        rows = self._rows_after(self.last_id)
        if not rows:
            return 0
        vectors = np.frombuffer(b"".join(bytes(r[2]) for r in rows), dtype=np.int8).reshape(len(rows), DIMENSIONS)
        ids = np.array([_uuid_bytes(r[1]) for r in rows], dtype="V16")
        start, end = self.count, self.count + len(rows)
        self.messages = np.concatenate([self.messages, ids])
        self.alive = np.concatenate([self.alive, np.ones(len(rows), dtype=bool)])
        if self.graph is None and end > exact_limit():
            self._start_graph()
        if self.graph is not None:
            self.graph.add(np.arange(start, end, dtype=np.uint64), vectors, threads=0)
        else:
            if end > len(self.matrix):  # grow by doubling: a trickle of new mail stays cheap
                grown = np.zeros((max(end, 2 * len(self.matrix), 1024), DIMENSIONS), dtype=np.int8)
                grown[:start] = self.matrix[:start]
                self.matrix = grown
            self.matrix[start:end] = vectors
        self.count = end
        self.last_id = rows[-1][0]
        return len(rows)

    def _start_graph(self) -> None:
        self.graph = Index(ndim=DIMENSIONS, metric=MetricKind.Cos, dtype="i8", connectivity=16,
                           expansion_add=64, expansion_search=96)
        if self.count:
            self.graph.add(np.arange(self.count, dtype=np.uint64), self.matrix[:self.count], threads=0)
        self.matrix = np.zeros((0, DIMENSIONS), dtype=np.int8)

    # -- searching -------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """The k nearest messages (best chunk each) to an int8 query vector."""
        if not self.count or not k:
            return []
        wanted = min(self.count, 3 * k + 10)  # a message has several chunks; some rows are dead
        if self.graph is not None:
            found = self.graph.search(query, wanted)
        else:
            found = exact_search(self.matrix[:self.count], query, wanted, MetricKind.Cos, exact=True)
        best: dict[bytes, float] = {}
        for row, distance in zip(np.asarray(found.keys).ravel(), np.asarray(found.distances).ravel()):
            row = int(row)
            if row >= self.count or not self.alive[row]:
                continue
            message = bytes(self.messages[row])
            similarity = 1.0 - float(distance)
            if similarity > best.get(message, -2.0):
                best[message] = similarity
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        return [Hit(message.hex(), similarity) for message, similarity in ranked]

    def forget(self, message_ids) -> None:
        """Mark the rows of messages that no longer exist, so they are never returned again."""
        gone = np.array([_uuid_bytes(m) for m in message_ids], dtype="V16")
        if len(gone):
            self.alive &= ~np.isin(self.messages, gone)

    def memory_bytes(self) -> int:
        vectors = self.graph.memory_usage if self.graph is not None else self.matrix.nbytes
        return int(vectors + self.messages.nbytes + self.alive.nbytes)


def _uuid_bytes(value) -> bytes:
    if hasattr(value, "bytes"):
        return value.bytes
    return bytes.fromhex(str(value).replace("-", ""))


_indexes: dict[str, ScopeIndex] = {}
_registry_lock = threading.Lock()


def scope(key: str) -> ScopeIndex:
    """This process's index of `key`, current with the database."""
    generation = VectorScope.objects.filter(key=key).values_list("generation", flat=True).first() or 0
    with _registry_lock:
        index = _indexes.get(key)
        if index is None or index.generation != generation:
            index = _indexes[key] = ScopeIndex(key, generation)
    with index.lock:
        index.top_up()
    return index


def drop_all() -> None:
    """Forget every in-process index (tests; a flushed database)."""
    with _registry_lock:
        _indexes.clear()
