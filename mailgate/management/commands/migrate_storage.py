"""manage.py migrate_storage --to URL [--dry-run]: copy every stored object to another storage."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailgate import env, storage, storage_copy, storage_url


class Command(BaseCommand):
    help = ("Copy every raw message and attachment from the storage in use to the one URL names "
            "(s3://BUCKET/PREFIX with the MAILGATE_S3_* variables, or file:///path), verifying each by "
            "sha256. Objects already there with the same digest are skipped, so it can be run again.")

    def add_arguments(self, parser):
        parser.add_argument("--to", required=True, metavar="URL", help="the new storage, as MAILGATE_STORAGE_URL")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be copied")

    def handle(self, *args, to, dry_run=False, **options):
        if not to.strip():
            raise CommandError("--to is empty: give s3://BUCKET/PREFIX or file:///path")
        try:
            config = storage_url.from_env(to, files_dir=settings.MEDIA_ROOT, variable="--to")
        except (storage_url.StorageConfigError, env.EnvError) as exc:
            raise CommandError(str(exc)) from None
        if config == settings.MAILGATE_STORAGE:
            raise CommandError(f"--to names the storage in use ({config.describe()}): nothing to copy")
        target = storage.for_config(config)
        try:
            storage_copy.probe(target)
        except storage_copy.CopyError as exc:
            raise CommandError(f"{config.describe()}: {exc}") from None
        source = storage.default()
        self.stdout.write(f"{'Checking' if dry_run else 'Copying'} objects to {config.describe()}")
        report = storage_copy.copy_all(source, target, dry_run=dry_run)
        verb = "Would copy" if dry_run else "Copied"
        self.stdout.write(f"{verb} {report.copied} objects ({report.bytes} bytes); {report.present} already there "
                          f"and verified; {len(report.failed)} failed.")
        for name, reason in report.failed[:20]:
            self.stderr.write(f"  {name}: {reason}")
        if report.failed:
            more = " (first 20 above)" if len(report.failed) > 20 else ""
            raise CommandError(f"{len(report.failed)} objects were not copied{more}; run it again once fixed. "
                               f"Keep MAILGATE_STORAGE_URL as it is until a run ends with 0 failed.")
