from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_search(sender, using="default", **kwargs):
    from frontend import search

    search.install(using)


class FrontendConfig(AppConfig):
    name = "frontend"
    verbose_name = "Web UI"

    def ready(self):
        # post_migrate, not a migration: tests build tables with --nomigrations (see search.py).
        post_migrate.connect(_install_search, sender=self, dispatch_uid="frontend.search.install")
