"""Many conditional UPDATEs of one model as one statement's work.

    UPDATE <table> SET a = %s, b = %s WHERE <key> = %s AND c = %s

On SQLite ONE executemany of that prepared statement; on PostgreSQL one UPDATE ... FROM (VALUES
...) for all the rows (psycopg's executemany would send a statement per row).

bulk_update's single CASE/WHEN statement cannot keep a condition per row (a claim), and over many
columns costs more to compile than the write itself (~1 ms a row, bench/sync.py). Used by sync's
phase 2 (pipeline/ingest.py), standardize's rows (pipeline/standardize.py) and the threads a batch
joins (pipeline/threads.py). In the ground layer so every layer can use it.
"""

from django.db import connections, router, transaction

from mailgate.bulk_insert import execute_rows


def update_each(model, assign: list[str], where: list[str], rows) -> int:
    """For each row of values (those of `assign`, then those of `where`, by field name), SET the
    `assign` fields WHERE every `where` field equals its value; returns how many rows changed
    (sqlite3 and psycopg sum executemany's rowcount). Every value is adapted by its field
    (get_db_prep_save), as the ORM's UPDATE does: JSON, UUIDs and datetimes alike on each backend."""
    connection = connections[router.db_for_write(model)]
    meta, qn = model._meta, connection.ops.quote_name
    set_fields = [meta.get_field(name) for name in assign]
    where_fields = [meta.get_field(name) for name in where]
    sql = _statement(connection, meta, set_fields, where_fields)
    fields = set_fields + where_fields
    params = [[field.get_db_prep_save(value, connection) for field, value in zip(fields, row)] for row in rows]
    if not params:
        return 0
    with connection.cursor() as cursor:
        if len(params) == 1:
            cursor.execute(sql, params[0])
            return cursor.rowcount
        if connection.vendor != "postgresql":
            cursor.executemany(sql, params)
            return cursor.rowcount
        # PostgreSQL: ONE statement joining the rows as a VALUES list. psycopg's executemany sends
        # (and the server parses and plans) a statement per row. The keys are the rows' own, so
        # each target row matches at most one VALUES row and the count is that of executemany.
        # VALUES columns take their type from their values (a column of NULLs would be text), so
        # each is cast to its field's column type where it is used.
        table = qn(meta.db_table)
        names = [f"v{i}" for i in range(len(fields))]
        typed = [f"v.{name}::{field.db_type(connection)}" for name, field in zip(names, fields)]
        head = (f"UPDATE {table} SET "
                + ", ".join(f"{qn(f.column)} = {value}" for f, value in zip(set_fields, typed))
                + " FROM (VALUES ")
        tail = (f") AS v ({', '.join(names)}) WHERE "
                + " AND ".join(f"{table}.{qn(f.column)} = {value}"
                               for f, value in zip(where_fields, typed[len(set_fields):])))
        return execute_rows(cursor, head, f"({', '.join(['%s'] * len(fields))})", tail, params)


def _statement(connection, meta, set_fields, where_fields) -> str:
    qn = connection.ops.quote_name
    return (f"UPDATE {qn(meta.db_table)} SET {', '.join(f'{qn(f.column)} = %s' for f in set_fields)} "
            f"WHERE {' AND '.join(f'{qn(f.column)} = %s' for f in where_fields)}")


def update_then_insert(model, assign: list[str], where: list[str], row, insert, values) -> bool:
    """update_each of one row and, only if the row matched, `insert` (an InsertIgnoringConflicts)
    of one row of `values` (its `varying` order), atomically; True if it matched.

    On PostgreSQL ONE statement that commits on its own outside a transaction (a data-modifying
    WITH): no BEGIN and COMMIT around two statements. A sent delivery's finish and its SENT row
    were four round trips a delivery and most of a backlog's COMMITs (bench/pipeline.py).
    Elsewhere the two statements in one transaction."""
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        with transaction.atomic(using=connection.alias):
            done = update_each(model, assign, where, [row])
            if done:
                insert.insert([values])
        return bool(done)
    meta = model._meta
    fields = [meta.get_field(name) for name in assign + where]
    sql = (f"WITH changed AS ({_statement(connection, meta, fields[:len(assign)], fields[len(assign):])} "
           f"RETURNING 1) {insert.select_sql('changed')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [f.get_db_prep_save(v, connection) for f, v in zip(fields, row)] + insert.values(values))
        return cursor.rowcount > 0
