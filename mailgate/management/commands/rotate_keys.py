from django.core.management.base import BaseCommand, CommandError

from mailgate.rotation import rotate_all


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret (account passwords, service and channel secrets) with the "
            "newest key in MAILGATE_FERNET_KEYS; prints how many. Secrets no key decrypts are marked for "
            "re-entry and make the command exit non-zero.")

    def handle(self, *args, **options):
        result = rotate_all()
        detail = ", ".join(f"{label} {count}" for label, count in result.rotated.items())
        self.stdout.write(f"re-encrypted {result.total} secrets with the newest key ({detail})")
        if result.total_unreadable:
            which = "; ".join(f"{label} ids {', '.join(map(str, ids))}" for label, ids in result.unreadable.items())
            raise CommandError(
                f"{result.total_unreadable} secrets do not decrypt with any configured key and were marked "
                f"for re-entry ({which})"
            )
