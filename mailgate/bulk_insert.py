"""Many rows in one prepared INSERT (executemany; on PostgreSQL one multi-row INSERT), without
bulk_create's per-row compile cost.

Used for the Messages and MessageLocations of each phase-1 batch of sync (imap/sync.py, ON CONFLICT
DO NOTHING) and for the pipeline's audit rows (pipeline/audit.py record_all, a plain INSERT: sync's
FETCHED and RECEIVED rows through bulk_create had made bench/sync.py a third slower); see
InsertIgnoringConflicts. In the ground layer so both can use it.
"""

from __future__ import annotations

from django.db import connections, router
from django.db.models.constants import OnConflict


# Defaults that are the same value every time they are called: computed once per batch. Any other
# callable default (uuid4, now) is called per row, as Model.__init__ would.
_CONSTANT_FACTORIES = (list, dict, tuple, set, frozenset, str, int, float, bool)


class InsertIgnoringConflicts:
    """INSERT OR IGNORE / INSERT ... ON CONFLICT DO NOTHING of many rows of `model` as ONE
    executemany of a prepared statement - what bulk_create(ignore_conflicts=True) does, minus
    its cost (bench/sync.py: building model instances, preparing ~36 values per row in the compiler,
    and on SQLite 27-row statements at the 999-parameter limit made phase 1's two bulk_creates
    ~40 % of a sync).

    The column list follows the model: `varying` fields get a value per row, `constant` ones (by
    attname) one value for all rows, every other concrete field its default as the ORM computes
    it (pre_save: auto_now/auto_now_add; non-constant callable defaults per row); auto-increment
    keys, generated columns and db_default fields are left to the database. Every value goes
    through the field's get_db_prep_save, so UUIDs, JSON and datetimes are encoded for each backend
    exactly as bulk_create encodes them. Conflicts with a unique constraint drop the row, which is
    how concurrent syncs of the same message meet (the caller re-reads what won)."""

    def __init__(self, model, varying: list[str], constant: dict, ignore_conflicts: bool = True):
        self.connection = connection = connections[router.db_for_write(model)]
        meta = model._meta
        template = model(**constant)
        fields, base, self.varying, self.per_row = [], [], [], []
        varying_fields = {name: meta.get_field(name) for name in varying}
        slot_of = {}
        for f in meta.concrete_fields:
            if f.generated or (f.primary_key and f.db_returning):
                continue  # the database assigns it
            slot = len(fields)
            if f.name in varying_fields:
                slot_of[f.name] = slot
                base.append(None)
            elif f.attname in constant:
                base.append(f.get_db_prep_save(f.pre_save(template, True), connection))
            elif f.has_db_default():
                continue
            elif f.has_default() and callable(f.default) and f.default not in _CONSTANT_FACTORIES:
                self.per_row.append((slot, f))
                base.append(None)
            else:
                base.append(f.get_db_prep_save(f.pre_save(template, True), connection))
            fields.append(f)
        self.varying = [(slot_of[name], varying_fields[name].get_db_prep_save) for name in varying]
        self.base = base
        ops, qn = connection.ops, connection.ops.quote_name
        on_conflict = OnConflict.IGNORE if ignore_conflicts else None
        self.head = (f"{ops.insert_statement(on_conflict=on_conflict)} {qn(meta.db_table)} "
                     f"({', '.join(qn(f.column) for f in fields)}) VALUES ")
        self.row = f"({', '.join(['%s'] * len(fields))})"
        self.tail = f" {ops.on_conflict_suffix_sql(fields, on_conflict, None, None)}".rstrip()
        self.sql = self.head + self.row + self.tail
        self.fields = fields

    def values(self, row) -> list:
        """One row's values for the statement: `row` in the order of `varying`, the rest filled."""
        connection = self.connection
        values = self.base.copy()
        for (slot, prep), value in zip(self.varying, row):
            values[slot] = prep(value, connection)
        for slot, f in self.per_row:
            values[slot] = f.get_db_prep_save(f.get_default(), connection)
        return values

    def select_sql(self, source: str) -> str:
        """INSERT of one row per row of `source` (a CTE's name), the values as parameters cast to
        their columns' types; for a data-modifying WITH (PostgreSQL)."""
        qn = self.connection.ops.quote_name
        casts = ", ".join(f"%s::{f.db_type(self.connection)}" for f in self.fields)
        return (f"INSERT INTO {qn(self.fields[0].model._meta.db_table)} "
                f"({', '.join(qn(f.column) for f in self.fields)}) SELECT {casts} FROM {source}")

    def insert(self, rows) -> None:
        """rows: one sequence of python values per row, in the order of `varying`."""
        connection = self.connection
        params = [self.values(row) for row in rows]
        if not params:
            return
        with connection.cursor() as cursor:
            if connection.vendor != "postgresql":
                cursor.executemany(self.sql, params)  # SQLite steps one prepared statement per row
                return
            # PostgreSQL: one multi-row INSERT. psycopg's executemany sends a statement per row
            # (parsed and planned by the server, its values quoted by the client, one by one): an
            # audit row per message and stage was a third of the server's statements in a
            # bench/pipeline.py backlog. In an INSERT's VALUES each value takes its column's type.
            execute_rows(cursor, self.head, self.row, self.tail, params)


# PostgreSQL's bind limit is 65,535 parameters a statement; psycopg's client-side binding has
# none, but a bounded statement keeps one batch's memory bounded too.
MAX_PARAMETERS = 30_000


def execute_rows(cursor, head: str, row: str, tail: str, params: list[list]) -> int:
    """Run `head` + one `row` placeholder group per row of `params` + `tail`, as few statements as
    MAX_PARAMETERS allows (PostgreSQL's multi-row INSERT and UPDATE ... FROM (VALUES ...));
    returns the rows they changed."""
    size = max(1, MAX_PARAMETERS // len(params[0]))
    changed = 0
    for i in range(0, len(params), size):
        rows = params[i:i + size]
        cursor.execute(head + ", ".join([row] * len(rows)) + tail, [value for values in rows for value in values])
        changed += cursor.rowcount
    return changed

