"""Re-encrypt every stored secret with the newest Fernet key (`manage.py rotate_keys`).

Rotation procedure: put the new key first in MAILGATE_FERNET_KEYS (old keys after it), restart,
run `rotate_keys`, then drop the old keys. A secret no configured key decrypts is left as it is
and its row is marked so the owner re-enters it; nothing is ever re-encrypted from garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from mailgate import crypto


@dataclass
class RotationResult:
    rotated: dict[str, int] = field(default_factory=dict)  # label -> rows re-encrypted
    unreadable: dict[str, list[int]] = field(default_factory=dict)  # label -> ids left for re-entry

    @property
    def total(self) -> int:
        return sum(self.rotated.values())

    @property
    def total_unreadable(self) -> int:
        return sum(len(ids) for ids in self.unreadable.values())


def _encrypted_fields():
    """(label, model, field) for every column holding a Fernet token."""
    from imap.models import Account
    from inbound.models import InboundChannel
    from outgoing.models import Service

    return [
        ("accounts", Account, "password_encrypted"),
        ("services", Service, "secrets_encrypted"),
        ("inbound channels", InboundChannel, "secrets_encrypted"),
    ]


def _mark_unreadable(model, ids: list[int]) -> None:
    from imap.accounts import mark_unreadable
    from imap.models import Account

    if model is Account:
        mark_unreadable(ids)
    elif hasattr(model, "last_error"):
        model.objects.filter(pk__in=ids).update(
            last_error="stored secrets cannot be decrypted with the configured keys; enter them again",
            last_error_at=timezone.now(),
        )


def rotate_all() -> RotationResult:
    result = RotationResult()
    for label, model, column in _encrypted_fields():
        rotated, unreadable = 0, []
        rows = model.objects.exclude(**{column: ""}).values_list("pk", column)
        for pk, token in rows.iterator():
            try:
                new_token = crypto.rotate(token)
            except crypto.CredentialsUnreadable:
                unreadable.append(pk)
                continue
            # Compare-and-set: a password changed while we ran keeps its new value.
            rotated += model.objects.filter(pk=pk, **{column: token}).update(**{column: new_token})
        if unreadable:
            _mark_unreadable(model, unreadable)
        result.rotated[label] = rotated
        if unreadable:
            result.unreadable[label] = unreadable
    return result
