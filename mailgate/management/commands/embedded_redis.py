from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailgate import embedded_redis


class Command(BaseCommand):
    help = "Start or stop the embedded Redis used when REDIS_URL is not set."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args, action, **options):
        if settings.REDIS_URL:
            raise CommandError("REDIS_URL is set: mailgate uses that server, not the embedded one")
        sock = settings.MAILGATE_EMBEDDED_REDIS_SOCKET
        if action == "start":
            started = embedded_redis.ensure_running(sock)
            self.stdout.write(f"embedded Redis {'started' if started else 'already running'} at {sock}")
        elif action == "stop":
            stopped = embedded_redis.stop(sock)
            self.stdout.write("embedded Redis stopped" if stopped else "embedded Redis was not running")
        else:
            running = embedded_redis.answers(sock)
            self.stdout.write("running" if running else "stopped")
            if not running:
                raise SystemExit(1)
