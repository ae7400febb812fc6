"""Two hosts, one bucket: sync on this one stores through S3, a worker on "another host" (another
process with a data dir of its own, so no shared disk) standardizes and relays the message."""

import os
from pathlib import Path

import pytest
from django.db import connection

from imap.sync import sync_account_now
from mailgate import storage
from pipeline.models import Attachment, Delivery, Message
from tests.builders import eml, inbox_relayed_to, subscribe
from tests.servers import procs
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PDF = b"%PDF-1.4\n" + os.urandom(200_000)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_sync_stores_in_the_bucket_and_a_worker_without_the_disk_relays_it(
        alice, dovecot, mail_user, clean_smtp_sink, s3_storage, settings, tmp_path):
    # This host's own files dir, empty: the session's is shared with every other test.
    settings.MEDIA_ROOT = str(tmp_path / "host-a-files")
    account, service = inbox_relayed_to(alice, dovecot, mail_user, clean_smtp_sink)
    subscribe(service, "bob", "bob@example.test")
    assert not sync_account_now(account).errors  # connected while empty: what arrives next is new

    dovecot.append(mail_user.name, "INBOX", eml(subject="Across hosts", attachment=("figures.pdf", PDF)))
    assert not sync_account_now(account).errors
    message = Message.objects.get(owner=alice)
    assert message.status == Message.Status.RECEIVED  # no worker on this host
    assert [o.name for o in storage.iter_objects("raw")] == [message.raw.name]
    assert files_under(Path(settings.MEDIA_ROOT) / "raw") == []  # in the bucket, not on this disk

    host_b = tmp_path / "host-b"
    worker = procs.start(["manage.py", "worker"], "worker-host-b", MAILGATE_DATA_DIR=str(host_b),
                         MAILGATE_TEST_DB_NAME=str(connection.settings_dict["NAME"]), **s3_storage)
    try:
        try:
            [relayed] = clean_smtp_sink.wait_for(1, timeout=90)
        except TimeoutError:
            pytest.fail(f"nothing relayed in 90 s; host B's worker log:\n{procs.log_text('worker-host-b')[-4000:]}")
        eventually(lambda: Delivery.objects.filter(message=message, status="sent").exists(), 20,
                   "the delivery recorded as sent")
    finally:
        procs.stop(worker)
    assert relayed.rcpt_tos == ["bob@example.test"]
    assert relayed.subject == "Across hosts"
    [part] = [p for p in relayed.message.iter_attachments()]
    assert (part.get_filename(), part.get_content()) == ("figures.pdf", PDF)

    attachment = Attachment.objects.get(message=message)
    assert [o.name for o in storage.iter_objects("attachments")] == [attachment.file.name]
    # Host B kept nothing of the mail on its own disk.
    assert host_b.is_dir() and files_under(host_b / "files") == []
    assert files_under(Path(settings.MEDIA_ROOT) / "attachments") == []
