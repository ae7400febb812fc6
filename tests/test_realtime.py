"""Live hints (mailgate/realtime.py): a commit's hints are numbered together and sent in order,
those of a rolled-back savepoint never, and a hint outside a transaction at once."""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from mailgate import realtime
from mailgate.realtime import channel_layer, next_seq, publish, user_group


def received(layer, channel) -> list[dict]:
    """Every event waiting on `channel` (the in-memory layer has them at once). Received on the
    loop that publishes, as the layer's queues belong to the first loop that waits on them."""
    async def drain():
        seen = []
        while True:
            try:
                seen.append(await asyncio.wait_for(layer.receive(channel), timeout=0.2))
            except TimeoutError:
                return seen

    return asyncio.run_coroutine_threadsafe(drain(), realtime._background_loop()).result(10)


@pytest.mark.django_db(transaction=True)  # real commits and a real savepoint rollback
def test_a_commits_hints_are_numbered_in_one_statement_and_sent_in_order_without_the_rolled_back(alice, bob):
    layer = channel_layer()
    channel, bobs = async_to_sync(layer.new_channel)(), async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(alice.pk), channel)
    async_to_sync(layer.group_add)(user_group(bob.pk), bobs)
    # The users' rows exist: one statement numbers a commit's hints, however many users.
    start, bobs_start = next_seq(alice.pk), next_seq(bob.pk)

    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            for n in range(5):
                publish([alice.pk, bob.pk] if n in (0, 3) else alice.pk, "message.new", {"n": n})
                if n == 2:
                    with pytest.raises(RuntimeError):
                        with transaction.atomic():
                            publish(alice.pk, "message.new", {"n": "rolled back"})
                            raise RuntimeError("the savepoint fails")
            assert received(layer, channel) == []  # nothing before the commit
    numbering = [q["sql"] for q in queries if "eventsequence" in q["sql"].lower()]
    assert len(numbering) == 1, numbering  # was one statement (its own write transaction) per hint

    seen = received(layer, channel)
    assert [event["data"]["n"] for event in seen] == [0, 1, 2, 3, 4]
    assert [event["seq"] for event in seen] == list(range(start + 1, start + 6))  # no gap: nothing re-fetches
    assert [(event["data"]["n"], event["seq"]) for event in received(layer, bobs)] == [
        (0, bobs_start + 1), (3, bobs_start + 2)]

    publish(alice.pk, "message.updated", {"n": "alone"})  # outside a transaction: at once
    [alone] = received(layer, channel)
    assert alone["data"] == {"n": "alone"} and alone["seq"] == start + 6

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            publish(alice.pk, "message.new", {"n": "never"})
            raise RuntimeError("the transaction fails")
    with transaction.atomic():
        publish([alice.pk], "message.updated", {"n": "after a rollback"})
    [after] = received(layer, channel)
    assert after["data"] == {"n": "after a rollback"} and after["seq"] == start + 7
