"""Which storage holds raw mail and attachments, from MAILGATE_STORAGE_URL (README "Object storage").

    unset                 the local files dir (MAILGATE_FILES_DIR), as always
    file:///srv/mail      a local directory named in the URL
    s3://BUCKET/PREFIX    an S3-compatible bucket (AWS S3, MinIO, Ceph, R2) through django-storages;
                          MAILGATE_S3_ENDPOINT_URL, _REGION, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY

Read while settings load, so this module imports nothing from Django. A URL that cannot work does
not raise here: settings keep the reason, the default storage refuses every use with it
(mailgate.storage.MisconfiguredStorage) and the system check mailgate.E008 stops `manage.py`
commands at start with the same sentence. Every process fails loudly; none quietly writes mail
to a local disk that the other hosts cannot read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class StorageConfigError(ValueError):
    """MAILGATE_STORAGE_URL or its S3 variables cannot work; the message says which and why."""


@dataclass(frozen=True)
class StorageConfig:
    kind: str  # "local" or "s3"
    path: Path | None = None  # local
    bucket: str = ""
    prefix: str = ""  # no leading or trailing slash
    endpoint_url: str = ""
    region: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)  # never in a log line or an error page

    def describe(self) -> str:
        """Where objects go, without credentials (for command output and logs)."""
        if self.kind == "local":
            return f"local directory {self.path}"
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url or 'AWS'}"


# S3's bucket naming rules (the strict, DNS-compatible ones that every provider accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse(url: str, *, files_dir: Path, endpoint_url: str = "", region: str = "", access_key: str = "",
          secret_key: str = "", variable: str = "MAILGATE_STORAGE_URL") -> StorageConfig:
    """The storage `url` names; raises StorageConfigError with a sentence an operator can act on."""
    url = (url or "").strip()
    if not url:
        return StorageConfig("local", path=Path(files_dir))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StorageConfigError(f"{variable}={url!r}: a local directory is written file:///absolute/path")
        return StorageConfig("local", path=Path(parts.path))
    if scheme != "s3":
        raise StorageConfigError(
            f"{variable}={url!r}: use s3://BUCKET/PREFIX for object storage, file:///path for a local "
            f"directory, or leave it unset for MAILGATE_FILES_DIR")
    if parts.username or parts.password:
        raise StorageConfigError(
            f"{variable}: credentials do not belong in the URL (it shows up in logs and process lists); "
            f"set MAILGATE_S3_ACCESS_KEY_ID and MAILGATE_S3_SECRET_ACCESS_KEY (or their _FILE variants)")
    if parts.query or parts.fragment:
        raise StorageConfigError(f"{variable}={url!r}: options go in the MAILGATE_S3_* variables, not in the URL")
    bucket = parts.netloc  # as written: .hostname would lower-case a bucket S3 then cannot find
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageConfigError(
            f"{variable}={url!r}: {bucket or '(empty)'!r} is not a bucket name (3-63 characters: lower-case "
            f"letters, digits, dots and hyphens)")
    prefix = parts.path.strip("/")
    if prefix and any(piece in ("", ".", "..") for piece in prefix.split("/")):
        raise StorageConfigError(f"{variable}={url!r}: the prefix {prefix!r} has an empty, '.' or '..' segment")
    if endpoint_url:
        endpoint = urlsplit(endpoint_url)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise StorageConfigError(
                f"MAILGATE_S3_ENDPOINT_URL={endpoint_url!r} is not an http(s):// URL (MinIO: http://host:9000)")
    if not access_key or not secret_key:
        missing = [name for name, value in (("MAILGATE_S3_ACCESS_KEY_ID", access_key),
                                            ("MAILGATE_S3_SECRET_ACCESS_KEY", secret_key)) if not value]
        raise StorageConfigError(
            f"{variable} names a bucket but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
            f"(or set as NAME_FILE pointing to a file that holds it)")
    return StorageConfig("s3", bucket=bucket, prefix=prefix, endpoint_url=endpoint_url.rstrip("/"),
                         region=region, access_key=access_key, secret_key=secret_key)


def from_env(url: str, *, files_dir: Path, variable: str = "MAILGATE_STORAGE_URL") -> StorageConfig:
    """parse() with the MAILGATE_S3_* variables of this process's environment, each of which may
    also come from the file named by NAME_FILE (an unreadable one raises EnvError at once)."""
    from mailgate.env import env_secret

    return parse(url, files_dir=files_dir, endpoint_url=env_secret("MAILGATE_S3_ENDPOINT_URL"),
                 region=env_secret("MAILGATE_S3_REGION"), access_key=env_secret("MAILGATE_S3_ACCESS_KEY_ID"),
                 secret_key=env_secret("MAILGATE_S3_SECRET_ACCESS_KEY"), variable=variable)


def backend(config: StorageConfig | None, error: str = "") -> dict:
    """The STORAGES["default"] entry for `config` (or one that refuses every use with `error`)."""
    if config is None:
        return {"BACKEND": "mailgate.storage.MisconfiguredStorage", "OPTIONS": {"reason": error}}
    if config.kind == "local":
        # No OPTIONS: FileSystemStorage follows MEDIA_ROOT, which settings set to config.path.
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": s3_options(config)}


def s3_options(config: StorageConfig) -> dict:
    from botocore.config import Config  # only where a bucket is configured

    return {
        "bucket_name": config.bucket,
        "location": config.prefix,
        "endpoint_url": config.endpoint_url or None,
        "region_name": config.region or None,
        "access_key": config.access_key,
        "secret_key": config.secret_key,
        # Keys are content-addressed (raw/<sha256>.eml) or derived from the attachment's id: the
        # same name always means the same bytes, so a rewrite replaces instead of making name_1.
        "file_overwrite": True,
        # Objects stay private (bucket policy decides); mailgate never hands out bucket URLs.
        "default_acl": None,
        "querystring_auth": True,
        "client_config": Config(
            # MinIO, Ceph and most self-hosted servers answer only path-style requests; AWS and R2
            # accept both. Virtual-host style stays the default for AWS itself.
            s3={"addressing_style": "path" if config.endpoint_url else None},
            # botocore waits 60 s to connect by default, with up to 5 tries: a stage, a download
            # or /healthz would hang minutes on an unreachable endpoint. Reads of big objects keep
            # the default 60 s between bytes.
            connect_timeout=5, retries={"mode": "standard", "max_attempts": 3}),
        # A whole-file read (standardize, an SMTP relay's attachment) spills to a temporary file
        # past this instead of holding a 50 MB message in memory; downloads stream anyway
        # (mailgate.storage.open_stream).
        "max_memory_size": 8 * 1024 * 1024,
    }
