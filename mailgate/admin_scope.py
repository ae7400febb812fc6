"""Django admin for staff users who are not superusers: their own rows only.

The user-facing pages also show an account's members its mail (frontend/access.py); the admin is
for owners, so here a row is the user's when they own it (or own the account it belongs to).
"""

from django.db.models import Q


def owned(queryset, user, condition: Q | None = None):
    """All rows for a superuser; for anyone else the rows matching `condition` (default: owner)."""
    if user.is_superuser:
        return queryset
    return queryset.filter(condition if condition is not None else Q(owner=user))


def has_owner(model) -> bool:
    return any(field.name == "owner" for field in model._meta.fields)
