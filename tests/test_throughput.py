"""The pipeline page's throughput and history (GET /api/throughput/): counted from the audit events
of the messages the user may see, per kind, over the last hour, the last day and each of its hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from frontend.throughput import throughput
from pipeline import audit
from pipeline.models import Event
from tests.builders import account_row, failed_delivery, stored_message

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 4, 15, 20, tzinfo=UTC)


def happened(kind, message, ago: timedelta, delivery=None):
    row = audit.record(kind, message, delivery)
    Event.objects.filter(pk=row.pk).update(at=NOW - ago)


def test_each_figure_counts_its_events_in_its_window_and_hour(alice, bob):
    account = account_row(alice)
    message = stored_message(alice, account, status="distributed")
    delivery = failed_delivery(alice, message)
    for ago in (timedelta(minutes=5), timedelta(minutes=50), timedelta(minutes=70), timedelta(hours=23, minutes=30),
                timedelta(hours=25)):  # the last one is out of every window
        happened(Event.Kind.RECEIVED, message, ago)
    happened(Event.Kind.SENT, message, timedelta(minutes=10), delivery)
    happened(Event.Kind.RETRY, message, timedelta(minutes=10), delivery)
    happened(Event.Kind.DEAD, message, timedelta(hours=3), delivery)
    happened(Event.Kind.FAILED, message, timedelta(hours=3), delivery)
    happened(Event.Kind.DEAD, message, timedelta(minutes=1))  # a message whose stage crashed: no delivery
    happened(Event.Kind.STANDARDIZED, message, timedelta(minutes=1))  # a stage, not a figure
    happened(Event.Kind.SENT, message, -timedelta(minutes=50), delivery)  # a worker's clock ahead: not yet

    t = throughput(alice, now=NOW)
    assert t["last_hour"] == {"received": 2, "sent": 1, "retried": 1, "failed": 0}
    assert t["last_day"] == {"received": 4, "sent": 1, "retried": 1, "failed": 2}
    hours = {h["start"]: h for h in t["hours"]}
    assert len(t["hours"]) == 24 and t["hours"][-1]["start"] == "2026-12-04T15:00:00+00:00"
    assert t["hours"][0]["start"] == "2026-12-03T16:00:00+00:00"
    assert hours["2026-12-04T15:00:00+00:00"] == {"start": "2026-12-04T15:00:00+00:00", "received": 1, "sent": 1,
                                                   "retried": 1, "failed": 0}
    assert hours["2026-12-04T14:00:00+00:00"]["received"] == 2  # 50 and 70 minutes ago
    assert hours["2026-12-04T12:00:00+00:00"]["failed"] == 2
    # 23.5 hours ago is in the last day but before the first whole hour shown.
    assert sum(h["received"] for h in t["hours"]) == 3
    assert t["labels"]["retried"] == "Will retry"

    # Bob sees none of Alice's mail, so none of its work; a member of her account sees it all.
    assert throughput(bob, now=NOW)["last_day"] == dict.fromkeys(t["last_day"], 0)
    account.members.add(bob)
    assert throughput(bob, now=NOW)["last_day"] == t["last_day"]


def test_mail_without_an_account_counts_for_its_owner_only(alice, bob, client):
    imported = stored_message(alice, None, status="distributed")
    audit.record(Event.Kind.RECEIVED, imported)
    client.force_login(alice)
    body = client.get(reverse("frontend:api_throughput")).json()
    assert body["last_hour"]["received"] == 1 and body["hours"][-1]["received"] == 1
    client.force_login(bob)
    assert client.get(reverse("frontend:api_throughput")).json()["last_hour"]["received"] == 0
    client.logout()
    assert client.get(reverse("frontend:api_throughput")).status_code == 401
