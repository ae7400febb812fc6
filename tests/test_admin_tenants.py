"""Tenants stay apart in the admin: a staff user who is not a superuser adds accounts, services,
channels and folders only for themselves, whatever owner or member they post, and is never shown
another user's name or account in a form."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from imap.models import Account, Folder
from inbound.models import InboundChannel
from outgoing.models import Service


@pytest.fixture
def bob_staff(bob, client):
    """Bob, staff with every permission on accounts, folders, services and channels."""
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["imap", "outgoing", "inbound"]))
    client.force_login(bob)
    return client


@pytest.fixture
def alices_account(alice):
    account = Account(owner=alice, display_name="Alice at work", email="alice.secret@example.test",
                      host="imap.example.test", username="alice")
    account.set_password("pw")
    account.save()
    return account


def account_form(**fields) -> dict:
    """The admin's account add form, filled in."""
    return {"host": "imap.example.test", "port": "993", "security": "ssl", "password": "pw",
            "folders_include": "[]", "folders_exclude": "[]", "push_folders": "[]", "enabled": "on", **fields}


@pytest.mark.django_db
def test_a_channel_bob_adds_is_his_whatever_owner_he_posts(bob_staff, alice, bob):
    page = bob_staff.get(reverse("admin:inbound_inboundchannel_add")).content.decode()
    assert alice.username not in page  # no owner dropdown listing other users
    response = bob_staff.post(reverse("admin:inbound_inboundchannel_add"), {
        "owner": alice.pk, "name": "SMS in", "kind": "twilio", "enabled": "on", "token": "",
        "config": "{}", "auth_token": "tw-secret"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert InboundChannel.objects.get().owner == bob


@pytest.mark.django_db
def test_a_service_bob_adds_is_his_whatever_owner_he_posts(bob_staff, alice, bob):
    assert alice.username not in bob_staff.get(reverse("admin:outgoing_service_add")).content.decode()
    response = bob_staff.post(reverse("admin:outgoing_service_add"), {
        "owner": alice.pk, "name": "Team chat", "kind": "telegram", "enabled": "on", "rate_per_minute": "0",
        "config": json.dumps({"chat_id": 5}), "bot_token": "123456:ABC-bot"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Service.objects.get().owner == bob


@pytest.mark.django_db
def test_an_account_bob_adds_is_his_and_he_cannot_share_it_with_anyone(bob_staff, alice, bob):
    page = bob_staff.get(reverse("admin:imap_account_add")).content.decode()
    assert alice.username not in page  # neither the owner nor the members widget lists users
    response = bob_staff.post(reverse("admin:imap_account_add"), account_form(
        display_name="Bob's", email="bob@example.test", owner=alice.pk, members=[alice.pk], username="bob"))
    assert response.status_code == 302, response.content.decode()[:2000]
    account = Account.objects.get(username="bob")
    assert account.owner == bob and list(account.members.all()) == []


@pytest.mark.django_db
def test_bob_cannot_see_or_target_alices_account_from_the_folder_admin(bob_staff, alices_account):
    page = bob_staff.get(reverse("admin:imap_folder_add")).content.decode()
    assert "Alice at work" not in page and "alice.secret@example.test" not in page
    response = bob_staff.post(reverse("admin:imap_folder_add"), {
        "account": alices_account.pk, "name": "Trash", "delimiter": "/", "special_use": "\\Trash",
        "selectable": "on", "present": "on"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Folder.objects.filter(account=alices_account).exists()


@pytest.mark.django_db
def test_a_superuser_still_chooses_owners_and_members(admin_client, alice, bob):
    response = admin_client.post(reverse("admin:imap_account_add"), account_form(
        display_name="Shared", email="team@example.test", owner=alice.pk, members=[bob.pk], username="team"))
    assert response.status_code == 302, response.content.decode()[:2000]
    account = Account.objects.get(username="team")
    assert account.owner == alice and list(account.members.all()) == [bob]


@pytest.mark.django_db
def test_bobs_subscriber_form_offers_only_his_services(client, alice, bob):
    Service.objects.create(owner=alice, kind="smtp", name="Alice relay")
    Service.objects.create(owner=bob, kind="smtp", name="Bob relay")
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(*Permission.objects.filter(content_type__app_label="pipeline"))
    client.force_login(bob)
    page = client.get(reverse("admin:pipeline_subscriber_add"))
    assert page.status_code == 200
    assert "Bob relay" in page.content.decode() and "Alice relay" not in page.content.decode()


@pytest.mark.django_db
def test_django_qs_schedules_and_task_results_are_for_superusers_only(bob, client, admin_client):
    # A Schedule runs any importable function as the worker: not even a granted permission opens it.
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(*Permission.objects.filter(content_type__app_label="django_q"))
    client.force_login(bob)
    pages = [reverse(f"admin:django_q_{model}_{view}") for model in ("schedule", "success", "failure", "ormq")
             for view in ("changelist", "add")]
    for url in pages:
        assert client.get(url).status_code == 403, url
    index = client.get(reverse("admin:index")).content.decode()
    assert "django_q" not in index and "Scheduled tasks" not in index
    posted = client.post(reverse("admin:django_q_schedule_add"), {
        "func": "os.system", "args": "'touch /tmp/owned'", "schedule_type": "O", "repeats": "-1"})
    assert posted.status_code == 403
    from django_q.models import Schedule
    assert not Schedule.objects.filter(func="os.system").exists()
    # A superuser keeps django_q's pages as they were (the queue admin still offers no "add").
    for model in ("schedule", "success", "failure", "ormq"):
        assert admin_client.get(reverse(f"admin:django_q_{model}_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:django_q_schedule_add")).status_code == 200
    assert admin_client.get(reverse("admin:django_q_ormq_add")).status_code == 403
