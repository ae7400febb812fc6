"""MAILGATE_STORAGE_URL and the MAILGATE_S3_* variables: what they configure, and the clear errors a
wrong value gets (the system check at start, the refusal of every use in a process without checks)."""

import re
from pathlib import Path

import pytest

from mailgate import checks, storage_url
from mailgate.storage_url import StorageConfigError
from pipeline.ingest import ingest_raw, store_raw
from pipeline.models import Message
from tests.builders import eml, manage

S3 = {"endpoint_url": "http://minio:9000", "region": "eu-1", "access_key": "id", "secret_key": "secret"}


def parse(url, **kwargs):
    return storage_url.parse(url, files_dir=Path("/srv/files"), **kwargs)


def test_unset_keeps_the_files_dir_and_file_urls_name_another():
    assert parse("") == storage_url.StorageConfig("local", path=Path("/srv/files"))
    assert parse("file:///mnt/mail") == storage_url.StorageConfig("local", path=Path("/mnt/mail"))


def test_an_s3_url_names_bucket_and_prefix_and_keeps_the_secret_out_of_its_repr():
    config = parse("s3://mail-archive/prod/eu/", **S3)
    assert (config.kind, config.bucket, config.prefix, config.endpoint_url) == (
        "s3", "mail-archive", "prod/eu", "http://minio:9000")
    assert "secret" not in repr(config) and "secret" not in config.describe()
    options = storage_url.backend(config)["OPTIONS"]
    assert options["location"] == "prod/eu" and options["client_config"].s3 == {"addressing_style": "path"}
    assert options["client_config"].connect_timeout == 5
    assert options["file_overwrite"] is True
    # AWS itself: virtual-host style, no endpoint.
    aws = storage_url.backend(parse("s3://mail-archive", access_key="id", secret_key="s"))["OPTIONS"]
    assert (aws["endpoint_url"], aws["client_config"].s3, aws["location"]) == (None, {"addressing_style": None}, "")


@pytest.mark.parametrize("url, kwargs, error", [
    ("ftp://mail/x", S3, "use s3://BUCKET/PREFIX for object storage"),
    ("file://host/x", S3, "file:///absolute/path"),
    ("s3://key:secret@mail/x", S3, "credentials do not belong in the URL"),
    ("s3://mail/x?region=eu", S3, "options go in the MAILGATE_S3_"),
    ("s3://Mail_Box/x", S3, "'Mail_Box' is not a bucket name"),
    ("s3:///x", S3, "'(empty)' is not a bucket name"),
    ("s3://mail:9000/x", S3, "'mail:9000' is not a bucket name"),
    ("s3://mail/a/../b", S3, "has an empty, '.' or '..' segment"),
    ("s3://mail/x", {**S3, "endpoint_url": "minio:9000"}, "MAILGATE_S3_ENDPOINT_URL='minio:9000' is not an http"),
    ("s3://mail/x", {**S3, "secret_key": ""}, "MAILGATE_S3_SECRET_ACCESS_KEY is not set"),
    ("s3://mail/x", {}, "MAILGATE_S3_ACCESS_KEY_ID and MAILGATE_S3_SECRET_ACCESS_KEY are not set"),
])
def test_a_url_that_cannot_work_is_explained(url, kwargs, error):
    with pytest.raises(StorageConfigError, match=re.escape(error)):
        parse(url, **kwargs)


@pytest.mark.django_db
def test_a_misconfigured_storage_refuses_every_use_and_no_row_points_at_nothing(settings, alice):
    settings.STORAGES = {**settings.STORAGES, "default": storage_url.backend(None, "MAILGATE_STORAGE_URL='x': no")}
    with pytest.raises(StorageConfigError, match="MAILGATE_STORAGE_URL='x': no"):
        store_raw(b"Subject: lost?\r\n\r\n")
    # The write comes first: when it fails, the message row is never created.
    with pytest.raises(StorageConfigError):
        ingest_raw(owner=alice, raw=eml(), identity="never-stored", source="import")
    assert not Message.objects.exists()


def test_the_orphan_grace_must_outlast_a_stage(settings):
    settings.MAILGATE_STORAGE_ORPHAN_HOURS = 0.1
    settings.MAILGATE_STAGE_DEADLINE = 600
    assert [e.id for e in checks.check_storage()] == ["mailgate.E009"]


def test_start_up_stops_on_missing_credentials_and_takes_them_from_files(tmp_path):
    refused = manage(tmp_path / "a", "check", MAILGATE_STORAGE_URL="s3://mail/prod")
    assert refused.returncode != 0
    assert "mailgate.E008" in refused.stderr
    assert "MAILGATE_S3_ACCESS_KEY_ID and MAILGATE_S3_SECRET_ACCESS_KEY are not set" in refused.stderr

    (tmp_path / "id").write_text("key-id\n")
    (tmp_path / "secret").write_text("key-secret\n")
    accepted = manage(tmp_path / "b", "check", MAILGATE_STORAGE_URL="s3://mail/prod",
                      MAILGATE_S3_ACCESS_KEY_ID_FILE=str(tmp_path / "id"),
                      MAILGATE_S3_SECRET_ACCESS_KEY_FILE=str(tmp_path / "secret"))
    assert accepted.returncode == 0, accepted.stderr
