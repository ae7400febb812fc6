from django.core.management.base import BaseCommand

from pipeline import orphans
from pipeline.retention import purge


class Command(BaseCommand):
    help = "Remove messages older than MAILGATE_RETENTION_DAYS whose deliveries are all final."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be removed.")

    def handle(self, *args, dry_run=False, **options):
        counts = purge(dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(f"{verb} {counts['messages']} messages, {counts['attachments']} attachments, "
                          f"{counts['raw_files']} raw files ({counts['bytes']} bytes of raw mail).")
        swept = orphans.sweep(dry_run=dry_run)
        self.stdout.write(f"{verb} {swept['orphans']} stored objects no message points to "
                          f"({swept['bytes']} bytes; {swept['checked']} objects checked).")
