from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_migrate


def _install_search(sender, using="default", **kwargs):
    from frontend import search

    search.install(using)


def _close_live_sockets(sender, request=None, user=None, **kwargs):
    from mailgate.realtime import end_session

    # Sent before the session is flushed, so its key still names the sockets opened with it.
    if request is not None:
        end_session(request.session.session_key)


class FrontendConfig(AppConfig):
    name = "frontend"
    verbose_name = "Web UI"

    def ready(self):
        # post_migrate, not a migration: tests build tables with --nomigrations (see search.py).
        post_migrate.connect(_install_search, sender=self, dispatch_uid="frontend.search.install")
        # A signal, because logout happens in Django's views (the UI's and the admin's).
        user_logged_out.connect(_close_live_sockets, dispatch_uid="frontend.close_live_sockets")
