"""Who sees what: Bob gets 404 for everything of Alice's (API, pages, downloads) and no live event
for her mail, unless she makes him a member of the account."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import reverse

from mailgate.realtime import current_seq, publish_for_account, publish_for_message
from tests.builders import (PNG, account_row, failed_delivery, lease_and_connect, make_attachment,
                            stored_message)


@pytest.fixture
def alices_mail(alice):
    account = account_row(alice)
    message = stored_message(alice, account, subject="Alice's secret", html="<p>secret</p>")
    attachment = make_attachment(message)
    delivery = failed_delivery(alice, message, status="failed")
    return account, message, attachment, delivery


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_bob_gets_404_for_alices_message_attachment_and_account_everywhere(alice, bob, alices_mail):
    account, message, attachment, delivery = alices_mail
    bob_client = logged_in(bob)
    urls = [
        reverse("frontend:api_message", args=[message.pk]),
        reverse("frontend:api_thread", args=[message.pk]),
        reverse("frontend:api_message_events", args=[message.pk]),
        reverse("frontend:api_account", args=[account.pk]),
        reverse("frontend:message", args=[message.pk]),
        reverse("frontend:message_body", args=[message.pk]),
        reverse("frontend:attachment", args=[attachment.pk]),
        reverse("frontend:api_messages") + f"?account={account.pk}",
        reverse("frontend:api_messages") + f"?folder={account.folders.first().pk}",
        reverse("frontend:api_deliveries") + f"?message={message.pk}",
    ]
    for url in urls:
        assert bob_client.get(url).status_code == 404, url
    batch = bob_client.post(reverse("frontend:api_batch"), {"action": "read", "ids": [str(message.pk)]},
                            content_type="application/json")
    assert batch.status_code == 404
    assert bob_client.post(reverse("frontend:api_delivery_retry", args=[delivery.pk])).status_code == 404
    # The same URLs work for Alice, so the 404s above are about access, not typos.
    alice_client = logged_in(alice)
    for url in urls:
        assert alice_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_bob_lists_and_counts_nothing_of_alices(bob, alices_mail):
    bob_client = logged_in(bob)
    assert bob_client.get(reverse("frontend:api_messages")).json()["results"] == []
    assert bob_client.get(reverse("frontend:api_messages"), {"q": "secret"}).json()["results"] == []
    assert bob_client.get(reverse("frontend:api_accounts")).json()["results"] == []
    assert bob_client.get(reverse("frontend:api_deliveries")).json()["results"] == []
    stats = bob_client.get(reverse("frontend:api_stats")).json()
    assert sum(stats["messages"].values()) == 0
    assert sum(stats["deliveries"].values()) == 0


@pytest.mark.django_db
def test_a_member_of_the_account_sees_its_messages_and_charlie_still_does_not(alice, bob, charlie, alices_mail):
    account, message, attachment, _ = alices_mail
    account.members.add(bob)
    bob_client = logged_in(bob)
    assert bob_client.get(reverse("frontend:api_message", args=[message.pk])).status_code == 200
    assert bob_client.get(reverse("frontend:attachment", args=[attachment.pk])).status_code == 200
    assert [r["subject"] for r in bob_client.get(reverse("frontend:api_messages")).json()["results"]] == [
        "Alice's secret"]
    assert logged_in(charlie).get(reverse("frontend:api_message", args=[message.pk])).status_code == 404
    assert message.viewer_ids() == sorted([alice.pk, bob.pk])


@pytest.mark.django_db
def test_bob_sees_nothing_of_alices_idle_state(alice, bob, alices_mail):
    account, *_ = alices_mail
    lease_and_connect(account)
    bob_client = logged_in(bob)
    assert bob_client.get(reverse("frontend:api_account", args=[account.pk])).json() == {"error": "not found"}
    assert bob_client.get(reverse("frontend:api_accounts")).json()["results"] == []
    # The control: Alice sees it.
    assert logged_in(alice).get(reverse("frontend:api_account", args=[account.pk])).json()["idle"]["connected"]


@pytest.mark.django_db
def test_bob_cannot_open_alices_inline_images_even_with_a_token_of_his_own(alice, bob, alices_mail):
    from frontend.views import inline_token
    from pipeline.models import Attachment

    account, message, _, _ = alices_mail
    part = make_attachment(message, filename="logo.png", content_type="image/png", content=PNG)
    Attachment.objects.filter(pk=part.pk).update(content_id="logo@x", is_inline=True)
    url = lambda user: reverse("frontend:message_inline", args=[message.pk, inline_token(message, user)])  # noqa: E731
    assert Client().get(url(bob), {"cid": "logo@x"}).status_code == 404
    assert Client().get(url(alice), {"cid": "logo@x"}).status_code == 200
    # Access is checked on every request, not only when the token is minted.
    account.members.add(bob)
    bobs = url(bob)
    assert Client().get(bobs, {"cid": "logo@x"}).status_code == 200
    account.members.remove(bob)
    assert Client().get(bobs, {"cid": "logo@x"}).status_code == 404


@pytest.mark.django_db
def test_pages_send_anonymous_visitors_to_the_login_form(client, alices_mail):
    _, message, _, _ = alices_mail
    for url in ["/", reverse("frontend:message", args=[message.pk]), reverse("frontend:pipeline")]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(settings.LOGIN_URL)


@pytest.mark.django_db
def test_the_login_form_logs_alice_in_and_shows_her_inbox(client, alice):
    page = client.get(settings.LOGIN_URL)
    assert b'id="login-form"' in page.content
    response = client.post(settings.LOGIN_URL, {"username": "alice", "password": "alice-password"}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert b'id="inbox"' in response.content
    bad = Client().post(settings.LOGIN_URL, {"username": "alice", "password": "wrong"})
    assert b"didn't match" in bad.content


# Websockets -------------------------------------------------------------------------------------

def _socket_for(user) -> WebsocketCommunicator:
    """A websocket through the real ASGI stack (origin check, session auth), as a browser opens it."""
    from mailgate.asgi import application

    session = Client()
    session.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"
    return WebsocketCommunicator(application, "/ws/events/", headers=[
        (b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())])


@pytest.mark.django_db(transaction=True)
def test_bob_receives_no_event_when_alice_gets_mail_but_a_member_does(alice, bob, charlie):
    account = account_row(alice, members=[charlie])
    alice_socket, bob_socket, charlie_socket = _socket_for(alice), _socket_for(bob), _socket_for(charlie)

    async def scenario():
        for socket in (alice_socket, bob_socket, charlie_socket):
            connected, _ = await socket.connect()
            assert connected
        message = await sync_to_async(stored_message)(alice, account, subject="For Alice")
        await sync_to_async(publish_for_message)(message, "message.new")
        alice_event = await alice_socket.receive_json_from(timeout=5)
        charlie_event = await charlie_socket.receive_json_from(timeout=5)
        bob_heard_nothing = await bob_socket.receive_nothing(timeout=0.3)
        for socket in (alice_socket, bob_socket, charlie_socket):
            await socket.disconnect()
        return message, alice_event, charlie_event, bob_heard_nothing

    message, alice_event, charlie_event, bob_heard_nothing = async_to_sync(scenario)()
    assert alice_event == {"type": "message.new", "seq": 1,
                           "data": {"id": str(message.pk), "status": "standardized", "account": account.pk}}
    assert charlie_event["data"]["id"] == str(message.pk)
    assert bob_heard_nothing


@pytest.mark.django_db(transaction=True)
def test_events_are_numbered_per_user_without_gaps(alice, bob):
    account = account_row(alice)
    socket = _socket_for(alice)

    async def scenario():
        assert (await socket.connect())[0]
        for state in ("ok", "error", "ok"):
            await sync_to_async(publish_for_account)(account, "account.status", {"account_id": account.pk,
                                                                                 "state": state})
        events = [await socket.receive_json_from(timeout=5) for _ in range(3)]
        await socket.disconnect()
        return events

    events = async_to_sync(scenario)()
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["data"]["state"] for e in events] == ["ok", "error", "ok"]
    assert current_seq(alice.pk) == 3
    assert current_seq(bob.pk) == 0


@pytest.mark.django_db(transaction=True)
def test_an_anonymous_or_foreign_origin_socket_is_refused(alice):
    from mailgate.asgi import application

    foreign = _socket_for(alice)

    async def scenario():
        anonymous = WebsocketCommunicator(application, "/ws/events/", headers=[
            (b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")])
        anonymous_ok, _ = await anonymous.connect()
        foreign.scope["headers"] = [(k, b"http://evil.test" if k == b"origin" else v)
                                    for k, v in foreign.scope["headers"]]
        foreign_ok, _ = await foreign.connect()
        return anonymous_ok, foreign_ok

    assert async_to_sync(scenario)() == (False, False)


@pytest.mark.django_db(transaction=True)
def test_the_idle_managers_account_status_reaches_alice_and_members_but_not_bob(alice, bob, charlie):
    from imap import leases

    account = account_row(alice, members=[charlie])
    sockets = {user.username: _socket_for(user) for user in (alice, bob, charlie)}

    async def scenario():
        for socket in sockets.values():
            assert (await socket.connect())[0]
        await sync_to_async(leases.claim)("host-a:1:beef", [account.pk], 1)
        await sync_to_async(leases.record_connected)("host-a:1:beef", account.pk)
        heard = {name: await sockets[name].receive_json_from(timeout=5) for name in ("alice", "charlie")}
        bob_heard_nothing = await sockets["bob"].receive_nothing(timeout=0.3)
        for socket in sockets.values():
            await socket.disconnect()
        return heard, bob_heard_nothing

    heard, bob_heard_nothing = async_to_sync(scenario)()
    assert heard["alice"]["type"] == "account.status"
    assert heard["alice"]["data"]["account_id"] == account.pk
    assert heard["alice"]["data"]["idle"]["connected"] is True
    assert heard["charlie"]["data"] == heard["alice"]["data"]
    assert bob_heard_nothing


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_number_each_users_events_without_gaps_or_repeats(alice, bob):
    import threading

    from django.contrib.auth.models import User
    from django.db import connection

    from mailgate.realtime import next_seqs

    # Several users per event, as when an account has members: on PostgreSQL a multi-row UPDATE
    # used to lock rows in scan order, and concurrent publishers deadlocked on each other.
    users = [alice.pk, bob.pk] + [User.objects.create_user(f"member{i}").pk for i in range(4)]
    rounds, publishers = 100, 4
    taken: list[dict] = []
    failures: list[BaseException] = []

    def publisher():
        try:
            for _ in range(rounds):
                taken.append(next_seqs(users))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publisher) for _ in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    everyone = list(range(1, rounds * publishers + 1))
    for uid in users:
        assert sorted(t[uid] for t in taken) == everyone
        assert current_seq(uid) == rounds * publishers


@pytest.mark.django_db
def test_an_account_handed_to_bob_takes_its_mail_with_it_and_alice_keeps_none(alice, bob, alices_mail):
    account, message, attachment, _ = alices_mail
    account.owner = bob
    account.save()
    alice_client, bob_client = logged_in(alice), logged_in(bob)
    for url in (reverse("frontend:api_message", args=[message.pk]),
                reverse("frontend:attachment", args=[attachment.pk])):
        assert alice_client.get(url).status_code == 404, url
        assert bob_client.get(url).status_code == 200, url
    assert [r["subject"] for r in bob_client.get(reverse("frontend:api_messages")).json()["results"]] == [
        "Alice's secret"]
    assert alice_client.get(reverse("frontend:api_messages")).json()["results"] == []
    # Her batch action is refused before any IMAP connection is opened with the account's password.
    batch = alice_client.post(reverse("frontend:api_batch"), {"action": "delete", "ids": [str(message.pk)]},
                              content_type="application/json")
    assert batch.status_code == 404
    assert message.viewer_ids() == [bob.pk]


# What a member may do with the owner's mail ------------------------------------------------------

@pytest.mark.django_db
def test_a_member_sees_that_the_owners_delivery_failed_but_not_where_it_went_or_why(
        alice, bob, charlie, alices_mail):
    from pipeline import audit
    from pipeline.models import Event

    account, message, _, delivery = alices_mail
    account.members.add(bob)
    audit.record(Event.Kind.FAILED, message, delivery, detail="to ops@example.test: 550 mailbox unavailable")
    bob_client = logged_in(bob)
    [row] = bob_client.get(reverse("frontend:api_deliveries")).json()["results"]
    assert (row["service"], row["status"], row["attempts"]) == ("Ops email", "failed", 3)
    assert (row["address"], row["last_error"], row["retryable"], row["managed"]) == ("", "", False, False)
    [event] = [e for e in bob_client.get(reverse("frontend:api_message_events", args=[message.pk])).json()["results"]
               if e["delivery"]]
    assert event["detail"] == ""
    page = bob_client.get(reverse("frontend:message", args=[message.pk])).content.decode()
    assert "Ops email" in page
    # (the page holds random UUIDs, so the error text is looked for whole, not "550" alone)
    assert "ops@example.test" not in page and "mailbox unavailable" not in page
    # The owner of the service sees it all.
    alice_client = logged_in(alice)
    [row] = alice_client.get(reverse("frontend:api_deliveries")).json()["results"]
    assert (row["address"], row["last_error"], row["retryable"]) == ("ops@example.test", "550 mailbox unavailable",
                                                                      True)
    assert "ops@example.test" in alice_client.get(reverse("frontend:message", args=[message.pk])).content.decode()
    # Charlie, who is nobody here, sees nothing at all.
    assert logged_in(charlie).get(reverse("frontend:api_deliveries")).json()["results"] == []


@pytest.mark.django_db
def test_a_member_cannot_resend_the_owners_failed_delivery_and_the_owner_can(alice, bob, charlie, alices_mail):
    from pipeline.models import Delivery

    account, _, _, delivery = alices_mail
    account.members.add(bob)
    url = reverse("frontend:api_delivery_retry", args=[delivery.pk])
    refused = logged_in(bob).post(url)
    assert (refused.status_code, refused.json()) == (403, {"error": "only the service's owner can retry its "
                                                                    "deliveries"})
    assert logged_in(charlie).post(url).status_code == 404
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.FAILED
    assert logged_in(alice).post(url).json()["requeued"] is True


@pytest.mark.django_db
def test_the_message_page_offers_delete_to_the_owner_only(alice, bob, alices_mail):
    account, message, _, _ = alices_mail
    account.members.add(bob)
    url = reverse("frontend:message", args=[message.pk])
    assert b'data-action="delete"' in logged_in(alice).get(url).content
    bob_page = logged_in(bob).get(url).content
    assert b'data-action="delete"' not in bob_page and b'data-action="read"' in bob_page
    assert logged_in(bob).get(reverse("frontend:api_message", args=[message.pk])).json()["can_move_or_delete"] is False


@pytest.mark.django_db(transaction=True)
def test_a_delivery_update_tells_members_its_status_but_not_its_address_or_error(alice, bob, charlie):
    from pipeline import events

    account = account_row(alice, members=[bob])
    message = stored_message(alice, account, subject="For Alice")
    delivery = failed_delivery(alice, message, status="failed")
    sockets = {user.username: _socket_for(user) for user in (alice, bob, charlie)}

    async def scenario():
        for socket in sockets.values():
            assert (await socket.connect())[0]
        await sync_to_async(events.delivery_updated)(delivery)
        heard = {name: await sockets[name].receive_json_from(timeout=5) for name in ("alice", "bob")}
        charlie_heard_nothing = await sockets["charlie"].receive_nothing(timeout=0.3)
        for socket in sockets.values():
            await socket.disconnect()
        return heard, charlie_heard_nothing

    heard, charlie_heard_nothing = async_to_sync(scenario)()
    assert heard["alice"]["data"]["address"] == "ops@example.test"
    assert heard["alice"]["data"]["error"] == "550 mailbox unavailable"
    assert heard["bob"]["data"]["status"] == "failed" and heard["bob"]["data"]["id"] == str(delivery.pk)
    assert "address" not in heard["bob"]["data"] and "error" not in heard["bob"]["data"]
    assert charlie_heard_nothing


@pytest.mark.django_db(transaction=True)
def test_logging_out_closes_the_sockets_of_that_session_and_no_other(alice):
    from mailgate.asgi import application

    def socket_and_session():
        session = Client()
        session.force_login(alice)
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.cookies[settings.SESSION_COOKIE_NAME].value}"
        return WebsocketCommunicator(application, "/ws/events/", headers=[
            (b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())]), session

    (laptop, laptop_session), (phone, _) = socket_and_session(), socket_and_session()
    account = account_row(alice)

    async def scenario():
        assert (await laptop.connect())[0] and (await phone.connect())[0]
        logout = await sync_to_async(laptop_session.post)(reverse("logout"))
        closed = await laptop.receive_output(timeout=5)
        # The other session's socket still streams.
        await sync_to_async(publish_for_account)(account, "account.status", {"account_id": account.pk})
        event = await phone.receive_json_from(timeout=5)
        await phone.disconnect()
        return logout.status_code, closed, event

    status, closed, event = async_to_sync(scenario)()
    assert status == 200  # the "logged out" page
    assert closed == {"type": "websocket.close", "code": 4401}
    assert event["type"] == "account.status"


@pytest.mark.django_db
def test_there_is_no_password_reset_form_to_make_the_host_send_mail(client, alice):
    from django.urls import NoReverseMatch

    for path in ("/accounts/password_reset/", "/accounts/password_reset/done/", "/accounts/reset/done/",
                 "/accounts/reset/MQ/set-password/"):
        assert client.get(path).status_code == 404, path
    assert client.post("/accounts/password_reset/", {"email": "alice@example.test"}).status_code == 404
    with pytest.raises(NoReverseMatch):
        reverse("password_reset")
    # Login, logout and a logged-in password change are where they were.
    assert reverse("login") == settings.LOGIN_URL
    client.force_login(alice)
    assert client.get("/accounts/password_change/").status_code == 200
    assert client.post(reverse("logout")).status_code == 200


@pytest.mark.django_db
def test_a_request_reads_the_users_accounts_once_and_sees_a_change_it_makes(alice, bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from frontend import access

    account = account_row(alice)
    stored_message(alice, account, subject="Hello", text="hello there")
    with CaptureQueriesContext(connection) as queries:
        assert logged_in(alice).get(reverse("frontend:api_messages"), {"q": "hello"}).status_code == 200
    assert len([q for q in queries if 'FROM "imap_account"' in q["sql"]]) == 1  # once, not once per scope

    bobs = account_row(bob)
    seen = access.RequestCache(lambda _request: (access.account_ids(alice), bobs.members.add(alice),
                                                 access.account_ids(alice)))(None)
    assert seen[0] == [account.pk] and sorted(seen[2]) == sorted([account.pk, bobs.pk])
    assert access.account_ids(alice) == seen[2]  # outside a request: read afresh, nothing kept
