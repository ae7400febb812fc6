"""Tables for a process outside pytest (a bench, an install the test starts): straight from the
models, as the test suite makes them, with no migration history to replay."""


class _NoMigrations(dict):
    """MIGRATION_MODULES that says "no migrations" for every app, Django's own included."""

    def __contains__(self, item):
        return True

    def __getitem__(self, item):
        return None


def create_tables_from_models() -> None:
    """Create every model's table in the configured database (django.setup() done first)."""
    from django.conf import settings
    from django.core.management import call_command

    settings.MIGRATION_MODULES = _NoMigrations()
    call_command("migrate", run_syncdb=True, verbosity=0)
