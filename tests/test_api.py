"""The JSON API: listing with keyset pagination and filters, search, detail, thread, downloads,
the message body frame and its CSP, stats and delivery retry."""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from frontend import search
from pipeline.models import Attachment, Delivery, Event, Message, Thread
from tests.builders import (BASE_DATE, PNG, account_row, failed_delivery, lease_and_connect, make_attachment,
                            stored_message)

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def account(alice):
    return account_row(alice)


def list_messages(client, **params):
    response = client.get(reverse("frontend:api_messages"), params)
    assert response.status_code == 200, response.content
    return response.json()


def subjects(page):
    return [row["subject"] for row in page["results"]]


def test_the_api_answers_401_to_anonymous_requests(client):
    assert client.get(reverse("frontend:api_messages")).status_code == 401


def test_messages_come_newest_arrival_first_in_keyset_pages_without_gaps_or_repeats(alice_client, alice, account):
    # The Date header places nothing: a 2019 date, a future one and none at all arrive in this order.
    made = [stored_message(alice, account, subject=f"m{i}") for i in range(7)]
    made.append(stored_message(alice, account, subject="dated 2019", date=BASE_DATE.replace(year=2019)))
    made.append(stored_message(alice, account, subject="dated 2037", date=BASE_DATE.replace(year=2037)))
    undated = stored_message(alice, account, subject="undated")
    Message.objects.filter(pk=undated.pk).update(date=None)
    made.append(undated)
    same_time = timezone.now() + timedelta(seconds=5)
    ties = [stored_message(alice, account, subject=f"tie{i}") for i in range(3)]
    Message.objects.filter(pk__in=[m.pk for m in ties]).update(arrived_at=same_time)

    seen, cursor = [], None
    while True:
        page = list_messages(alice_client, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += page["results"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 13
    assert len({row["id"] for row in seen}) == 13
    # Ties on arrival are broken by id, the same way on every page.
    assert [row["id"] for row in seen[:3]] == sorted((str(m.pk) for m in ties), reverse=True)
    assert [row["subject"] for row in seen[3:]] == [m.subject for m in reversed(made)]
    arrived = [row["arrived_at"] for row in seen]
    assert arrived == sorted(arrived, reverse=True)


def test_mail_in_the_trash_or_expunged_leaves_the_lists_and_search_but_shows_in_the_trash(
        alice_client, alice, account):
    from imap.models import Folder, MessageLocation

    kept = stored_message(alice, account, subject="budget kept")
    trashed = stored_message(alice, account, subject="budget trashed", folder="Trash")
    expunged = stored_message(alice, account, subject="budget expunged")
    MessageLocation.objects.filter(message=expunged).update(expunged_at=timezone.now())
    imported = stored_message(alice, None, subject="budget imported")
    assert subjects(list_messages(alice_client)) == ["budget imported", "budget kept"]
    assert subjects(list_messages(alice_client, q="budget")) == ["budget imported", "budget kept"]
    trash = Folder.objects.get(account=account, name="Trash")
    assert subjects(list_messages(alice_client, folder=trash.pk)) == ["budget trashed"]
    detail = alice_client.get(reverse("frontend:api_message", args=[trashed.pk])).json()
    assert detail["deleted"] is True and detail["locations"][0]["trash"] is True
    assert alice_client.get(reverse("frontend:api_message", args=[kept.pk])).json()["deleted"] is False
    assert alice_client.get(reverse("frontend:api_message", args=[imported.pk])).json()["deleted"] is False


def test_deleting_for_good_without_confirm_is_a_400(alice_client, alice, account):
    message = stored_message(alice, account, subject="in trash", folder="Trash")
    response = alice_client.post(reverse("frontend:api_batch"), {"action": "delete_forever",
                                                                 "ids": [str(message.pk)]},
                                 content_type="application/json")
    assert response.status_code == 400 and "confirm" in response.json()["error"]


def test_a_tampered_cursor_is_a_clear_400(alice_client):
    response = alice_client.get(reverse("frontend:api_messages"), {"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid cursor"}


@pytest.mark.parametrize("params", [
    {"after": "2024-13-45T00:00:00"},  # well-formed, but no such month or day
    {"before": "2024-02-30"},
    {"after": "2024-02-29T25:61:00"},
    {"cursor": base64.urlsafe_b64encode(json.dumps([None, 123]).encode()).decode()},
    {"cursor": base64.urlsafe_b64encode(json.dumps(["2024-13-45T00:00:00", str(uuid.uuid4())]).encode()).decode()},
    {"cursor": base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode()},
])
def test_impossible_dates_and_odd_cursors_are_clear_400s_not_500s(alice_client, params):
    response = alice_client.get(reverse("frontend:api_messages"), params)
    assert response.status_code == 400, response.content
    assert set(response.json()) == {"error"}
    name = next(iter(params))
    assert name in response.json()["error"]


def test_filters_narrow_by_account_folder_unread_flagged_attachment_and_date(alice_client, alice, account):
    other = account_row(alice)
    stored_message(alice, account, subject="read", flags=["\\Seen"])
    stored_message(alice, account, subject="unread")
    stored_message(alice, account, subject="flagged", flags=["\\Seen", "\\Flagged"])
    stored_message(alice, account, subject="archived", folder="Archive", flags=["\\Seen"])
    stored_message(alice, account, subject="attached", flags=["\\Seen"], has_attachments=True)
    stored_message(alice, other, subject="elsewhere", flags=["\\Seen"], date=BASE_DATE - timedelta(days=30))

    assert set(subjects(list_messages(alice_client, unread=1))) == {"unread"}
    assert "unread" not in subjects(list_messages(alice_client, unread=0))
    assert subjects(list_messages(alice_client, flagged=1)) == ["flagged"]
    assert subjects(list_messages(alice_client, has_attachment=1)) == ["attached"]
    archive = account.folders.get(name="Archive")
    assert subjects(list_messages(alice_client, folder=archive.pk)) == ["archived"]
    assert subjects(list_messages(alice_client, account=other.pk)) == ["elsewhere"]
    assert subjects(list_messages(alice_client, before=(BASE_DATE - timedelta(days=1)).date().isoformat())) == [
        "elsewhere"]
    assert "elsewhere" not in subjects(list_messages(alice_client, after=BASE_DATE.date().isoformat()))


def test_a_bad_filter_value_is_a_400_that_names_it(alice_client):
    response = alice_client.get(reverse("frontend:api_messages"), {"unread": "maybe"})
    assert response.status_code == 400
    assert "unread" in response.json()["error"]
    assert alice_client.get(reverse("frontend:api_messages"), {"after": "yesterday"}).status_code == 400
    assert alice_client.get(reverse("frontend:api_messages"), {"limit": "5000"}).status_code == 400


def test_search_finds_words_in_subject_sender_and_body_with_prefixes(alice_client, alice, account):
    stored_message(alice, account, subject="Quarterly invoice", text="please pay")
    stored_message(alice, account, subject="Lunch", text="the invoice is attached", sender="dave@example.test")
    stored_message(alice, account, subject="Holiday", sender="invoices@vendor.test")
    stored_message(alice, account, subject="Unrelated", text="nothing here")

    assert set(subjects(list_messages(alice_client, q="invoice"))) == {"Quarterly invoice", "Lunch", "Holiday"}
    assert set(subjects(list_messages(alice_client, q="invo"))) == {"Quarterly invoice", "Lunch", "Holiday"}
    assert subjects(list_messages(alice_client, q="invoice pay")) == ["Quarterly invoice"]
    assert subjects(list_messages(alice_client, q="dave")) == ["Lunch"]


def test_search_input_with_query_syntax_is_taken_as_plain_words(alice_client, alice, account):
    stored_message(alice, account, subject="NEAR the AND gate", text='say "hi" OR not')
    for text in ['"', "NEAR(", "AND", "subject:x", "*", "hi) OR (", "'; DROP TABLE x; --", "!!!"]:
        response = alice_client.get(reverse("frontend:api_messages"), {"q": text})
        assert response.status_code == 200, (text, response.content)
    assert subjects(list_messages(alice_client, q='"hi" OR')) == ["NEAR the AND gate"]


def test_search_follows_edits_and_deletions(alice_client, alice, account):
    message = stored_message(alice, account, subject="Draft", text="alpha")
    assert subjects(list_messages(alice_client, q="alpha")) == ["Draft"]
    Message.objects.filter(pk=message.pk).update(text_body="beta")
    assert subjects(list_messages(alice_client, q="alpha")) == []
    assert subjects(list_messages(alice_client, q="beta")) == ["Draft"]
    message.delete()
    assert subjects(list_messages(alice_client, q="beta")) == []


def test_installing_the_search_index_again_is_harmless(alice_client, alice, account):
    stored_message(alice, account, subject="Twice", text="gamma")
    search.install()
    search.install()
    search.rebuild()
    assert subjects(list_messages(alice_client, q="gamma")) == ["Twice"]


@pytest.mark.parametrize("sparse_matches", [10_000, 1])
def test_search_pages_are_the_same_whether_matches_are_listed_or_tested_row_by_row(
        alice_client, alice, bob, account, monkeypatch, sparse_matches):
    # PostgreSQL hands the inbox's queries the ids of up to SPARSE_MATCHES matches and tests each
    # row's vector above that (frontend/search.py): both ways give the same pages.
    monkeypatch.setattr(search, "SPARSE_MATCHES", sparse_matches)
    for n in range(4):
        stored_message(alice, account, subject=f"Renewal {n}", text="the contract renewal")
    named = stored_message(alice, account, subject="Scan", text="see attached")
    make_attachment(named, filename="renewal-2025.pdf", content_type="application/pdf", content=b"%PDF-1.4")
    stored_message(alice, account, subject="Thrown away", text="renewal", folder="Trash")
    stored_message(alice, account, subject="Other", text="nothing to see")
    stored_message(bob, account_row(bob), subject="Bob's renewal", text="renewal")
    stored_message(alice, None, subject="Imported renewal", text="from the old mailbox")

    first = list_messages(alice_client, q="renewal", limit=3)
    rest = list_messages(alice_client, q="renewal", limit=3, cursor=first["next_cursor"])
    assert subjects(first) + subjects(rest) == ["Imported renewal", "Scan", "Renewal 3", "Renewal 2", "Renewal 1",
                                                "Renewal 0"]
    assert rest["next_cursor"] is None
    assert subjects(list_messages(alice_client, q="contract renew")) == [f"Renewal {n}" for n in (3, 2, 1, 0)]
    assert subjects(list_messages(alice_client, q="renewal", unread="1", account=account.pk, limit=2)) == [
        "Scan", "Renewal 3"]
    assert alice_client.get(reverse("frontend:api_message_counts"), {"q": "renewal"}).json()["total"] == 6


@pytest.mark.parametrize("dense_matches", [2000, 5, 1])
def test_search_pages_are_the_same_whether_every_match_or_a_window_of_them_is_collected(
        alice_client, alice, bob, account, monkeypatch, dense_matches):
    # SQLite collects every match of a rarer search, but of a common one only those among each
    # scope's next rows (search.Window). With DENSE_MATCHES lowered these few messages take that
    # path: page 1, later pages (windows further back), a scope where the word is rare (its window
    # holds no page, so every match is collected after all), mail in the Trash, a match by
    # attachment name, and mail whose rowids run against its arrival order.
    monkeypatch.setattr(search, "DENSE_MATCHES", dense_matches)
    monkeypatch.setattr(search, "WINDOW_COST", 0)
    shared = account_row(bob, members=[alice])
    wanted = []
    for n in range(14):
        wanted.append(stored_message(alice, account, subject=f"Renewal {n}", text="the contract renewal"))
        stored_message(alice, account, subject=f"Other {n}", text="nothing to see", flags=("\\Seen",))
        if n % 4 == 0:
            stored_message(alice, account, subject=f"Thrown away {n}", text="renewal", folder="Trash")
    wanted.append(stored_message(alice, shared, subject="Shared renewal", text="renewal"))
    for n in range(12):
        stored_message(bob, shared, subject=f"Shared {n}", text="nothing to see")
    named = stored_message(alice, account, subject="Scan", text="see attached")
    make_attachment(named, filename="renewal-2025.pdf", content_type="application/pdf", content=b"%PDF-1.4")
    wanted += [named, stored_message(alice, None, subject="Imported renewal", text="from the old mailbox")]
    stored_message(bob, account_row(bob), subject="Bob's renewal", text="renewal")
    later = timezone.now() + timedelta(hours=1)
    for n, message in enumerate(wanted[:4]):  # the oldest rows arrive last
        Message.objects.filter(pk=message.pk).update(arrived_at=later + timedelta(minutes=n))
    expected = [subject for (subject,) in Message.objects.filter(pk__in=[m.pk for m in wanted]).order_by(
        "-arrived_at", "-id").values_list("subject")]

    for limit in (3, 7):
        seen, page = [], {"next_cursor": ""}
        while page["next_cursor"] is not None:
            page = list_messages(alice_client, q="renewal", limit=limit, cursor=page["next_cursor"])
            seen += subjects(page)
        assert seen == expected
    unread = list_messages(alice_client, q="renewal", unread="1", account=account.pk, limit=4)
    assert subjects(unread) == [s for s in expected if s not in ("Shared renewal", "Imported renewal")][:4]
    assert alice_client.get(reverse("frontend:api_message_counts"), {"q": "renewal"}).json()["total"] == len(
        expected)
    if connection.vendor == "sqlite":
        assert isinstance(search.matching("renewal", alice, window=True), search.Window) == (dense_matches < 20)


def test_a_search_window_walks_no_further_than_the_rows_whose_matches_it_collected(
        alice_client, alice, account, monkeypatch):
    # Rowids (creation order) and arrival disagree: the window (the first 4 rows by arrival) holds
    # rowids 1-6, so the older "W" and "X" (rowids 2 and 3) are collected and "Z" (rowid 7) is not.
    # A walk past the window would skip Z and show W in its place.
    if connection.vendor != "sqlite":
        pytest.skip("windows are SQLite's")
    monkeypatch.setattr(search, "DENSE_MATCHES", 2)
    monkeypatch.setattr(search.Window, "span", lambda self, limit, scopes: 4)
    made = {name: stored_message(alice, account, subject=name, text="other" if name[0] == "N" else "renewal")
            for name in ("M1", "W", "X", "N1", "M2", "N2", "Z")}
    for minutes, name in enumerate(reversed(("M1", "N1", "M2", "N2", "Z", "W", "X"))):
        Message.objects.filter(pk=made[name].pk).update(arrived_at=BASE_DATE + timedelta(minutes=minutes))
    first = list_messages(alice_client, q="renewal", limit=3)
    assert subjects(first) == ["M1", "M2", "Z"]
    assert subjects(list_messages(alice_client, q="renewal", limit=3, cursor=first["next_cursor"])) == ["W", "X"]


def test_a_filtered_search_reads_past_the_matches_its_filters_hide(alice_client, alice, account):
    stored_message(alice, account, subject="Old unread", text="kiwi")
    for n in range(9):
        stored_message(alice, account, subject=f"Read {n}", text="kiwi", flags=("\\Seen",))
    page = list_messages(alice_client, q="kiwi", unread="1", limit=1)
    assert subjects(page) == ["Old unread"] and page["next_cursor"] is None
    first = list_messages(alice_client, q="kiwi", limit=4)
    rest = list_messages(alice_client, q="kiwi", limit=10, cursor=first["next_cursor"])
    assert subjects(first) + subjects(rest) == [f"Read {n}" for n in range(8, -1, -1)] + ["Old unread"]


def test_live_refresh_by_id_returns_only_rows_matching_the_filters(alice_client, alice, account):
    read = stored_message(alice, account, subject="read", flags=["\\Seen"])
    unread = stored_message(alice, account, subject="unread")
    page = list_messages(alice_client, unread=1, id=[str(read.pk), str(unread.pk)])
    assert subjects(page) == ["unread"]


def test_detail_has_headers_body_attachments_and_locations(alice_client, alice, account):
    message = stored_message(alice, account, subject="Report", html="<p>Hi</p>", to=[
        {"name": "Alice", "address": "alice@example.test"}])
    make_attachment(message, filename="report.pdf", content_type="application/pdf", content=b"%PDF-1.4")
    detail = alice_client.get(reverse("frontend:api_message", args=[message.pk])).json()
    assert detail["subject"] == "Report"
    assert detail["to"] == [{"name": "Alice", "address": "alice@example.test"}]
    assert detail["has_html"] is True
    assert [a["filename"] for a in detail["attachments"]] == ["report.pdf"]
    assert detail["locations"][0]["folder_name"] == "INBOX"
    assert detail["unread"] is True


def test_the_thread_lists_the_conversation_in_date_order(alice_client, alice, account):
    thread = Thread.objects.create(owner=alice, subject="Plans")
    first = stored_message(alice, account, subject="Plans", thread=thread)
    second = stored_message(alice, account, subject="Re: Plans", thread=thread)
    stored_message(alice, account, subject="Other")
    rows = alice_client.get(reverse("frontend:api_thread", args=[second.pk])).json()["results"]
    assert [r["id"] for r in rows] == [str(first.pk), str(second.pk)]


def test_attachments_download_as_opaque_files_unless_the_type_is_safe(alice_client, alice, account):
    message = stored_message(alice, account)
    hostile = make_attachment(message, filename="invoice.html", content_type="text/html")
    picture = make_attachment(message, filename="photo.png", content_type="image/png", content=b"\x89PNG")
    response = alice_client.get(reverse("frontend:attachment", args=[hostile.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="invoice.html"' in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == b"<script>alert(1)</script>"
    response = alice_client.get(reverse("frontend:attachment", args=[picture.pk]))
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("attachment;")


def test_the_body_frame_is_locked_down_until_remote_images_are_asked_for(alice_client, alice, account):
    message = stored_message(alice, account,
                             html='<p>Hi</p><img data-remote-src="https://tracker.test/p.gif" alt="x">')
    url = reverse("frontend:message_body", args=[message.pk])
    response = alice_client.get(url)
    csp = response["Content-Security-Policy"]
    inline = f"http://testserver/messages/{message.pk}/inline/"
    assert csp.startswith(f"default-src 'none'; img-src data: {inline}; style-src 'unsafe-inline'")
    [img_src] = [d for d in csp.split("; ") if d.startswith("img-src")]
    assert img_src == f"img-src data: {inline}"  # no other URL of ours, nothing remote
    assert b'<img src="https://tracker.test/p.gif"' not in response.content
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    remote = alice_client.get(url, {"remote": "1"})
    assert f"img-src data: {inline} https: http:" in remote["Content-Security-Policy"]
    assert b'<img src="https://tracker.test/p.gif"' in remote.content


def inline_part(message, content_id, *, content_type="image/png", content=PNG, is_inline=True):
    part = make_attachment(message, filename="logo.png", content_type=content_type, content=content)
    Attachment.objects.filter(pk=part.pk).update(content_id=content_id, is_inline=is_inline)
    return part


def inline_urls(client, message) -> dict[str, str]:
    """alt text -> src of each <img> in the message's body frame."""
    body = client.get(reverse("frontend:message_body", args=[message.pk])).content.decode()
    return dict((alt, html.unescape(src)) for src, alt in re.findall(r'<img src="([^"]*)" alt="([^"]*)"', body))


def test_cid_images_in_the_body_point_at_the_messages_inline_endpoint(alice_client, alice, account):
    message = stored_message(alice, account, html='<p>Logo</p><img src="cid:logo@example.test" alt="logo">'
                                                  '<img src="CID:Part1%2406@Example.TEST" alt="encoded">'
                                                  '<img src="cid:nowhere@example.test" alt="unknown">')
    inline_part(message, "logo@example.test")
    inline_part(message, "part1$06@example.test")
    urls = inline_urls(alice_client, message)
    prefix = f"/messages/{message.pk}/inline/"
    assert urls["logo"].startswith(prefix) and urls["logo"].endswith("/?cid=logo%40example.test")
    assert urls["encoded"].startswith(prefix) and urls["encoded"].endswith("/?cid=Part1%2406%40Example.TEST")
    assert urls["unknown"] == "cid:nowhere@example.test"  # no such part: nothing to point at

    response = Client().get(urls["logo"])  # no session: the frame's requests carry none
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == "inline"
    assert b"".join(response.streaming_content) == PNG
    assert Client().get(urls["encoded"]).status_code == 200


def test_the_inline_endpoint_serves_only_images_of_that_message(alice_client, alice, account):
    from frontend.views import inline_token

    message = stored_message(alice, account, html='<img src="cid:page@x" alt="page">')
    other = stored_message(alice, account)
    inline_part(message, "page@x", content_type="text/html", content=b"<script>alert(1)</script>")
    inline_part(message, "drawing@x", content_type="image/svg+xml", content=b"<svg onload='alert(1)'/>")
    inline_part(message, "logo@x")
    inline_part(other, "elsewhere@x")
    url = lambda m, cid, token=None: reverse(  # noqa: E731
        "frontend:message_inline", args=[m.pk, token or inline_token(m, alice)]) + f"?cid={cid}"
    assert alice_client.get(url(message, "logo@x")).status_code == 200
    for cid in ["page@x", "drawing@x", "elsewhere@x", "missing@x", ""]:
        assert alice_client.get(url(message, cid)).status_code == 404, cid
    assert alice_client.get(url(other, "elsewhere@x")).status_code == 200
    # A token names one message: it opens no other.
    assert alice_client.get(url(other, "elsewhere@x", token=inline_token(message, alice))).status_code == 404
    assert alice_client.get(url(message, "logo@x", token="forged")).status_code == 404
    assert alice_client.get(reverse("frontend:message_inline_base", args=[message.pk])).status_code == 404


def test_an_inline_token_expires(alice_client, alice, account, monkeypatch):
    from frontend import views

    message = stored_message(alice, account, html='<img src="cid:logo@x" alt="logo">')
    inline_part(message, "logo@x")
    src = inline_urls(alice_client, message)["logo"]
    monkeypatch.setattr(views, "INLINE_TOKEN_MAX_AGE", -1)
    assert Client().get(src).status_code == 404


def test_stats_count_messages_and_deliveries_per_status(alice_client, alice, account):
    stored_message(alice, account, status="standardized")
    message = stored_message(alice, account, status="distributed")
    stored_message(alice, account, status="dead")
    delivery = failed_delivery(alice, message, status=Delivery.Status.FAILED)
    stats = alice_client.get(reverse("frontend:api_stats")).json()
    assert stats["messages"]["standardized"] == 1
    assert stats["messages"]["dead"] == 1
    assert stats["messages"]["received"] == 0
    assert stats["deliveries"]["failed"] == 1
    assert delivery.status == "failed"


def test_a_failed_delivery_can_be_retried_once_and_is_requeued_with_an_audit_row(alice_client, alice, account):
    message = stored_message(alice, account, status="distributed")
    delivery = failed_delivery(alice, message, status=Delivery.Status.FAILED)
    url = reverse("frontend:api_delivery_retry", args=[delivery.pk])
    response = alice_client.post(url)
    assert response.status_code == 200, response.content
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SCHEDULED
    assert delivery.attempts == 0
    assert Event.objects.filter(delivery=delivery, kind=Event.Kind.REQUEUED).count() == 1
    again = alice_client.post(url)
    assert again.status_code == 409
    assert "only failed, dead or retrying" in again.json()["error"]


def test_failing_deliveries_are_listed_by_status(alice_client, alice, account):
    message = stored_message(alice, account, status="distributed")
    failed_delivery(alice, message, status=Delivery.Status.DEAD)
    rows = alice_client.get(reverse("frontend:api_deliveries"), {"status": "failed,dead"}).json()["results"]
    assert [(r["status"], r["retryable"]) for r in rows] == [("dead", True)]
    assert alice_client.get(reverse("frontend:api_deliveries"), {"status": "bogus"}).status_code == 400


def test_accounts_show_their_live_idle_state(alice_client, alice, account):
    from imap.models import IdleSession

    IdleSession.objects.create(account=account, connected=True, last_error="", lease_owner="host:1:abc",
                               lease_expires_at=timezone.now() + timedelta(seconds=30))
    rows = alice_client.get(reverse("frontend:api_accounts")).json()["results"]
    assert rows[0]["idle"]["connected"] is True
    assert {f["name"] for f in rows[0]["folders"]} == {"INBOX", "Archive", "Trash"}


def test_the_api_shows_a_leased_idle_session_with_every_field(alice_client, alice, account):
    lease_and_connect(account)
    idle = alice_client.get(reverse("frontend:api_account", args=[account.pk])).json()["idle"]
    assert idle["connected"] is True and idle["leased"] is True
    assert idle["idling_since"] is not None
    assert idle["last_push_at"] == BASE_DATE.isoformat()
    assert idle["reconnect_count"] == 1
    assert idle["last_error"] == ""  # cleared by the reconnect; when it happened stays
    assert idle["last_error_at"] is not None
    assert idle["lease_expires_at"] is not None
    assert "lease_owner" not in idle  # a server's host:pid is for staff


def test_staff_also_see_which_idle_manager_holds_the_lease(alice_client, alice, account):
    alice.is_staff = True
    alice.save()
    owner = lease_and_connect(account)
    [row] = alice_client.get(reverse("frontend:api_accounts")).json()["results"]
    assert row["idle"]["lease_owner"] == owner


def test_an_expired_lease_is_not_shown_as_connected(alice_client, alice, account):
    from imap.models import IdleSession

    lease_and_connect(account)
    IdleSession.objects.filter(pk=account.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    idle = alice_client.get(reverse("frontend:api_account", args=[account.pk])).json()["idle"]
    assert (idle["connected"], idle["leased"], idle["idling_since"]) == (False, False, None)
    assert idle["reconnect_count"] == 1


def test_an_account_no_idle_manager_has_touched_has_idle_null(alice_client, alice, account):
    assert alice_client.get(reverse("frontend:api_account", args=[account.pk])).json()["idle"] is None


def test_listing_accounts_costs_the_same_queries_for_one_or_many(alice_client, alice, account):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    lease_and_connect(account)
    url = reverse("frontend:api_accounts")
    with CaptureQueriesContext(connection) as one:
        alice_client.get(url)
    for _ in range(3):
        lease_and_connect(account_row(alice), owner="host-b:1:cafe")
    with CaptureQueriesContext(connection) as four:
        assert len(alice_client.get(url).json()["results"]) == 4
    assert len(four) == len(one)


def test_batch_requests_with_bad_input_get_clear_errors(alice_client, alice, account):
    message = stored_message(alice, account)
    url = reverse("frontend:api_batch")
    post = lambda body: alice_client.post(url, body, content_type="application/json")  # noqa: E731
    assert post({"action": "explode", "ids": [str(message.pk)]}).json()["error"].startswith("action must be")
    assert post({"action": "read", "ids": []}).status_code == 400
    assert post({"action": "read", "ids": ["nope"]}).status_code == 400
    assert post({"action": "move", "ids": [str(message.pk)]}).json()["error"] == "move needs a target folder"
    assert alice_client.post(url, "{", content_type="application/json").status_code == 400


def test_marking_a_message_that_lives_on_no_server_changes_only_its_own_flags(alice_client, alice):
    message = stored_message(alice, None, subject="imported")
    response = alice_client.post(reverse("frontend:api_batch"), {"action": "read", "ids": [str(message.pk)]},
                                 content_type="application/json")
    assert response.json() == {"updated": [str(message.pk)], "errors": [], "undo": [], "notices": []}
    message.refresh_from_db()
    assert message.flags == ["\\Seen"]


def test_mail_imported_into_an_account_is_listed_searched_and_shown_in_its_imported_folder(
        alice_client, alice, account):
    # An upload on the Accounts page said "118 new" while the inbox showed none of them: mail of an
    # account without a location on the server was taken for deleted.
    from imap import importer
    from imap.models import Folder, MessageLocation
    from pipeline import tasks
    from tests.builders import eml

    folder = Folder.objects.create(account=account, name=importer.IMPORTED_FOLDER, present=False, selectable=False)
    results = importer.import_batch(account, folder, [eml(subject="archived budget one"),
                                                      eml(subject="archived budget two")])
    for message, _ in results:
        tasks.standardize(str(message.pk))
    stored_message(alice, account, subject="budget on the server")
    both = ["archived budget one", "archived budget two"]
    assert subjects(list_messages(alice_client)) == ["budget on the server", *both[::-1]]
    assert sorted(subjects(list_messages(alice_client, q="archived"))) == both
    assert sorted(subjects(list_messages(alice_client, folder=folder.pk))) == both
    folders = alice_client.get(reverse("frontend:api_folders")).json()["results"]
    assert {"id": folder.pk, "account": account.pk, "name": "Imported", "unread": 2, "trash": False} in folders
    inbox = alice_client.get(reverse("frontend:inbox")).content.decode()
    assert f'data-folder="{folder.pk}"' in inbox
    assert f'<option value="{folder.pk}">' not in inbox  # not a place to move mail to: it is on no server
    first = results[0][0]
    assert alice_client.get(reverse("frontend:api_message", args=[first.pk])).json()["deleted"] is False

    # Once a sync finds it on the server, the server's copy decides: moved to the Trash, it is deleted.
    trash = Folder.objects.get(account=account, name="Trash")
    MessageLocation.objects.create(account=account, folder=trash, message=first, uidvalidity=1, uid=99)
    assert subjects(list_messages(alice_client)) == ["budget on the server", "archived budget two"]
    assert alice_client.get(reverse("frontend:api_message", args=[first.pk])).json()["deleted"] is True
