"""Raw mail and attachments through the storage API: the same tests against the local files dir and
against a real S3-compatible server on loopback (moto, tests/servers/s3.py)."""

import hashlib
import os
import shutil
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from mailgate import storage, storage_url
from pipeline import orphans, retention, tasks
from pipeline.ingest import raw_name, read_raw, store_raw
from pipeline.models import Attachment, Message
from tests.builders import eml, ingest
from tests.servers.ports import pid_alive
from tests.servers.procs import started_by_a_killed_parent
from tests.servers.s3 import S3Server
from tests.servers.waiting import eventually

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n" + os.urandom(300_000)  # several 64 KiB chunks; random, so not compressible


@pytest.fixture(params=["local", "s3"])
def backend(request, settings, tmp_path):
    """The default storage of this test: a private local files dir, or a fresh bucket."""
    if request.param == "local":
        (tmp_path / "files").mkdir(mode=0o700)  # as settings make it (private_dir)
        settings.MEDIA_ROOT = str(tmp_path / "files")
        return "local"
    request.getfixturevalue("s3_storage")
    return "s3"


def names(prefix):
    return sorted(obj.name for obj in storage.iter_objects(prefix))


def test_raw_bytes_are_stored_once_under_their_digest_and_read_back(backend, alice):
    raw = eml(subject="Stored once")
    name, digest = store_raw(raw)
    assert (name, digest) == (raw_name(hashlib.sha256(raw).hexdigest()), hashlib.sha256(raw).hexdigest())
    assert store_raw(raw) == (name, digest)
    assert names("raw") == [name]
    message = ingest(alice, raw)
    assert message.raw.name == name
    assert read_raw(message) == raw
    assert storage.sha256_of(name) == (digest, len(raw))


def test_a_sync_batch_of_raw_messages_is_stored_each_whole(backend, alice):
    bodies = [eml(subject=f"Batch {n}") for n in range(12)]
    expected = sorted(raw_name(hashlib.sha256(raw).hexdigest()) for raw in bodies)
    storage.write_many_once([(raw_name(hashlib.sha256(raw).hexdigest()), raw) for raw in bodies])
    assert names("raw") == expected
    assert all(storage.read_bytes(raw_name(hashlib.sha256(raw).hexdigest())) == raw for raw in bodies)


def test_the_worker_standardizes_attachments_into_the_same_storage(backend, alice):
    message = ingest(alice, eml(attachment=("report.pdf", PDF)))
    assert tasks.standardize(str(message.pk)) == "standardized"
    attachment = Attachment.objects.get(message=message)
    assert names("attachments") == [attachment.file.name]
    assert storage.read_bytes(attachment.file.name) == PDF
    assert storage.sha256_of(attachment.file.name) == (hashlib.sha256(PDF).hexdigest(), len(PDF))


def test_a_download_streams_in_chunks_with_the_locked_down_headers(backend, alice, client):
    message = ingest(alice, eml(attachment=("report.pdf", PDF)))
    tasks.standardize(str(message.pk))
    attachment = Attachment.objects.get(message=message)
    client.force_login(alice)
    response = client.get(reverse("frontend:attachment", args=[attachment.pk]))
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Length"] == str(len(PDF))
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Cache-Control"] == "private, no-store"
    chunks = list(response.streaming_content)
    # Read block by block as it is sent (FileResponse's block size), never in one piece.
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= response.block_size
    assert b"".join(chunks) == PDF


def test_a_download_of_an_object_that_is_gone_is_a_404(backend, alice, client):
    message = ingest(alice, eml(attachment=("report.pdf", PDF)))
    tasks.standardize(str(message.pk))
    attachment = Attachment.objects.get(message=message)
    storage.delete(attachment.file.name)
    client.force_login(alice)
    assert client.get(reverse("frontend:attachment", args=[attachment.pk])).status_code == 404


def test_the_orphan_sweep_removes_only_old_objects_that_no_row_names(backend, alice):
    kept = ingest(alice, eml(subject="Has a row", attachment=("report.pdf", PDF)))
    tasks.standardize(str(kept.pk))
    orphan_raw, _ = store_raw(eml(subject="Its transaction rolled back"))
    orphan_attachment = storage.write("attachments/ab/abandoned", b"a rerun lost its claim")
    everything = names("raw") + names("attachments")

    # Young: an in-flight write whose row has not committed yet is left alone.
    assert orphans.sweep(grace_hours=1)["orphans"] == 0
    assert names("raw") + names("attachments") == everything

    later = storage.modified_time(orphan_raw) + timedelta(hours=2)
    assert orphans.sweep(now=later, grace_hours=1, dry_run=True) == {
        "checked": 4, "orphans": 2, "bytes": len(eml(subject="Its transaction rolled back")) + 22}
    assert names("raw") + names("attachments") == everything
    assert orphans.sweep(now=later, grace_hours=1)["orphans"] == 2
    assert names("raw") == [kept.raw.name]
    assert names("attachments") == [Attachment.objects.get(message=kept).file.name]
    assert orphan_attachment not in names("attachments")
    assert read_raw(kept)


