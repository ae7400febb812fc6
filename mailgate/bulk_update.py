"""Many conditional UPDATEs of one model as ONE executemany of a prepared statement.

    UPDATE <table> SET a = %s, b = %s WHERE <key> = %s AND c = %s

bulk_update's single CASE/WHEN statement cannot keep a condition per row (a claim), and over many
columns costs more to compile than the write itself (~1 ms a row, bench/sync.py). Used by sync's
phase 2 (pipeline/ingest.py), standardize's rows (pipeline/standardize.py) and the threads a batch
joins (pipeline/threads.py). In the ground layer so every layer can use it.
"""

from django.db import connections, router


def update_each(model, assign: list[str], where: list[str], rows) -> int:
    """For each row of values (those of `assign`, then those of `where`, by field name), SET the
    `assign` fields WHERE every `where` field equals its value; returns how many rows changed
    (sqlite3 and psycopg sum executemany's rowcount). Every value is adapted by its field
    (get_db_prep_save), as the ORM's UPDATE does: JSON, UUIDs and datetimes alike on each backend."""
    connection = connections[router.db_for_write(model)]
    meta, qn = model._meta, connection.ops.quote_name
    set_fields = [meta.get_field(name) for name in assign]
    where_fields = [meta.get_field(name) for name in where]
    sql = (f"UPDATE {qn(meta.db_table)} SET {', '.join(f'{qn(f.column)} = %s' for f in set_fields)} "
           f"WHERE {' AND '.join(f'{qn(f.column)} = %s' for f in where_fields)}")
    fields = set_fields + where_fields
    params = [[field.get_db_prep_save(value, connection) for field, value in zip(fields, row)] for row in rows]
    if not params:
        return 0
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
        return cursor.rowcount
