"""Semantic search and related messages (pipeline/semantic/, frontend/semantic_search.py): the real
WordLlama model, the real pipeline (ingest → standardize → embed), real SQLite / PostgreSQL."""

import socket
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from django_q.conf import Conf

from pipeline import tasks
from pipeline.models import Message
from pipeline.queue import Lane
from pipeline.semantic import chunking, index, model
from pipeline.semantic.models import MessageVector, PendingEmbedding
from tests.builders import account_row, eml, ingest, stored_message

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def embedding_model():
    """The model, loaded once for the session (0.3 s; every test below shares it)."""
    return model.get()


@pytest.fixture(autouse=True)
def fresh_indexes(embedding_model):
    # Rolled-back tests reuse row ids: an index left from another test would believe it is current.
    index.drop_all()
    yield
    index.drop_all()


def received(owner, subject, body, sender="Dora <dora@example.test>", **headers):
    """A message through the real pipeline up to its vectors: ingest, standardize, embed."""
    message = ingest(owner, eml(subject=subject, body=body, sender=sender, **headers))
    assert tasks.standardize(str(message.pk)) in ("standardized", "history")
    tasks.embed(str(message.pk))
    message.refresh_from_db()
    return message


def search(client, query, mode):
    response = client.get(reverse("frontend:api_messages"), {"q": query, "mode": mode})
    assert response.status_code == 200, response.content
    return [row["subject"] for row in response.json()["results"]]


MAILBOX = [
    ("Your March statement from Hostwind Cloud", "Hello, the amount of $42.10 for your virtual private "
     "servers and block storage was charged to your card. Thank you for hosting with us."),
    ("Flight confirmation LH 1234 Munich to Lisbon", "Your booking is confirmed. Departure 07:35, seat 14C, "
     "one checked bag. Boarding closes 20 minutes before departure."),
    ("Quarterly budget review", "Team, please send your department spending forecasts before Friday so "
     "finance can consolidate the numbers."),
    ("Reset your password", "Someone asked to change the password of your account. Follow the link within "
     "one hour or ignore this mail."),
    ("Lunch on Thursday?", "Shall we try the new ramen place near the office? 12:30 works for me."),
]


@pytest.fixture
def mailbox(alice):
    return [received(alice, subject, body) for subject, body in MAILBOX]


# -- the model, offline ---------------------------------------------------------------------------

