from django.apps import AppConfig


class ImapConfig(AppConfig):
    name = "imap"
    verbose_name = "IMAP ingestion"

    def ready(self):
        from django.db.models.signals import post_migrate

        from imap import idle_autostart
        from imap.tasks import ensure_schedules

        # Keeps the periodic "sync all accounts" django-q Schedule in step with MAILGATE_SYNC_INTERVAL.
        post_migrate.connect(ensure_schedules, sender=self, dispatch_uid="imap.ensure_schedules")

        idle_autostart.maybe_start()
