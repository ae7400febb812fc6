import getpass
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError

from imap.accounts import create_account
from imap.models import Account
from imap.oauth import grants, providers


def read_password(password_file: str | None, stdin) -> str:
    """The password from --password-file, a prompt on a terminal, or the first line of stdin.

    Never from an argument: command lines are visible to every user in `ps` and land in shell history.
    """
    if password_file:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read --password-file {password_file}: {exc.strerror}") from None
        return text.rstrip("\r\n")
    if stdin.isatty():
        return getpass.getpass("IMAP password: ")
    return stdin.readline().rstrip("\r\n")


class Command(BaseCommand):
    help = ("Add an IMAP account. The password comes from stdin (first line) or --password-file and is "
            "stored encrypted; with --oauth PROVIDER the account signs in with a refresh token obtained "
            "elsewhere (--refresh-token-file, or stdin) on the provider's IMAP server. Prints the new "
            "account's id.")

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, help="username of the Django user who owns the account")
        parser.add_argument("--email", required=True)
        parser.add_argument("--host", help="the IMAP server (required without --oauth)")
        parser.add_argument("--port", type=int, help="default 993 for ssl, 143 otherwise")
        parser.add_argument("--security", choices=Account.Security.values, default=Account.Security.SSL)
        parser.add_argument("--username", default="", help="IMAP login (default: the email address)")
        parser.add_argument("--display-name", default="")
        parser.add_argument("--password-file", help="file whose content (one line) is the password")
        parser.add_argument("--folder", action="append", dest="folders", default=[],
                            help="a folder to sync (repeatable; default: every selectable folder)")
        parser.add_argument("--disabled", action="store_true", help="add it without connecting yet")
        parser.add_argument("--oauth", choices=sorted(providers.PROVIDERS),
                            help="sign in with OAuth2 through this configured provider")
        parser.add_argument("--refresh-token-file", help="with --oauth: file whose content is the refresh token")

    def handle(self, *args, **opts):
        User = get_user_model()
        try:
            owner = User.objects.get(username=opts["owner"])
        except User.DoesNotExist:
            raise CommandError(f"no user named {opts['owner']!r}") from None
        if opts["oauth"]:
            return self._add_oauth(owner, opts)
        if not opts["host"]:
            raise CommandError("--host is required (or --oauth PROVIDER)")
        password = read_password(opts["password_file"], sys.stdin)
        try:
            account = create_account(
                owner=owner, email=opts["email"], host=opts["host"], port=opts["port"],
                security=opts["security"], username=opts["username"], display_name=opts["display_name"],
                password=password, folders_include=opts["folders"], enabled=not opts["disabled"],
            )
        except ValidationError as exc:
            raise CommandError(f"account not added: {_problems(exc)}") from None
        self.stdout.write(str(account.pk))

    def _add_oauth(self, owner, opts):
        try:
            provider = providers.get(opts["oauth"])
        except providers.ProviderNotConfigured as exc:
            raise CommandError(str(exc)) from None
        refresh_token = read_password(opts["refresh_token_file"], sys.stdin).strip()
        try:
            account = grants.connect_account(
                owner=owner, provider=provider, token={"refresh_token": refresh_token}, email=opts["email"],
                display_name=opts["display_name"], folders_include=opts["folders"], enabled=not opts["disabled"])
        except ValidationError as exc:
            raise CommandError(f"account not added: {_problems(exc)}") from None
        self.stdout.write(str(account.pk))


def _problems(exc: ValidationError) -> str:
    """The errors in one line, each field's named (not one about the whole account)."""
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    return "; ".join(" ".join(msgs) if name == NON_FIELD_ERRORS else f"{name}: {' '.join(msgs)}"
                     for name, msgs in exc.message_dict.items())
