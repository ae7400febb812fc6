"""Builders shared by more than one test module: rows, raw mail and requests, made the way the code
under test would find them.

Test modules import these from here, never from each other (tests/test_layers.py keeps it so). A
helper one module alone uses stays in that module; the named personas (alice, bob, charlie) stay in
tests/conftest.py as fixtures. Each builder's name says what it builds, so two of them never share a
name: `stored_message` (a standardized row), `import_message` (a plain imported row) and
`raw_message` (bytes for a Maildir) are three different things.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import itertools
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from django.core.files.base import ContentFile
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from imap import leases, utf7
from imap.accounts import create_account
from imap.models import Account, Folder, MessageLocation
from imap.sync import sync_account_now
from inbound.models import InboundChannel
from outgoing import signatures
from outgoing.models import Service
from outgoing.registry import transport_for
from pipeline import clock, tasks
from pipeline.ingest import ingest_raw, read_raw
from pipeline.models import Attachment, Delivery, Message, Route, Subscriber, Subscription
from tests.servers.procs import ROOT

# One counter for every builder, so identities, names and UIDs never collide within a test.
_numbers = itertools.count(1)


# --- rows for the web UI: shaped like the sync and standardize stages leave them ----------------

BASE_DATE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


PNG = _png_1x1()
"""A valid 1x1 red PNG, enough for a browser to decode."""


def account_row(owner, *, name="Work", host="127.0.0.1", port=993, username=None, password="secret",
                security=Account.Security.SSL, members=(), folders=("INBOX", "Archive", "Trash"),
                enabled=True) -> Account:
    """An account row with its folders, as after a first sync; no server behind it."""
    n = next(_numbers)
    account = Account(owner=owner, display_name=f"{name} {n}", email=f"{owner.username}{n}@example.test",
                      host=host, port=port, security=security, username=username or f"{owner.username}{n}",
                      enabled=enabled)
    account.set_password(password)
    account.save()
    account.members.add(*members)
    for folder in folders:
        Folder.objects.create(account=account, name=folder, uidvalidity=1,
                              special_use="\\Trash" if folder == "Trash" else "")
    return account


def stored_message(owner, account=None, *, subject="Hello", sender="carol@example.test", date=None, flags=(),
                   text="Body text", html="", folder="INBOX", uid=None, uidvalidity=1, status="standardized",
                   has_attachments=False, thread=None, **fields) -> Message:
    """A standardized message, with its location in `folder` of `account` (an import without one);
    each one a minute newer than the last."""
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


def failed_delivery(owner, message, status=Delivery.Status.FAILED, name="Ops email") -> Delivery:
    """A delivery tried three times that ended in `status`, over the SMTP service called `name`."""
    service = Service.objects.get_or_create(owner=owner, name=name, defaults={"kind": Service.Kind.SMTP})[0]
    subscriber = Subscriber.objects.create(owner=owner, name="Ops")
    subscription = Subscription.objects.create(subscriber=subscriber, service=service, address="ops@example.test")
    return Delivery.objects.create(message=message, subscription=subscription, service=service,
                                   address="ops@example.test", status=status, not_before=timezone.now(),
                                   attempts=3, last_error="550 mailbox unavailable")


def lease_and_connect(account, owner="host-a:4242:beef"):
    """What an IDLE manager does: claim the lease, idle, read a push, lose the connection once and
    get it back."""
    assert leases.claim(owner, [account.pk], 1) == [account.pk]
    assert leases.record_disconnected(owner, account.pk, "connection lost: BYE server shutting down")
    assert leases.record_connected(owner, account.pk)
    leases.record_push(owner, account.pk, received_at=BASE_DATE)
    return owner


# --- the pipeline: raw mail in, stages run as the worker runs them --------------------------------

def eml(subject="Quarterly numbers", sender="Dora <dora@example.test>", to="team@example.test", body="Hi all,\n",
        headers=None, attachment=None, message_id=None, in_reply_to=None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 03 Mar 2025 10:00:00 +0000"
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        filename, data = attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return msg.as_bytes()


def mail_from_carol(subject: str, body: str | None = None,
                    date: str | None = "Thu, 01 Jan 2026 12:00:00 +0000") -> bytes:
    """Carol's plain message to Alice, dated `date` (no Date header if None), with a Message-ID made
    from `subject` (the same subject is the same message); its body says "About <subject>" unless
    `body` is given."""
    msg = EmailMessage()
    msg["From"] = "Carol <carol@example.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = date
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.test>"
    msg.set_content(f"About {subject}" if body is None else body)
    return msg.as_bytes()


def ingest(owner, raw: bytes) -> Message:
    """A received message, stored as an import would store it."""
    message, created = ingest_raw(owner=owner, raw=raw, identity=f"test-{next(_numbers)}", source="import")
    assert created
    return message


def smtp_service(owner, sink, name="Relay mail", **fields) -> Service:
    return Service.objects.create(owner=owner, kind="smtp", name=name, config={
        "host": sink.host, "port": sink.port, "security": "none", "from_address": "gate@mailgate.test"},
        **fields)


def subscribe(service, name, address, addresses=(), **fields) -> Subscription:
    subscriber = Subscriber.objects.create(owner=service.owner, name=name, addresses=list(addresses))
    return Subscription.objects.create(subscriber=subscriber, service=service, address=address, **fields)


def route_everything(owner, *services, **criteria) -> Route:
    route = Route.objects.create(owner=owner, name=f"route {next(_numbers)}", **criteria)
    route.services.set(services)
    return route


def run_stages(message) -> list[str]:
    """standardize → distribute → send every due delivery, as the worker would."""
    outcomes = [tasks.standardize(str(message.pk)), tasks.distribute(str(message.pk))]
    for delivery in Delivery.objects.filter(message=message, not_before__lte=clock.now()):
        outcomes.append(tasks.send(str(delivery.pk)))
    return outcomes


# --- outgoing services --------------------------------------------------------------------------

BOT_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
"""The bot token of the outgoing Telegram services the tests configure."""


def make_service(owner, kind, config, secrets, **fields) -> Service:
    service = Service(owner=owner, kind=kind, name=f"{kind} {next(_numbers)}", config=config, **fields)
    service.set_secrets(secrets)
    service.full_clean()  # the configs used here are valid ones
    service.save()
    return service


def import_message(owner, **fields) -> Message:
    """A plain imported message (no account, no location) with a short text and HTML body."""
    values = dict(source=Message.Source.IMPORT, identity=f"test-{next(_numbers)}", subject="Lunch?",
                  sender_name="Bob Example", sender_address="bob@example.test", message_id="<lunch@example.test>",
                  text_body="Meet at 12.30 (usual place)!", html_body="<p>Meet at <b>12.30</b></p>",
                  date=datetime(2025, 5, 1, 10, 0, tzinfo=UTC))
    values.update(fields)
    return Message.objects.create(owner=owner, **values)


def due_delivery(service, message, address="") -> Delivery:
    """A scheduled delivery, due now, to a new subscriber of `service`."""
    subscriber = Subscriber.objects.create(owner=service.owner, name=f"Subscriber {next(_numbers)}")
    subscription = Subscription.objects.create(subscriber=subscriber, service=service, address=address)
    return Delivery.objects.create(message=message, subscription=subscription, service=service, address=address,
                                   not_before=timezone.now())


# --- inbound webhooks ---------------------------------------------------------------------------

# Twilio's documented signature example (https://mycompany.com/myapp.php?foo=1&bar=2, token 12345).
TWILIO_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
                 "From": "+12349013030", "To": "+18005551212"}
TWILIO_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

GENERIC_PAYLOAD = {"id": "evt-1", "from": "ada@example.test", "from_name": "Ada", "subject": "Build failed",
                   "text": "Job 42 failed.", "html": "<p>Job <b>42</b> failed.</p>"}
"""A valid body for the signed JSON (generic) channel."""


def make_channel(owner, kind, secrets, token=None, **config) -> InboundChannel:
    channel = InboundChannel(owner=owner, kind=kind, name=f"{kind} channel", token=token or f"tok-{kind}",
                             config=config)
    channel.set_secrets(secrets)
    channel.save()
    return channel


def telegram_update(update_id=1001, text="Hi there. Lunch?", **message):
    """A Telegram Bot API update carrying a private text message from Ada."""
    return {"update_id": update_id, "message": {
        "message_id": 55, "date": 1714557600, "text": text,
        "from": {"id": 424242, "is_bot": False, "first_name": "Ada", "last_name": "Lovelace", "username": "ada"},
        "chat": {"id": 424242, "type": "private", "first_name": "Ada"}, **message}}


def post_telegram(client, body, secret="tg-secret_1", token="tg-abc"):
    headers = {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": secret} if secret is not None else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"/hooks/telegram/{token}/", data=data, content_type="application/json", **headers)


def post_signed(client, payload, secret="new-secret", timestamp=None, token="gen-abc", signature=None):
    """POST `payload` to a generic channel, signed with `secret` unless a `signature` is given."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    signature = signatures.sign(secret, timestamp, body) if signature is None else signature
    return client.post(f"/hooks/generic/{token}/", data=body, content_type="application/json",
                       HTTP_X_MAILGATE_TIMESTAMP=timestamp, HTTP_X_MAILGATE_SIGNATURE=signature)


