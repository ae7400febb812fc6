"""Words for people (frontend/wording.py) and the reader's server side (frontend/reader.py): no
field names, raw flags, enum keys or ids on the pages; the reader's back link cannot leave the
site; newer/older follow the list's filters; previews, source and .eml keep the download headers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from frontend import reader, wording
from imap.models import Account, IdleSession
from pipeline import audit
from pipeline.models import Delivery, Event, Message
from tests.builders import PNG, account_row, eml, failed_delivery, ingest, make_attachment, stored_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_flags_are_words_and_a_missing_seen_flag_reads_unread():
    assert wording.flags(["\\Flagged", "\\Seen"]) == ["Starred", "Read"]
    assert wording.flags(["$Forwarded"]) == ["Unread", "Forwarded"]
    assert wording.flags(["project-x"]) == ["Unread", "project-x"]


def test_a_routed_message_with_no_delivery_does_not_say_queued(alice):
    account = account_row(alice)
    alone = stored_message(alice, account, status="distributed")
    assert wording.message_status(alone) == "Not relayed: no route matched"
    relayed = stored_message(alice, account, status="distributed")
    failed_delivery(alice, relayed)
    assert wording.message_status(relayed) == "Routed: 1 delivery"


def test_delivery_labels_name_no_fields():
    for status, label in Delivery.Status.choices:
        assert "not_before" not in label and "_" not in label
        assert "not_before" not in wording.delivery_status(status)
    assert wording.delivery_status("retrying") == "Will retry"


def test_the_timeline_names_the_delivery_by_its_service_never_its_id(alice, alice_client):
    message = stored_message(alice, account_row(alice), status="distributed")
    delivery = failed_delivery(alice, message, status="retrying")
    audit.record(Event.Kind.RETRY, message, delivery, detail="421 try later")
    rows = alice_client.get(reverse("frontend:api_message_events", args=[message.pk])).json()["results"]
    assert rows[-1]["delivery_label"] == "Ops email → ops@example.test"
    page = alice_client.get(reverse("frontend:message", args=[message.pk])).content.decode()
    assert str(delivery.pk) not in page
    assert "not_before" not in page and "\\Seen" not in page
    assert 'Will retry at <time datetime="' in page  # the next try, in the reader's time (message.js)


def test_a_connected_account_whose_push_is_reconnecting_says_reconnecting(alice, alice_client):
    account = account_row(alice)
    Account.objects.filter(pk=account.pk).update(state=Account.State.OK)
    IdleSession.objects.create(account=account, connected=False, last_error="connection refused",
                               lease_owner="host:1:abc", lease_expires_at=timezone.now() + timedelta(minutes=1))
    [row] = alice_client.get(reverse("frontend:api_accounts")).json()["results"]
    assert row["health"] == {"key": "push_down", "label": "Reconnecting", "detail": "connection refused"}
    IdleSession.objects.filter(account=account).update(connected=True, last_error="")
    [row] = alice_client.get(reverse("frontend:api_accounts")).json()["results"]
    assert row["health"]["key"] == "ok" and row["health"]["label"].startswith("Connected")


def test_a_retrying_delivery_can_be_sent_now(alice, alice_client):
    message = stored_message(alice, account_row(alice), status="distributed")
    delivery = failed_delivery(alice, message, status="retrying")
    Delivery.objects.filter(pk=delivery.pk).update(not_before=timezone.now() + timedelta(hours=1))
    [row] = alice_client.get(reverse("frontend:api_deliveries"), {"status": "retrying"}).json()["results"]
    assert row["retryable"] and row["status_label"] == "Will retry" and row["not_before"]
    response = alice_client.post(reverse("frontend:api_delivery_retry", args=[delivery.pk]))
    assert response.status_code == 200, response.content
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RETRYING and delivery.not_before <= timezone.now()
    assert delivery.attempts == 3  # sent sooner, not started over
    assert Event.objects.filter(delivery=delivery, kind=Event.Kind.REQUEUED).count() == 1


def test_stats_carry_words_for_every_status(alice_client):
    stats = alice_client.get(reverse("frontend:api_stats")).json()
    assert set(stats["labels"]["messages"]) == set(Message.Status.values)
    assert set(stats["labels"]["deliveries"]) == set(Delivery.Status.values)


@pytest.mark.parametrize("url, expected", [
    ("/?q=budget&folder=3", "/?q=budget&folder=3"), ("/inbox/", "/inbox/"), ("https://evil.test/", "/"),
    ("//evil.test/?q=1", "/"), ("/admin/", "/"), ("/\\evil.test", "/"), ("", "/"), (None, "/"),
])
def test_the_way_back_is_always_our_own_list(url, expected):
    assert reader.safe_back(url) == expected


def test_newer_and_older_follow_the_lists_filters(alice):
    account = account_row(alice)
    first, _, second, third = [stored_message(alice, account, subject=s) for s in ["Budget a", "Lunch", "Budget b",
                                                                                   "Budget c"]]
    ids = lambda *ms: tuple(str(m.pk) if m else None for m in ms)  # noqa: E731
    assert reader.neighbours(alice, second, "/?q=budget") == ids(third, first)
    assert reader.neighbours(alice, first, "/?q=budget") == ids(second, None)
    assert reader.neighbours(alice, second, "/?unread=maybe") == (None, None)  # a bad filter: no neighbours


def test_the_source_and_eml_are_the_raw_bytes_with_the_download_headers(alice, alice_client, bob, client):
    from pipeline.standardize import standardize

    message = ingest(alice, eml(subject="Numbers / Q3"))
    standardize(message.pk)
    message.refresh_from_db()
    raw = alice_client.get(reverse("frontend:message_raw", args=[message.pk]))
    assert raw["Content-Type"] == "text/plain; charset=utf-8"
    assert raw["Content-Security-Policy"] == "default-src 'none'; sandbox" and raw["X-Content-Type-Options"] == "nosniff"
    assert b"Subject: Numbers / Q3" in raw.content
    download = alice_client.get(reverse("frontend:message_eml", args=[message.pk]))
    assert download["Content-Disposition"].startswith("attachment") and 'Numbers _ Q3.eml' in download["Content-Disposition"]
    assert download["Content-Type"] == "application/octet-stream"
    assert b"".join(download.streaming_content) == message.raw.open("rb").read()
    client.force_login(bob)
    assert client.get(reverse("frontend:message_eml", args=[message.pk])).status_code == 404


def test_previews_are_raster_images_only_with_the_download_headers(alice, alice_client):
    message = stored_message(alice, account_row(alice))
    png = make_attachment(message, filename="a.png", content_type="image/png", content=PNG)
    svg = make_attachment(message, filename="a.svg", content_type="image/svg+xml", content=b"<svg onload=alert(1)>")
    html = make_attachment(message, filename="a.html")
    response = alice_client.get(reverse("frontend:attachment_preview", args=[png.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    for other in (svg, html):
        assert alice_client.get(reverse("frontend:attachment_preview", args=[other.pk])).status_code == 404


def test_parse_warnings_read_as_sentences():
    assert wording.parse_warning("date header unparseable: 'soon'") == \
        "The Date header could not be read ('soon'); the time it arrived is shown instead."
    assert wording.parse_warning("no text body: the message is empty") == "This message has no text (the message is empty)."
    assert wording.parse_warning("something odd") == "Something odd"


def test_a_message_no_route_matched_says_so_on_its_page(alice, alice_client):
    from tests.builders import run_stages

    message = ingest(alice, eml(subject="Nobody wants this"))
    run_stages(message)
    message.refresh_from_db()
    assert message.status == Message.Status.DISTRIBUTED
    page = alice_client.get(reverse("frontend:message", args=[message.pk])).content.decode()
    assert "Not relayed: no route matched" in page
    assert "no route matched: nothing to relay" in page
    assert "0 deliveries" not in page and "Routed and queued" not in page


def test_a_long_conversation_carries_only_its_newest_messages_and_always_the_open_one(alice, alice_client):
    from pipeline.models import Thread

    thread = Thread.objects.create(owner=alice, subject="Long")
    account = account_row(alice)
    messages = [stored_message(alice, account, subject=f"Long {n}", thread=thread) for n in range(reader.CONVERSATION_SHOWN + 5)]
    items, total = reader.conversation(alice, messages[0])
    assert total == len(messages) and len(items) == reader.CONVERSATION_SHOWN
    assert items[0]["id"] == str(messages[0].pk) and items[-1]["id"] == str(messages[-1].pk)
    page = alice_client.get(reverse("frontend:message", args=[messages[-1].pk])).content.decode()
    assert f"(the newest {reader.CONVERSATION_SHOWN} of {len(messages)})" in page
