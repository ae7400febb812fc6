"""`manage.py import_mail --account ID PATH...`: import .eml files, mbox files and Maildir folders.

Every message goes through pipeline.ingest.ingest_raw into the account's "Imported" folder with the
identity sync uses (imap/identity.py), so importing the same file twice stores one message, and a
message that sync already stored is recognised. Imported mail is history: stored and searchable,
never relayed to subscribers, unless --relay is given. Ends with one JSON line of counts.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from imap.importer import import_paths
from imap.models import Account


class Command(BaseCommand):
    help = "Import .eml files, mbox files and Maildir folders into an account's Imported folder."

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, required=True, help="account id")
        parser.add_argument("--relay", action="store_true",
                            help="relay the imported mail to subscribers (by default it is history: kept, not relayed)")
        parser.add_argument("paths", nargs="+", metavar="PATH")

    def handle(self, *args, **opts):
        account = Account.objects.filter(pk=opts["account"]).first()
        if account is None:
            raise CommandError(f"no account with id {opts['account']}")
        try:
            result = import_paths(account, opts["paths"], relay=opts["relay"])
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
        for error in result["errors"]:
            self.stderr.write(error)
        self.stdout.write(json.dumps({**result, "errors": len(result["errors"])}))