def test_the_model_loads_from_the_package_with_networking_blocked(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    loaded = model.load(tmp_path)
    assert (tmp_path / "tokenizers" / "l2_supercat_tokenizer_config.json").stat().st_size > 1_000_000
    vectors = loaded.embed(["an invoice from the hosting company", "a bill from my server provider",
                            "lunch at the ramen place"], norm=True)
    assert vectors.shape == (3, 256)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_workers_preparing_the_model_at_once_do_not_take_each_others_file(tmp_path, monkeypatch):
    # A new install's workers all load the model at once: another one copies and renames while
    # this one is between its copy and its rename.
    import shutil

    copy, others = shutil.copyfile, []

    def copy_while_another_worker_does(source, destination):
        copy(source, destination)
        if not others:
            others.append(destination)
            model.prepare_cache(tmp_path)

    monkeypatch.setattr(shutil, "copyfile", copy_while_another_worker_does)
    model.prepare_cache(tmp_path)
    tokenizers = tmp_path / "tokenizers"
    assert [p.name for p in tokenizers.iterdir()] == ["l2_supercat_tokenizer_config.json"]  # no partial left
    assert (tokenizers / "l2_supercat_tokenizer_config.json").stat().st_size == model._packaged_tokenizer().stat().st_size


def test_without_the_tokenizer_file_loading_fails_instead_of_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(model, "prepare_cache", lambda target=None: target)  # nothing copied
    with pytest.raises(model.ModelUnavailable, match="downloads are disabled"):
        model.load(tmp_path)


def test_own_pooling_matches_wordllamas_embeddings(embedding_model):
    texts = ["short", "a somewhat longer text about invoices and servers " * 5, ""]
    ours = model.embed_texts(texts)
    theirs = embedding_model.model.embed(texts[:2], norm=True)
    assert abs(ours[:2] - theirs).max() < 1e-5
    assert not ours[2].any()  # an empty text is a zero vector, not NaN


# -- what is embedded -----------------------------------------------------------------------------

def test_quoted_replies_and_signatures_are_not_embedded():
    body = ("Yes, Thursday works.\n\nBest,\n-- \nDora Diaz\nHead of Ops\n\n"
            "On Mon, 3 Mar 2025 at 10:00, Bob <bob@example.test> wrote:\n> Can we meet about the invoice?\n")
    assert chunking.own_text(body) == "Yes, Thursday works.\n\nBest,"
    outlook = "See attached.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nSubject: invoice\n"
    assert chunking.own_text(outlook) == "See attached."
    assert chunking.own_text("> only a quote\n> nothing else") == "only a quote\nnothing else"


def test_a_long_message_is_split_into_chunks_with_the_subject_first():
    pieces = chunking.chunks("Big report", "word " * 450)
    assert [len(piece.split()) for piece in pieces] == [202, 200, 50]
    assert pieces[0].startswith("Big report\n")
    assert chunking.chunks("", "") == []
    assert len(chunking.chunks("x", "word " * 100_000)) == chunking.MAX_CHUNKS


# -- the pipeline step ----------------------------------------------------------------------------

def test_standardize_queues_the_embed_step_and_it_writes_vectors_with_metadata(alice):
    message = ingest(alice, eml(subject="Server invoice", body="Amount due: 42 EUR\n"))
    tasks.standardize(str(message.pk))
    assert PendingEmbedding.objects.filter(message=message).exists()
    assert tasks.embed(str(message.pk)) == "embedded 1"
    vector = MessageVector.objects.get(message=message)
    assert (vector.owner_id, vector.account_id, vector.position, len(bytes(vector.vector))) == (alice.pk, None, 0, 256)
    assert not PendingEmbedding.objects.exists()
    assert tasks.embed(str(message.pk)) == "skipped"  # idempotent: the task again changes nothing
    assert MessageVector.objects.count() == 1


def test_one_embed_task_takes_the_whole_pending_batch(alice, monkeypatch):
    monkeypatch.setattr(Conf, "CLUSTER_NAME", Lane.BULK.cluster)  # imports are the bulk lane's work
    messages = [ingest(alice, eml(subject=f"Note {n}", body=f"Text number {n}\n")) for n in range(3)]
    for message in messages:
        tasks.standardize(str(message.pk))
    assert tasks.embed(str(messages[1].pk)) == "embedded 3"
    assert [tasks.embed(str(m.pk)) for m in (messages[0], messages[2])] == ["skipped", "skipped"]
    assert MessageVector.objects.filter(message__in=messages).count() == 3


def test_a_live_embed_task_leaves_a_backfills_history_to_the_bulk_lane(alice, monkeypatch):
    # A live task that took 511 history messages along held a live worker for half a second per
    # pushed message while a first sync ran (issue #19).
    history = [ingest(alice, eml(subject=f"Old {n}", body=f"Archived {n}\n")) for n in range(3)]
    live = ingest(alice, eml(subject="Just arrived", body="New text\n"))
    for message in [*history, live]:
        tasks.standardize(str(message.pk))
    # As a first sync stores them: the backlog is history, the pushed message new (both IMAP).
    account = account_row(alice)
    Message.objects.filter(pk__in=[m.pk for m in history]).update(
        arrival=Message.Arrival.HISTORY, source=Message.Source.IMAP, account=account)
    Message.objects.filter(pk=live.pk).update(source=Message.Source.IMAP, account=account)
    assert tasks.embed(str(live.pk)) == "embedded 1"
    assert set(PendingEmbedding.objects.values_list("message_id", flat=True)) == {m.pk for m in history}
    monkeypatch.setattr(Conf, "CLUSTER_NAME", Lane.BULK.cluster)
    assert tasks.embed(str(history[0].pk)) == "embedded 3"
    assert not PendingEmbedding.objects.exists()


def test_reindex_vectors_embeds_existing_mail_of_one_account(alice):
    work, home = account_row(alice), account_row(alice, name="Home")
    mine = stored_message(alice, work, subject="Hosting invoice", text="Amount due")
    other = stored_message(alice, home, subject="Holiday photos", text="From the beach")
    out = StringIO()
    call_command("reindex_vectors", "--account", str(work.pk), stdout=out)
    assert "embedded 1 messages" in out.getvalue()
    assert MessageVector.objects.filter(message=mine).exists()
    assert not MessageVector.objects.filter(message=other).exists()
    call_command("reindex_vectors", stdout=StringIO())
    assert MessageVector.objects.filter(message=other).count() == 1
    assert MessageVector.objects.filter(message=mine).count() == 1  # replaced, not doubled


def test_reindex_vectors_names_an_unknown_account(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no account with id 999"):
        call_command("reindex_vectors", "--account", "999", stdout=StringIO())


# -- searching ------------------------------------------------------------------------------------

def test_a_question_without_any_of_the_words_is_answered_by_meaning(client, alice, mailbox):
    client.force_login(alice)
    assert search(client, "bill from my web hosting provider", "text") == []
    assert search(client, "bill from my web hosting provider", "semantic")[0] == MAILBOX[0][0]
    assert search(client, "bill from my web hosting provider", "hybrid")[0] == MAILBOX[0][0]
    assert search(client, "plane ticket", "hybrid")[0] == MAILBOX[1][0]


def test_exact_words_come_first_in_hybrid(client, alice, mailbox):
    client.force_login(alice)
    assert search(client, "ramen", "text") == ["Lunch on Thursday?"]
    assert search(client, "ramen", "hybrid")[0] == "Lunch on Thursday?"
    assert search(client, "department forecasts", "hybrid")[0] == "Quarterly budget review"


def test_an_unknown_mode_is_a_clear_400(client, alice):
    client.force_login(alice)
    response = client.get(reverse("frontend:api_messages"), {"q": "x", "mode": "vibes"})
    assert response.status_code == 400
    assert response.json() == {"error": "mode must be one of: hybrid, text, semantic"}


def test_ranked_results_page_through_one_ranking_without_repeats(client, alice, mailbox):
    client.force_login(alice)
    whole = search(client, "password lunch budget booking", "hybrid")
    seen, cursor = [], None
    while True:
        params = {"q": "password lunch budget booking", "mode": "hybrid", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get(reverse("frontend:api_messages"), params).json()
        assert len(page["results"]) <= 2
        seen += [row["subject"] for row in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole and len(whole) >= 3
    for bad in ("x", "WyJyYW5rIiwgNSwgM10", "WyJyYW5rIiwgLTEsIDEwMF0"):  # junk; 5 beyond depth 3; -1
        response = client.get(reverse("frontend:api_messages"), {"q": "x", "mode": "hybrid", "cursor": bad})
        assert response.status_code == 400 and response.json() == {"error": "invalid cursor"}


def test_the_result_count_counts_what_the_ranked_search_lists(client, alice, mailbox):
    # The search box's heading ("N results") asks /api/messages/counts/ with the list's own
    # parameters; in hybrid mode it counted the full-text matches instead (0 while 2 were listed).
    client.force_login(alice)
    for query, mode in [("bill from my web hosting provider", "hybrid"), ("ramen", "hybrid"),
                        ("plane ticket", "semantic"), ("ramen", "text")]:
        listed = search(client, query, mode)
        counts = client.get(reverse("frontend:api_message_counts"), {"q": query, "mode": mode}).json()
        assert counts["total"] == len(listed), (query, mode)


def test_hybrid_search_keeps_the_requests_filters(client, alice):
    work, home = account_row(alice), account_row(alice, name="Home")
    stored_message(alice, work, subject="Hosting invoice March", text="Amount due for servers")
    stored_message(alice, home, subject="Hosting invoice April", text="Amount due for servers")
    call_command("reindex_vectors", stdout=StringIO())
    client.force_login(alice)
    response = client.get(reverse("frontend:api_messages"), {"q": "server bill", "mode": "hybrid",
                                                            "account": work.pk})
    assert [row["subject"] for row in response.json()["results"]] == ["Hosting invoice March"]


def test_no_user_finds_or_is_suggested_another_users_mail(client, alice, bob):
    alices = received(alice, "Hosting invoice for March", "Amount due for your cloud servers: 42 EUR")
    bobs = received(bob, "Hosting invoice for March", "Amount due for your cloud servers: 42 EUR")
    bob_account = account_row(bob)
    stored_message(bob, bob_account, subject="Server bill", text="Amount due for your cloud servers")
    call_command("reindex_vectors", stdout=StringIO())
    for user, mine, theirs in ((alice, alices, bobs), (bob, bobs, alices)):
        client.force_login(user)
        for mode in ("semantic", "hybrid", "text"):
            ids = [r["id"] for r in client.get(reverse("frontend:api_messages"),
                                               {"q": "hosting invoice cloud servers", "mode": mode}).json()["results"]]
            assert str(theirs.pk) not in ids and str(mine.pk) in ids, (user, mode)
        related = client.get(reverse("frontend:api_message_related", args=[mine.pk])).json()["results"]
        owners = set(Message.objects.filter(pk__in=[r["id"] for r in related]).values_list("owner_id", flat=True))
        assert owners <= {user.pk}
        # Another user's message is not even a starting point.
        assert client.get(reverse("frontend:api_message_related", args=[theirs.pk])).status_code == 404


def test_a_member_of_an_account_finds_its_mail_and_loses_it_when_removed(client, alice, bob):
    shared = account_row(alice, members=[bob])
    message = stored_message(alice, shared, subject="Hosting invoice", text="Amount due for your cloud servers")
    call_command("reindex_vectors", stdout=StringIO())
    client.force_login(bob)
    assert search(client, "server bill", "semantic") == ["Hosting invoice"]
    shared.members.remove(bob)
    assert search(client, "server bill", "semantic") == []
    assert MessageVector.objects.filter(message=message).exists()


def test_a_deleted_message_takes_its_vectors_and_leaves_the_index(client, alice, mailbox):
    client.force_login(alice)
    assert search(client, "bill from my web hosting provider", "semantic")[0] == MAILBOX[0][0]
    gone = mailbox[0].pk
    mailbox[0].delete()
    assert not MessageVector.objects.filter(message_id=gone).exists()
    assert MAILBOX[0][0] not in search(client, "bill from my web hosting provider", "semantic")
    scope = index.scope(f"u{alice.pk}")
    assert not scope.alive[scope.messages == np.void(gone.bytes)].any()


def test_new_mail_is_found_by_meaning_without_a_restart(client, alice, mailbox):
    client.force_login(alice)
    assert "Dinner reservation confirmed" not in search(client, "table at a restaurant", "semantic")
    received(alice, "Dinner reservation confirmed", "Your table for four at Trattoria Roma, Saturday 8 pm.")
    assert search(client, "table at a restaurant", "semantic")[0] == "Dinner reservation confirmed"


# -- related messages -----------------------------------------------------------------------------

def test_related_messages_come_from_other_threads_with_a_reason(client, alice):
    first = received(alice, "Hosting invoice March", "Amount due for your cloud servers: 42 EUR",
                     sender="Billing <billing@hostwind.test>", message_id="<inv-3@hostwind.test>")
    reply = received(alice, "Re: Hosting invoice March", "Paid, thanks.\n\nOn Mon, Dora wrote:\n> Amount due",
                     sender="Alice <alice@example.test>", in_reply_to="<inv-3@hostwind.test>")
    april = received(alice, "Hosting invoice April", "Amount due for your cloud servers: 44 EUR",
                     sender="Billing <billing@hostwind.test>")
    received(alice, "Your server bill", "The amount for your cloud servers is due: 40 EUR",
             sender="Accounts <accounts@otherhost.test>")
    received(alice, "Lunch on Thursday?", "Shall we try the new ramen place?", sender="Erin <erin@example.test>")
    assert reply.thread_id == first.thread_id
    client.force_login(alice)
    related = client.get(reverse("frontend:api_message_related", args=[first.pk])).json()["results"]
    subjects = [row["subject"] for row in related]
    assert subjects[:2] == ["Hosting invoice April", "Your server bill"]
    assert "Re: Hosting invoice March" not in subjects and "Hosting invoice March" not in subjects
    reasons = {row["subject"]: row["reason"] for row in related}
    assert reasons["Hosting invoice April"] == "Same sender: Billing"
    assert reasons["Your server bill"] == "Similar content"
    assert str(april.pk) == related[0]["id"]
    assert "Lunch on Thursday?" not in subjects  # nothing in common: no suggestion at all


def test_the_message_page_has_a_related_block(client, alice):
    message = received(alice, "Hosting invoice", "Amount due")
    client.force_login(alice)
    page = client.get(reverse("frontend:message", args=[message.pk])).content.decode()
    assert 'id="related"' in page and "related.js" in page


def test_retention_removes_the_vectors_with_the_message_and_search_forgets_it(client, alice):
    from datetime import timedelta

    from pipeline import clock
    from pipeline.retention import purge

    old = received(alice, "Hosting invoice", "Amount due for your cloud servers: 42 EUR")
    tasks.distribute(str(old.pk))
    client.force_login(alice)
    assert search(client, "server bill", "semantic") == ["Hosting invoice"]
    Message.objects.filter(pk=old.pk).update(received_at=clock.now() - timedelta(days=31))
    assert purge()["messages"] == 1
    assert not MessageVector.objects.filter(message_id=old.pk).exists()
    assert search(client, "server bill", "semantic") == []
    assert search(client, "server bill", "hybrid") == []


def test_a_scope_above_the_exact_limit_is_searched_through_the_hnsw_graph(client, alice, mailbox, settings):
    settings.MAILGATE_SEMANTIC_EXACT_LIMIT = 3
    index.drop_all()
    client.force_login(alice)
    assert search(client, "bill from my web hosting provider", "semantic")[0] == MAILBOX[0][0]
    assert index.scope(f"u{alice.pk}").graph is not None
    received(alice, "Dinner reservation confirmed", "Your table for four at Trattoria Roma, Saturday 8 pm.")
    assert search(client, "table at a restaurant", "semantic")[0] == "Dinner reservation confirmed"
