"""Shared fixtures: named personas and the real servers (tests/servers/)."""

import pytest

# leftovers first: the others import it. It fails the run if a process the run started outlives it.
pytest_plugins = ["tests.servers.leftovers", "tests.servers.fixtures", "tests.servers.web", "tests.servers.browser",
                  "tests.servers.oauth_fixtures"]


@pytest.fixture
def alice(django_user_model):
    """Owns accounts and services in most tests."""
    return django_user_model.objects.create_user("alice", "alice@example.test", "alice-password")


@pytest.fixture
def bob(django_user_model):
    """Another user on the same install; sees nothing of Alice's unless made a member."""
    return django_user_model.objects.create_user("bob", "bob@example.test", "bob-password")


@pytest.fixture
def charlie(django_user_model):
    """A user with no access to anything."""
    return django_user_model.objects.create_user("charlie", "charlie@example.test", "charlie-password")


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.test", "admin-password")
