from django.core.management.base import BaseCommand

from pipeline.sweeper import sweep


class Command(BaseCommand):
    help = "Re-enqueue pipeline work left behind (what the scheduled sweeper does), once."

    def handle(self, *args, **options):
        counts = sweep()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in counts.items()))
