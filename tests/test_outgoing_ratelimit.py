"""Per-service rate limits: the token bucket, Retry-After blocks, and the service's bookkeeping."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection
from django.utils import timezone

from outgoing import ratelimit, sending
from outgoing.models import Service
from outgoing.errors import TransportError
from tests.builders import BOT_TOKEN, due_delivery, import_message, make_service
from tests.servers.http import Response

T0 = datetime.datetime(2025, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def seconds(n):
    return T0 + datetime.timedelta(seconds=n)


@pytest.fixture
def service(alice):
    # 6 a minute: a bucket of one token (10 seconds' worth), one new token every 10 seconds.
    return make_service(alice, "webhook", {"url": "http://127.0.0.1:9/"}, {"signing_secret": "s"}, rate_per_minute=6)


@pytest.mark.django_db
def test_a_full_bucket_lets_a_burst_through_then_says_how_long_to_wait(service):
    Service.objects.filter(pk=service.pk).update(rate_per_minute=60)  # bucket of 10
    assert [ratelimit.take_token(service, now=T0) for _ in range(10)] == [0.0] * 10
    assert ratelimit.take_token(service, now=T0) == pytest.approx(1.0)
    assert ratelimit.take_token(service, now=seconds(1)) == 0.0


@pytest.mark.django_db
def test_waiting_spends_nothing_and_the_bucket_refills_with_time(service):
    assert ratelimit.take_token(service, now=T0) == 0.0
    assert ratelimit.take_token(service, now=seconds(4)) == pytest.approx(6.0)
    assert ratelimit.take_token(service, now=seconds(4)) == pytest.approx(6.0)
    assert ratelimit.take_token(service, now=seconds(10)) == 0.0


@pytest.mark.django_db
def test_zero_per_minute_means_no_limit_of_our_own(service):
    Service.objects.filter(pk=service.pk).update(rate_per_minute=0)
    assert {ratelimit.take_token(service, now=T0) for _ in range(50)} == {0.0}


@pytest.mark.django_db
def test_a_retry_after_blocks_every_send_until_it_passes_and_is_never_shortened(service):
    ratelimit.block_for(service, 30, now=T0)
    ratelimit.block_for(service, 5, now=T0)
    assert ratelimit.take_token(service, now=seconds(10)) == pytest.approx(20.0)
    assert ratelimit.take_token(service, now=seconds(30)) == 0.0


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_spend_the_same_token(alice):
    service = make_service(alice, "webhook", {"url": "http://127.0.0.1:9/"}, {"signing_secret": "s"},
                           rate_per_minute=30)  # a bucket of 5
    now = timezone.now()
    results, start = [], threading.Barrier(8)

    def worker():
        try:
            start.wait(5)
            for _ in range(3):
                results.append(ratelimit.take_token(service, now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 24
    assert results.count(0.0) == 5


@pytest.mark.django_db
def test_a_429_records_the_error_and_blocks_the_service_for_other_workers(alice, clean_http_sink):
    service = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage", Response(
        429, json={"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 40",
                   "parameters": {"retry_after": 40}}))
    delivery = due_delivery(service, import_message(alice), "7")
    with pytest.raises(TransportError) as failed:
        sending.send(delivery)
    assert failed.value.retry_after == 40
    service.refresh_from_db()
    assert "Too Many Requests: retry after 40" in service.last_error and service.last_error_at
    assert 35 < ratelimit.take_token(service) <= 40


@pytest.mark.django_db
def test_a_success_is_recorded_on_the_service(alice, clean_http_sink):
    service = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})
    clean_http_sink.respond(f"/bot{BOT_TOKEN}/sendMessage",
                            Response(200, json={"ok": True, "result": {"message_id": 9}}))
    assert sending.send(due_delivery(service, import_message(alice), "7")) == "9"
    service.refresh_from_db()
    assert service.last_success_at is not None


@pytest.mark.django_db
def test_a_disabled_service_fails_the_delivery_permanently(alice, clean_http_sink):
    service = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN},
                           enabled=False)
    with pytest.raises(TransportError) as failed:
        sending.send(due_delivery(service, import_message(alice), "7"))
    assert failed.value.permanent and clean_http_sink.requests == []


@pytest.mark.django_db
def test_undecryptable_secrets_fail_clearly_without_sending(alice, clean_http_sink):
    service = make_service(alice, "telegram", {"api_base": clean_http_sink.base_url}, {"bot_token": BOT_TOKEN})
    Service.objects.filter(pk=service.pk).update(secrets_encrypted="gAAAAA-not-a-token")
    service.refresh_from_db()
    with pytest.raises(TransportError) as failed:
        sending.send(due_delivery(service, import_message(alice), "7"))
    assert failed.value.permanent and "enter them again" in failed.value.message


@pytest.mark.django_db
def test_a_service_read_just_before_spends_its_token_without_a_second_read_but_never_twice(service):
    loaded = Service.objects.get(pk=service.pk)  # as the pipeline loads it with the claimed delivery
    assert ratelimit.take_token(loaded, now=T0, fresh=True) == 0.0
    # `loaded` still shows the full bucket: the compare-and-set notices, re-reads and finds it empty.
    assert ratelimit.take_token(loaded, now=T0, fresh=True) == pytest.approx(10.0)
    ratelimit.block_for(service, 30, now=T0)
    fresh = Service.objects.get(pk=service.pk)
    assert ratelimit.take_token(fresh, now=seconds(20), fresh=True) == pytest.approx(10.0)
