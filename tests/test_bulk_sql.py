"""mailgate/bulk_update.py and bulk_insert.py: many rows' conditional UPDATEs and INSERTs in one
statement's work, with each value typed as its column (runs on SQLite and, in CI's second pass,
PostgreSQL, where the rows go as one VALUES list instead of a statement each)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailgate import bulk_insert
from mailgate.bulk_insert import InsertIgnoringConflicts
from mailgate.bulk_update import update_each
from pipeline.models import Event, Message
from tests.builders import eml, ingest

pytestmark = pytest.mark.django_db


def statements(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]


def test_update_each_sets_only_the_rows_whose_conditions_hold_and_counts_them(alice):
    messages = [ingest(alice, eml(subject=f"Bulk {n}")) for n in range(5)]
    Message.objects.filter(pk=messages[4].pk).update(claimed_by="someone-else")
    when = timezone.now() - timedelta(days=3)
    rows = [[f"Subject {n}", [{"n": n, "tags": ["a", None]}], when if n % 2 else None, m.pk, m.claimed_by]
            for n, m in enumerate(messages)]
    with CaptureQueriesContext(connection) as queries:
        changed = update_each(Message, ["subject", "references", "date"], ["id", "claimed_by"], rows)
    assert changed == 4  # the fifth row's claim is another worker's
    assert len(statements(queries)) == 1
    for n, message in enumerate(messages[:4]):
        message.refresh_from_db()
        assert (message.subject, message.references) == (f"Subject {n}", [{"n": n, "tags": ["a", None]}])
        assert message.date == (when if n % 2 else None)
    assert Message.objects.get(pk=messages[4].pk).subject == messages[4].subject  # untouched


def test_update_each_of_a_column_that_is_null_in_every_row(alice):
    """A VALUES column of NULLs alone has no type of its own on PostgreSQL: it must still fit."""
    messages = [ingest(alice, eml(subject=f"Null {n}")) for n in range(3)]
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(date=timezone.now())
    assert update_each(Message, ["date"], ["id"], [[None, m.pk] for m in messages]) == 3
    assert not Message.objects.filter(pk__in=[m.pk for m in messages], date__isnull=False).exists()


def test_update_each_in_several_statements_when_the_rows_pass_the_parameter_bound(alice, monkeypatch):
    monkeypatch.setattr(bulk_insert, "MAX_PARAMETERS", 6)  # two rows of three values each (one bound for both)
    messages = [ingest(alice, eml(subject=f"Chunk {n}")) for n in range(5)]
    with CaptureQueriesContext(connection) as queries:
        changed = update_each(Message, ["subject", "size"], ["id"], [[f"C{n}", n, m.pk] for n, m in enumerate(messages)])
    assert changed == 5
    if connection.vendor == "postgresql":
        assert len(statements(queries)) == 3
    assert [m.subject for m in Message.objects.filter(pk__in=[m.pk for m in messages]).order_by("size")] == [
        "C0", "C1", "C2", "C3", "C4"]


def test_inserted_rows_keep_their_order_and_values_and_conflicts_are_dropped(alice, monkeypatch):
    message = ingest(alice, eml(subject="Audit"))
    before = Event.objects.count()
    monkeypatch.setattr(bulk_insert, "MAX_PARAMETERS", 20)  # a few rows a statement
    rows = [(Event.Kind.RETRY, alice.pk, message.pk, None, "w", f"detail {n}", "") for n in range(7)]
    with CaptureQueriesContext(connection) as queries:
        InsertIgnoringConflicts(Event, ["kind", "owner", "message", "delivery", "worker", "detail",
                                        "summary"], {}, ignore_conflicts=False).insert(rows)
    if connection.vendor == "postgresql":
        assert 1 < len(statements(queries)) < 7
    added = list(Event.objects.order_by("pk")[before:].values_list("detail", "kind", "message_id"))
    assert added == [(f"detail {n}", Event.Kind.RETRY, message.pk) for n in range(7)]


def test_update_then_insert_writes_the_row_only_when_the_update_matched(alice):
    from mailgate.bulk_update import update_then_insert
    from pipeline import audit

    message = ingest(alice, eml(subject="Finish"))
    before = Event.objects.count()

    def finish(claimed_by: str, detail: str) -> bool:
        return update_then_insert(Message, ["subject"], ["id", "claimed_by"], [detail, message.pk, claimed_by],
                                  audit.inserter(), (Event.Kind.SENT, alice.pk, message.pk, None, "w", detail, ""))

    assert not finish("another-worker", "lost")  # the claim is not ours: neither row is written
    with CaptureQueriesContext(connection) as queries:
        assert finish(message.claimed_by, "won")
    if connection.vendor == "postgresql":  # one statement: no BEGIN, no COMMIT, no second round trip
        assert len(queries.captured_queries) == 1, queries.captured_queries
    assert Message.objects.get(pk=message.pk).subject == "won"
    assert list(Event.objects.order_by("pk")[before:].values_list("detail", "kind")) == [("won", Event.Kind.SENT)]
