"""django_q's admin pages (schedules, task results, the queue) for superusers only.

A Schedule names any importable function and its arguments, and the cluster calls it
(`pydoc.locate`): whoever may add or change one runs any code as the worker. Successes and failures
show every tenant's task arguments and results. So a staff tenant gets none of these pages, whatever
permissions they hold; django_q's own admin classes are kept for superusers.
"""

from django.contrib import admin
from django_q.models import Failure, OrmQ, Schedule, Success


class _SuperusersOnly:
    """Mixed in front of a django_q admin class: its own rules apply, and only for superusers."""

    def has_module_permission(self, request):
        return request.user.is_superuser and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args):
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)


# django_q (before mailgate in INSTALLED_APPS) has registered its admins by now; admin autodiscovery
# imports this module after it.
for _model in (Schedule, Success, Failure, OrmQ):
    if admin.site.is_registered(_model):
        _stock = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(_model, type(f"SuperusersOnly{_stock.__name__}", (_SuperusersOnly, _stock), {}))


# Our name on every admin page instead of "Django administration".
admin.site.site_header = "mailgate administration"
admin.site.site_title = "mailgate admin"
admin.site.index_title = "Administration"
