import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailgate import embedded_redis


class Command(BaseCommand):
    help = ("The embedded Redis used when REDIS_URL is not set. Every mailgate process starts or joins "
            "it on its own and it stops a few seconds after the last one exits; `start` holds it in "
            "the foreground until interrupted, `stop` stops it at once, `status` tells.")

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args, action, **options):
        if settings.REDIS_URL:
            raise CommandError("REDIS_URL is set: mailgate uses that server, not the embedded one")
        sock = settings.MAILGATE_EMBEDDED_REDIS_SOCKET
        if action == "start":
            started = embedded_redis.ensure_running(sock)
            self.stdout.write(f"embedded Redis {'started' if started else 'already running'} at {sock}; "
                              f"held until Ctrl-C")
            self.stdout.flush()
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                signal.pause()
            except KeyboardInterrupt:
                self.stdout.write("released the embedded Redis: it stops once no other process uses it")
        elif action == "stop":
            stopped = embedded_redis.stop(sock)
            self.stdout.write("embedded Redis stopped" if stopped else "embedded Redis was not running")
        else:
            running = embedded_redis.answers(sock)
            pid = embedded_redis.server_pid(sock) if running else None
            self.stdout.write(f"running (pid {pid}) at {sock}" if running else "stopped")
            if not running:
                raise SystemExit(1)
