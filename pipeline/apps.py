from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Pipeline"

    def ready(self):
        from pipeline.schedules import ensure_schedules

        def after_migrate(sender, **kwargs):
            # Once per migrate, after django_q's tables exist.
            if sender.name == "django_q":
                ensure_schedules()

        post_migrate.connect(after_migrate, dispatch_uid="pipeline.ensure_schedules")
