from django.apps import AppConfig


class SemanticConfig(AppConfig):
    name = "pipeline.semantic"
    label = "semantic"
    verbose_name = "Semantic search"
    default_auto_field = "django.db.models.BigAutoField"
