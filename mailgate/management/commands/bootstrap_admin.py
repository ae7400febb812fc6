import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first admin user unless a superuser exists (password from MAILGATE_ADMIN_PASSWORD or generated and printed once)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, username, email, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin user exists")
            return
        password = settings.MAILGATE_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        User.objects.create_superuser(username, email, password)
        if settings.MAILGATE_ADMIN_PASSWORD:
            self.stdout.write(f"created admin user {username!r} with the password from MAILGATE_ADMIN_PASSWORD")
        else:
            # Printed exactly once: it is not stored anywhere in clear.
            self.stdout.write(self.style.WARNING(
                f"created admin user {username!r} with password {password}  (shown once; change it in /admin/)"
            ))
