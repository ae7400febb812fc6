"""manage.py reindex_vectors [--account ID]: embed existing mail (a first install of semantic search,
a changed model, or pending work whose tasks were lost), with a progress bar on a terminal."""

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from pipeline.models import Message
from pipeline.semantic import embed


class Command(BaseCommand):
    help = "Embed every standardized message again (of one account, or all) for semantic search."

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, help="only this account's messages (its id)")

    def handle(self, *args, **opts):
        account_id = opts["account"]
        messages = Message.objects.exclude(status__in=embed.NOT_READY)
        if account_id is not None:
            # Not imap.Account: pipeline sits below imap. A message row names its account id.
            if not Message.objects.filter(account_id=account_id).exists():
                from django.apps import apps

                if not apps.get_model("imap", "Account").objects.filter(pk=account_id).exists():
                    raise CommandError(f"no account with id {account_id}")
            messages = messages.filter(account_id=account_id)
        total = messages.count()
        bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="msg", desc="reindex_vectors", dynamic_ncols=True)
        started = time.monotonic()
        try:
            done = embed.reindex(account_id, progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.monotonic() - started
        self.stdout.write(f"embedded {done} messages in {elapsed:.1f} s")
