"""`manage.py sync [--account ID | --all] [--folder NAME]`: batch sync in this process, no worker.

Shows a progress bar on a terminal only and ends with one JSON line (for scripts and CI):
{"account": ..., "folders": ..., "new": ..., "updated": ..., "expunged": ..., "skipped_large": ...,
 "bytes": ..., "seconds": ...}. With --all, "account" is the list of account ids and the counts are
totals. Backoff is ignored (the operator asked for it now); a stopped account (wrong password) is not.
"""

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from imap.models import Account
from imap.sync import Stats, sync_account_now


class Command(BaseCommand):
    help = "Sync IMAP folders now, in this process (no worker needed)."

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--account", type=int, help="account id")
        who.add_argument("--all", action="store_true", help="every enabled account")
        parser.add_argument("--folder", action="append", help="only this folder (repeatable; Unicode name)")
        parser.add_argument("--flags-only", action="store_true", help="only flags and expunges")

    def handle(self, *args, **opts):
        if opts["all"]:
            accounts = list(Account.objects.filter(enabled=True).order_by("pk"))
        else:
            accounts = list(Account.objects.filter(pk=opts["account"]))
            if not accounts:
                raise CommandError(f"no account with id {opts['account']}")
        bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            bar = tqdm(unit="msg", desc="sync", dynamic_ncols=True)
        started = time.monotonic()
        total, errors = Stats(), []
        try:
            for account in accounts:
                if bar is not None:
                    bar.set_description(f"sync {account.email}")
                report = sync_account_now(account, folder_names=opts["folder"], flags_only=opts["flags_only"],
                                          progress=bar.update if bar is not None else None,
                                          ignore_backoff=True)
                total.add(report.stats)
                errors += [f"account {account.pk}: {e}" for e in report.errors]
        finally:
            if bar is not None:
                bar.close()
        for error in errors:
            self.stderr.write(error)
        line = {"account": opts["account"] if not opts["all"] else [a.pk for a in accounts],
                "folders": total.folders, "new": total.new, "updated": total.updated, "expunged": total.expunged,
                "skipped_large": total.skipped_large, "bytes": total.bytes,
                "seconds": round(time.monotonic() - started, 3), "bodies": total.bodies,
                "errors": len(errors)}
        self.stdout.write(json.dumps(line))
        if errors:
            sys.exit(1)
