"""Many rows in one prepared INSERT (executemany), without bulk_create's per-row compile cost.

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
        self.sql = (f"{ops.insert_statement(on_conflict=on_conflict)} {qn(meta.db_table)} "
                    f"({', '.join(qn(f.column) for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
                    f"{ops.on_conflict_suffix_sql(fields, on_conflict, None, None)}").rstrip()

    def insert(self, rows) -> None:
        """rows: one sequence of python values per row, in the order of `varying`."""
        connection, varying, per_row, base = self.connection, self.varying, self.per_row, self.base
        params = []
        for row in rows:
            values = base.copy()
            for (slot, prep), value in zip(varying, row):
                values[slot] = prep(value, connection)
            for slot, f in per_row:
                values[slot] = f.get_db_prep_save(f.get_default(), connection)
            params.append(values)
        if params:
            with connection.cursor() as cursor:
                cursor.executemany(self.sql, params)

