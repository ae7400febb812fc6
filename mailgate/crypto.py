"""Encryption at rest for credentials that must be reversible (IMAP passwords, API tokens).

MultiFernet: the first key encrypts, every key decrypts, so keys rotate without downtime
(`manage.py rotate_keys` re-encrypts everything with the newest key).
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialsUnreadable(Exception):
    """Stored ciphertext does not decrypt with any configured key: the owner must re-enter it."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.MAILGATE_FERNET_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    if not token:
        raise CredentialsUnreadable("no credentials stored")
    try:
        return fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        raise CredentialsUnreadable("stored credentials do not decrypt with the configured keys") from None


def rotate(token: str) -> str:
    """Re-encrypt with the newest key. Raises CredentialsUnreadable like decrypt()."""
    try:
        return fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError, ValueError):
        raise CredentialsUnreadable("stored credentials do not decrypt with the configured keys") from None