# --- IMAP against the test Dovecot --------------------------------------------------------------

def raw_message(n: int, folder: str = "INBOX", size: int = 600) -> bytes:
    """Message number `n` of `folder` as raw bytes (an encoded subject, a body of about `size`)."""
    body = (f"Message {n} in {folder}. " * (size // 30 + 1))[:size]
    return (f"From: Sender {n} <sender{n}@example.test>\r\nTo: alice@example.test\r\n"
            f"Subject: =?utf-8?q?Nr_{n}_=C3=BC?=\r\nDate: Tue, 01 Jul 2025 10:{n % 60:02d}:00 +0000\r\n"
            f"Message-ID: <{n}.{hashlib.md5(folder.encode()).hexdigest()[:8]}@example.test>\r\n"
            f"\r\n{body}\r\n").encode()


def folder_dir(dovecot, user, folder: str) -> str:
    """The Maildir++ directory Dovecot uses for `folder` (created through IMAP first)."""
    dovecot.create_folder(user.name, folder if folder != "INBOX" else "Drafts")
    path = user.maildir if folder == "INBOX" else os.path.join(user.maildir, "." + utf7.encode(folder))
    assert os.path.isdir(os.path.join(path, "cur")), f"no Maildir for {folder!r} at {path}"
    return path


def fill_maildir(dovecot, user, folder: str, messages) -> None:
    """Write (raw, maildir_flags) straight into the folder's cur/ (APPEND of thousands is slow);
    Dovecot assigns UIDs when it next opens the folder."""
    cur = os.path.join(folder_dir(dovecot, user, folder), "cur")
    stamp = int(time.time())
    for i, (raw, flags) in enumerate(messages):
        path = os.path.join(cur, f"{stamp}.M{i}P{os.getpid()}.mailgate,S={len(raw)}:2,{flags}")
        with open(path, "wb") as fh:
            fh.write(raw)
        os.chown(path, user.uid, user.gid)


def dovecot_account(owner, dovecot, user, **extra) -> Account:
    """`user`'s account on the test Dovecot (plain IMAP), created as the admin form creates one."""
    return create_account(owner=owner, email=f"{user.name}@example.test", host="127.0.0.1", port=dovecot.port,
                          security=Account.Security.NONE, username=user.name, password=user.password, **extra)


def sync(account, **kwargs):
    """One batch sync now, whatever the backoff; it must report no error."""
    report = sync_account_now(account, ignore_backoff=True, **kwargs)
    assert report.errors == []
    return report


# ---------------------------------------------------------------- a fresh laptop install

# The child must see a fresh laptop install, not this test run's configuration.
FRESH_INSTALL_CLEARED = {"DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "MAILGATE_FERNET_KEYS",
                         "MAILGATE_FERNET_KEYS_FILE", "DATABASE_URL", "REDIS_URL", "MAILGATE_CHANNEL_LAYER",
                         "ALLOWED_HOSTS", "MAILGATE_USE_TEST_DB", "MAILGATE_DATA_DIR", "MAILGATE_ADMIN_PASSWORD",
                         "PORT", "PROMETHEUS_MULTIPROC_DIR"}


def fresh_env(data_dir: Path, **extra) -> dict:
    """The environment of a fresh laptop install with its data in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in FRESH_INSTALL_CLEARED}
    env.update(MAILGATE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def manage(data_dir: Path, *args, **extra) -> subprocess.CompletedProcess:
    """`manage.py ARGS` as a fresh laptop install would run it."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=fresh_env(data_dir, **extra),
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- sending and reading back

def send(service, message, address=""):
    """Send `message` through `service` straight with its transport (no pipeline)."""
    delivery = due_delivery(service, message, address)
    return transport_for(service).send(message, delivery), delivery


def queued_delivery(owner, service, address="bob@example.test", **subscription) -> Delivery:
    """A delivery to `address` of a fresh message, standardized and distributed, waiting to send."""
    subscribe(service, address.split("@")[0], address, **subscription)
    message = ingest(owner, eml())
    tasks.standardize(str(message.pk))
    tasks.distribute(str(message.pk))
    return Delivery.objects.get(message=message, address=address)


def parsed(message):
    """The stored raw bytes of `message`, parsed."""
    return email.message_from_bytes(read_raw(message), policy=email.policy.default)


def text_of(raw) -> str:
    """The plain-text body of a parsed message."""
    return raw.get_body(("plain",)).get_content().replace("\r\n", "\n").strip()


# ---------------------------------------------------------------- end to end: Dovecot INBOX -> SMTP relay

def inbox_relayed_to(owner, dovecot, user, sink) -> tuple[Account, Service]:
    """`owner`'s account for `user`'s INBOX on the test Dovecot (plain IMAP, INBOX only), with all its
    mail routed to an SMTP relay into `sink`; subscribe people to the returned service."""
    account = Account(owner=owner, display_name=owner.username.capitalize(), email=f"{owner.username}@example.test",
                      host=dovecot.host, port=dovecot.port, security=Account.Security.NONE, username=user.name,
                      folders_include=["INBOX"])
    account.set_password(user.password)
    account.save()
    service = smtp_service(owner, sink)
    route_everything(owner, service, account=account, folder_pattern="INBOX")
    return account, service


# ---------------------------------------------------------------- the web UI against the test Dovecot

def dovecot_account_row(owner, dovecot, user) -> Account:
    """An account row for `user` on the test Dovecot with no folders yet: the first sync finds them."""
    return account_row(owner, host=dovecot.host, port=dovecot.port, security=Account.Security.NONE,
                       username=user.name, password=user.password, folders=())


def sync_and_standardize(account) -> list[Message]:
    """The chain after an IDLE push: batch sync (headers, then bodies), then the standardize stage
    of what it fetched, which is returned."""
    from pipeline.standardize import standardize

    report = sync_account_now(account, ignore_backoff=True)
    assert not report.errors, report.errors
    received = list(Message.objects.filter(account=account, status=Message.Status.RECEIVED))
    for message in received:
        # Publishes message.new after commit; "history" when the mailbox held it at the first
        # sync (shown all the same, just never relayed).
        assert standardize(message.pk) in ("standardized", "history")
    return received


def statements(queries) -> list[str]:
    """The captured SQL statements other than transaction control (BEGIN/COMMIT, and the
    savepoints that stand for them inside a test's transaction)."""
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith(control)]


def queued_tasks(stage: str) -> list[dict]:
    """The queued django-q tasks of `stage`, unsigned."""
    tasks_queued = [SignedPackage.loads(payload) for payload in OrmQ.objects.values_list("payload", flat=True)]
    return [task for task in tasks_queued if task["func"] == f"pipeline.tasks.{stage}"]


def task_ids(stage: str) -> list[list[str]]:
    """The ids each queued task of `stage` names."""
    return [[task["args"][0]] if isinstance(task["args"][0], str) else list(task["args"][0])
            for task in queued_tasks(stage)]
