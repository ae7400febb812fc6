"""Django admin for staff users who are not superusers: their own rows only.

The user-facing pages also show an account's members its mail (frontend/access.py); the admin is
for owners, so here a row is the user's when they own it (or own the account it belongs to).
"""

from django.contrib import admin
from django.db.models import Q


def owned(queryset, user, condition: Q | None = None):
    """All rows for a superuser; for anyone else the rows matching `condition` (default: owner)."""
    if user.is_superuser:
        return queryset
    return queryset.filter(condition if condition is not None else Q(owner=user))


def has_owner(model) -> bool:
    return any(field.name == "owner" for field in model._meta.fields)


def scoped_choices(db_field, request, kwargs) -> dict:
    """A non-superuser picks only among their own accounts, channels, services (never another
    owner's, whose ids would otherwise show in the form)."""
    model = db_field.remote_field.model
    if not request.user.is_superuser and has_owner(model):
        kwargs["queryset"] = owned(model._default_manager.all(), request.user)
    return kwargs


class OwnerScopedAdmin(admin.ModelAdmin):
    """A staff user who is not a superuser sees and acts on their own rows only, as in the UI: lists,
    actions and change pages (another owner's id is "not found"), form choices, and new rows are
    theirs. `owner_filter(user)` says which rows are the user's."""

    def owner_filter(self, user) -> Q:
        return Q(owner=user)

    def get_changeform_initial_data(self, request):
        # The owner is required: a new row starts as the user's own (as a Service's does).
        initial = super().get_changeform_initial_data(request)
        if has_owner(self.model):
            initial.setdefault("owner", request.user.pk)
        return initial

    def get_queryset(self, request):
        return owned(super().get_queryset(request), request.user, self.owner_filter(request.user))

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser and "owner" not in fields and has_owner(self.model):
            fields.append("owner")  # set to the user on save
        return fields

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser and not change:
            obj.owner = request.user
        super().save_model(request, obj, form, change)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return super().formfield_for_foreignkey(db_field, request, **scoped_choices(db_field, request, kwargs))

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        return super().formfield_for_manytomany(db_field, request, **scoped_choices(db_field, request, kwargs))
