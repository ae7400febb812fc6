from django.apps import AppConfig


class MailgateConfig(AppConfig):
    name = "mailgate"
    verbose_name = "mailgate"

    def ready(self):
        from mailgate import checks  # noqa: F401  (registers the system checks)
        from mailgate import metrics

        # Every process of the install starts here (web, worker, IDLE manager, commands).
        metrics.clean_dead_processes()
