"""Copying every stored object to another storage, verified by hash (manage.py migrate_storage).

Each object is read once from the source into a spooled temporary file while it is hashed, written
to the target, then read back from the target and hashed again: only an equal digest counts as
copied. An object the target already holds with the same digest is skipped, so a second run (after
the processes are stopped, for what arrived during the first) copies only the rest. A raw message
is named by its own sha256 (raw/<2>/<sha256>.eml), so a source object that does not match its name
is reported instead of being spread to the new storage.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field

from django.core.files import File

from mailgate import storage

PREFIXES = ("raw", "attachments")
_RAW_NAME = re.compile(r"^raw/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})\.eml$")
SPOOL_BYTES = 8 * 1024 * 1024


class CopyError(Exception):
    """One object could not be copied; the message says why."""


@dataclass
class CopyReport:
    copied: int = 0
    present: int = 0  # already in the target with the same digest
    bytes: int = 0  # copied (or, dry run, to copy)
    failed: list = field(default_factory=list)  # (name, reason)


def _spool(name: str, source) -> tuple[tempfile.SpooledTemporaryFile, str, int]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    digest, size = hashlib.sha256(), 0
    with storage.open_stream(name, source) as fh:
        while chunk := fh.read(storage.CHUNK):
            digest.update(chunk)
            spool.write(chunk)
            size += len(chunk)
    spool.seek(0)
    return spool, digest.hexdigest(), size


def _target_digest(name: str, target) -> str | None:
    try:
        return storage.sha256_of(name, target)[0]
    except FileNotFoundError:
        return None


def copy_object(name: str, source, target, dry_run: bool = False) -> tuple[str, int]:
    """("copied" | "present", size) for one object; raises CopyError."""
    spool, digest, size = _spool(name, source)
    with spool:
        named = _RAW_NAME.match(name)
        if named and named["sha"] != digest:
            raise CopyError(f"the source bytes hash to {digest}, not the sha256 in the name: left where it is")
        if _target_digest(name, target) == digest:
            return "present", size
        if dry_run:
            return "copied", size
        if storage.is_local(target) and target.exists(name):
            target.delete(name)  # different bytes (a cut-short earlier copy): FileSystemStorage won't overwrite
        saved = target.save(name, File(spool, name=name))
        if saved != name:
            raise CopyError(f"the target stored it as {saved!r}")
    copied = _target_digest(name, target)
    if copied != digest:
        raise CopyError(f"read back from the target it hashes to {copied or '(missing)'}, not {digest}")
    return "copied", size


def copy_all(source, target, dry_run: bool = False, progress=None) -> CopyReport:
    """Copy every object under raw/ and attachments/ from `source` to `target`."""
    report = CopyReport()
    for prefix in PREFIXES:
        for obj in storage.iter_objects(prefix, source):
            if obj.name.endswith(".tmp"):
                continue  # a local write cut short; never named by a row (the orphan sweep removes it)
            try:
                outcome, size = copy_object(obj.name, source, target, dry_run=dry_run)
            except CopyError as exc:
                report.failed.append((obj.name, str(exc)))
                continue
            except Exception as exc:  # a refused write, a dropped connection: counted, named, run goes on
                report.failed.append((obj.name, f"{type(exc).__name__}: {exc}"))
                continue
            if outcome == "present":
                report.present += 1
            else:
                report.copied += 1
                report.bytes += size
            if progress:
                progress(obj.name, outcome)
    return report


def probe(target) -> None:
    """Raise CopyError when the target cannot be reached or written at all, before copying starts."""
    if storage.is_local(target):
        return
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        target.connection.meta.client.head_bucket(Bucket=target.bucket_name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket"):
            raise CopyError(f"the bucket {target.bucket_name!r} does not exist (create it first)") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise CopyError(f"access to the bucket {target.bucket_name!r} was refused ({code}): check "
                            f"MAILGATE_S3_ACCESS_KEY_ID / MAILGATE_S3_SECRET_ACCESS_KEY") from None
        raise CopyError(f"the bucket {target.bucket_name!r} answered {code or exc}") from None
    except BotoCoreError as exc:
        raise CopyError(f"cannot reach the object store: {exc}") from None
