"""Secrets that must exist before Django starts: SECRET_KEY and the Fernet keys.

On a loopback-only install (ALLOWED_HOSTS names only loopback hosts and no DATABASE_URL is set:
a laptop) with nothing configured we generate each secret once into the data dir (mode 0600) and
warn loudly, so it runs with no manual step and keeps the same keys across restarts, DEBUG on or
off. Regenerating them would be harmful: a new SECRET_KEY makes django-q2 drop every queued task
signed with the old one, and a new Fernet key leaves every stored password unreadable.
Anywhere else a generated key would sit next to the data it protects (a backup of the data dir
would carry both), so a missing or malformed secret stops start-up with one line that says what
to set.
"""

import base64
import binascii
import os
import secrets
import sys
from pathlib import Path


class StartupError(SystemExit):
    """Raised from settings: SystemExit prints just our one-line message, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"mailgate: {message}")


def _warn(message: str) -> None:
    print(f"\n*** mailgate WARNING: {message} ***\n", file=sys.stderr)


def _generate_once(path: Path, make) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when web, worker and IDLE processes start together only one writes the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = make()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    _warn(f"generated {path} for development; set the variable from a secret store in production")
    return value


def validate_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32 and len(key) == 44
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


def new_fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def exposure(allowed_hosts, database_url: str) -> str:
    """Why this install is not loopback-only ("" when it is): what makes generated keys unsafe."""
    public = [host for host in allowed_hosts if host.lower() not in LOOPBACK_HOSTS]
    if public:
        return f"ALLOWED_HOSTS names {public[0]}"
    if database_url:
        return "DATABASE_URL is set"
    return ""


def fernet_keys(raw: str, *, exposed: str, data_dir: Path) -> list[str]:
    """The configured keys, newest first; generated once on a loopback-only install (`exposed`
    is "") when none are set."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        if exposed:
            raise StartupError(
                f"MAILGATE_FERNET_KEYS is not set ({exposed}); generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
            )
        keys = [_generate_once(data_dir / "fernet.key", new_fernet_key)]
    for position, key in enumerate(keys, start=1):
        if not validate_fernet_key(key):
            raise StartupError(
                f"MAILGATE_FERNET_KEYS entry {position} is not a Fernet key (44 url-safe base64 characters)"
            )
    return keys


def secret_key(raw: str, *, exposed: str, data_dir: Path) -> str:
    if raw:
        if exposed and len(raw) < 50:
            raise StartupError("SECRET_KEY is shorter than 50 characters; use a long random value")
        return raw
    if exposed:
        raise StartupError(f"SECRET_KEY is not set (or SECRET_KEY_FILE); it must be set because {exposed}")
    return _generate_once(data_dir / "secret.key", lambda: secrets.token_urlsafe(50))