def test_storing_bytes_already_there_restarts_their_grace_age(settings, tmp_path):
    # Local only: S3 has no way to age an object, and its store always re-PUTs (write_once).
    settings.MEDIA_ROOT = str(tmp_path / "files")
    name, _ = store_raw(b"Subject: shared\r\n\r\nby two messages\r\n")
    long_ago = time.time() - 7 * 86400
    os.utime(storage.default().path(name), (long_ago, long_ago))
    assert orphans.sweep(grace_hours=1, dry_run=True)["orphans"] == 1
    store_raw(b"Subject: shared\r\n\r\nby two messages\r\n")  # a twin arrives: its row will point here
    assert orphans.sweep(grace_hours=1)["orphans"] == 0
    assert names("raw") == [name]


def test_the_daily_retention_job_also_sweeps_orphans(backend, settings, alice):
    settings.MAILGATE_STORAGE_ORPHAN_HOURS = 0.0
    store_raw(b"Subject: never committed\r\n\r\n")
    message = ingest(alice, eml(subject="Too old"))
    tasks.standardize(str(message.pk))
    Message.objects.filter(pk=message.pk).update(
        status=Message.Status.SUPPRESSED, received_at=message.received_at - timedelta(days=400))
    counts = tasks.purge()
    assert counts["messages"] == 1 and counts["orphans"] == 1
    assert names("raw") == []


def test_retention_removes_the_objects_of_purged_messages(backend, alice):
    message = ingest(alice, eml(subject="Old", attachment=("report.pdf", PDF)))
    tasks.standardize(str(message.pk))
    Message.objects.filter(pk=message.pk).update(
        status=Message.Status.SUPPRESSED, received_at=message.received_at - timedelta(days=400))
    assert retention.purge()["messages"] == 1
    assert names("raw") == [] and names("attachments") == []


def test_healthz_says_whether_the_storage_answers(backend, client, admin_client, settings, s3_server):
    body = client.get("/healthz").json()
    assert body["storage"]["ok"] is True and body["storage"]["kind"] == backend
    if backend == "s3":
        settings.STORAGES = {**settings.STORAGES, "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "bucket_name": "no-such-bucket"}}}
    else:
        settings.MEDIA_ROOT = "/nonexistent/files"
    response = admin_client.get("/healthz")
    assert response.status_code == 503 and response.json()["storage"]["ok"] is False


# ---------------------------------------------------------------------------- migrate_storage

@pytest.fixture
def other_storage(backend, s3_server, tmp_path, monkeypatch):
    """The URL of the storage a migration goes to: the bucket when the test stores locally, a local
    directory when it stores in a bucket."""
    if backend == "s3":
        return f"file://{tmp_path / 'moved'}"
    env = s3_server.env(s3_server.create_bucket(f"moved-{os.urandom(4).hex()}"), prefix="moved/here")
    for key, value in env.items():
        if key != "MAILGATE_STORAGE_URL":
            monkeypatch.setenv(key, value)
    return env["MAILGATE_STORAGE_URL"]


def migrate(*args):
    out, err = StringIO(), StringIO()
    call_command("migrate_storage", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_migrate_storage_copies_every_object_verified_and_is_idempotent(backend, other_storage, alice, settings):
    message = ingest(alice, eml(attachment=("report.pdf", PDF)))
    tasks.standardize(str(message.pk))
    ingest(alice, eml(subject="Second"))
    before = {name: storage.sha256_of(name) for name in names("raw") + names("attachments")}
    assert len(before) == 3

    assert "Would copy 3 objects" in migrate("--to", other_storage, "--dry-run")
    target = storage.for_config(storage_url.from_env(other_storage, files_dir=settings.MEDIA_ROOT))
    assert list(storage.iter_objects("raw", target)) == []

    assert f"Copied 3 objects ({sum(size for _, size in before.values())} bytes); 0 already there" \
        in migrate("--to", other_storage)
    assert {name: storage.sha256_of(name, target) for name in before} == before

    ingest(alice, eml(subject="Arrived during the first run"))
    out = migrate("--to", other_storage)
    assert "Copied 1 objects" in out and "3 already there and verified; 0 failed" in out


def test_migrate_storage_refuses_a_raw_object_that_does_not_match_its_name(backend, other_storage, alice):
    message = ingest(alice, eml())
    storage.write(message.raw.name, b"Subject: bit rot\r\n\r\n")
    with pytest.raises(CommandError, match="1 objects were not copied"):
        migrate("--to", other_storage)


@pytest.mark.parametrize("url, error", [
    ("", "--to is empty"),
    ("ftp://mail/x", "use s3://BUCKET/PREFIX"),
    ("s3://Not_A_Bucket/x", "is not a bucket name"),
])
def test_migrate_storage_explains_a_bad_target(url, error):
    with pytest.raises(CommandError, match=error):
        migrate("--to", url)


def test_migrate_storage_explains_a_missing_bucket(s3_server, monkeypatch):
    for key, value in s3_server.env("no-such-bucket").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(CommandError, match="'no-such-bucket' does not exist"):
        migrate("--to", "s3://no-such-bucket/mail")


# ---------------------------------------------------------------------------- the harness's S3 server

def test_the_s3_server_stops_by_pid_and_dies_with_a_killed_test_process():
    server = S3Server.start()
    pid = server.pid
    assert pid_alive(pid)
    server.stop()
    assert not pid_alive(pid) and server.pid is None

    pid, directory = started_by_a_killed_parent("from tests.servers.s3 import S3Server\nserver = S3Server.start()",
                                                "server.pid, server.dir")
    eventually(lambda: not pid_alive(pid), 10.0, "moto gone with its killed parent", interval=0.02)
    shutil.rmtree(directory)  # its log; nobody ran stop()
