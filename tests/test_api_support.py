"""Builders shared by the web UI tests (test_api*.py, test_frontend*.py, test_access.py).

No tests here: rows are created straight through the ORM, shaped like the sync and standardize
stages leave them, so the UI can be tested while those stages are built.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from django.core.files.base import ContentFile

from imap.models import Account, Folder, MessageLocation
from pipeline.models import Attachment, Message

_numbers = itertools.count(1)
BASE_DATE = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def make_account(owner, *, name="Work", host="127.0.0.1", port=993, username=None, password="secret",
                 security=Account.Security.SSL, members=(), folders=("INBOX", "Archive", "Trash")) -> Account:
    n = next(_numbers)
    account = Account(owner=owner, display_name=f"{name} {n}", email=f"{owner.username}{n}@example.test",
                      host=host, port=port, security=security, username=username or f"{owner.username}{n}")
    account.set_password(password)
    account.save()
    account.members.add(*members)
    for folder in folders:
        Folder.objects.create(account=account, name=folder, uidvalidity=1,
                              special_use="\\Trash" if folder == "Trash" else "")
    return account


def make_message(owner, account=None, *, subject="Hello", sender="carol@example.test", date=None, flags=(),
                 text="Body text", html="", folder="INBOX", uid=None, uidvalidity=1, status="standardized",
                 has_attachments=False, thread=None, **fields) -> Message:
    n = next(_numbers)
    folder_row = Folder.objects.get(account=account, name=folder) if account else None
    message = Message.objects.create(
        owner=owner, account=account, folder=folder_row, source="imap" if account else "import",
        identity=f"test-{n}", message_id=f"<m{n}@example.test>", subject=subject, sender_name="Carol",
        sender_address=sender, date=date if date is not None else BASE_DATE + timedelta(minutes=n),
        text_body=text, html_body=html, snippet=text[:100], flags=list(flags), status=status,
        has_attachments=has_attachments, thread=thread, **fields)
    if account:
        MessageLocation.objects.create(account=account, folder=folder_row, message=message,
                                       uidvalidity=uidvalidity, uid=uid if uid is not None else n,
                                       flags=list(flags))
    return message


def make_attachment(message, *, filename="report.html", content_type="text/html",
                    content=b"<script>alert(1)</script>") -> Attachment:
    attachment = Attachment(message=message, position=message.attachments.count(), filename=filename,
                            content_type=content_type, size=len(content), sha256="0" * 64)
    attachment.file.save(filename, ContentFile(content), save=False)
    attachment.save()
    Message.objects.filter(pk=message.pk).update(has_attachments=True)
    return attachment
