from django.core.management.base import BaseCommand, CommandError

from imap.accounts import check_connection
from imap.models import Account


class Command(BaseCommand):
    help = ("Log in to an account's IMAP server and list its folders. Exit 0 with the folder count, or "
            "non-zero with one line naming the cause (name not resolved, connection refused, TLS failure, "
            "authentication failed, timeout, ...). The result is recorded on the account.")

    def add_arguments(self, parser):
        parser.add_argument("account_id", type=int)
        parser.add_argument("--timeout", type=float, help="seconds in total (default MAILGATE_IMAP_TIMEOUT)")
        parser.add_argument("--list", action="store_true", dest="list_folders", help="also print each folder name")

    def handle(self, *args, account_id, timeout, list_folders, **options):
        try:
            account = Account.objects.get(pk=account_id)
        except Account.DoesNotExist:
            raise CommandError(f"no account with id {account_id}") from None
        report = check_connection(account, timeout=timeout)
        if not report.ok:
            # One plain line on stderr (no "CommandError:" prefix) for people and scripts alike.
            self.stderr.write(f"{account.email}: {report.message}")
            raise SystemExit(1)
        self.stdout.write(f"{account.email}: ok, {len(report.folders)} folders")
        if list_folders:
            for name in report.folders:
                self.stdout.write(name)
