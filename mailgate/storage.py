"""Raw mail and attachments in Django's default storage: the local files dir or an S3-compatible
bucket (mailgate/storage_url.py picks it). Here, in the ground, so that imap, inbound, pipeline,
outgoing and frontend all write, read, list and stream objects the same way.

Names are content-addressed (raw/<sha256>.eml) or derived from an attachment's id, so writing a
name twice writes the same bytes: every write here may be repeated. A write returns only once the
object is complete (an S3 PUT is all or nothing; the local path renames a finished temporary file),
and callers write before the transaction that records the name commits. An object whose row never
committed is removed later by pipeline/orphans.py, which is why a write of bytes already present
refreshes the object's modification time instead of doing nothing.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from mailgate.storage_url import StorageConfig, StorageConfigError, s3_options

CHUNK = 64 * 1024
_known_dirs: set = set()


class MisconfiguredStorage(Storage):
    """STORAGES["default"] when MAILGATE_STORAGE_URL cannot work: every use raises the reason, so a
    process started without system checks (daphne) fails loudly instead of writing elsewhere."""

    def __init__(self, reason: str = ""):
        self.reason = reason

    def _refuse(self, *args, **kwargs):
        raise StorageConfigError(self.reason)

    _open = _save = delete = exists = listdir = size = url = get_modified_time = path = _refuse
    # What the helpers below use of an S3 storage, refused the same way.
    bucket = location = property(_refuse)


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    modified: datetime  # aware, UTC


def default() -> Storage:
    return storages["default"]


def for_config(config: StorageConfig) -> Storage:
    """A storage for `config` apart from the default (migrate_storage's target)."""
    if config.kind == "local":
        # Private like the files dir: stored mail is for this user only.
        return FileSystemStorage(location=str(config.path), file_permissions_mode=0o600,
                                 directory_permissions_mode=0o700)
    from storages.backends.s3 import S3Storage  # boto3 loads only where a bucket is used

    return S3Storage(**s3_options(config))


def is_local(storage: Storage) -> bool:
    return isinstance(storage, FileSystemStorage)


def _key(storage, name: str) -> str:
    # django-storages' own name → key mapping (prefix + name, '..' refused).
    from storages.utils import clean_name

    return storage._normalize_name(clean_name(name))


# ----------------------------------------------------------------------------------- writing

def write_once(name: str, data: bytes, storage: Storage | None = None) -> None:
    """Store content-addressed `data` under `name` unless the same bytes are there already; either
    way the object's modification time is now, so the orphan sweep's grace age starts again for a
    row about to point at it."""
    storage = storage or default()
    if type(storage) is FileSystemStorage and storage.directory_permissions_mode is None:
        _write_file_once(storage, name, data)
    elif is_local(storage):  # a FileSystemStorage variant: the storage API, as Django means it
        if storage.exists(name):
            os.utime(storage.path(name))
        else:
            saved = storage.save(name, ContentFile(data))
            if saved != name:  # another process stored the same bytes between exists() and save()
                storage.delete(saved)
    else:
        # An object store: one PUT, whole or not at all. Repeating it for bytes already there
        # costs an upload but is what refreshes LastModified (S3 has no touch).
        write(name, data, storage)


def write_many_once(items, storage: Storage | None = None) -> None:
    """write_once for each (name, data); returns when all are complete, raises the first failure.

    On an object store each write is a network round trip (tens of ms on S3), so one sync batch
    of 200 messages would wait seconds one PUT after another: they go UPLOAD_THREADS at a time.
    The local disk gains nothing from threads."""
    storage = storage or default()
    if is_local(storage) or len(items) < 2:
        for name, data in items:
            write_once(name, data, storage)
        return
    list(_upload_pool().map(lambda item: write_once(item[0], item[1], storage), items))


UPLOAD_THREADS = 8
_pool = None
_pool_pid = None


def _upload_pool() -> ThreadPoolExecutor:
    # Made on first use, again after a fork (django-q forks its workers; threads do not follow).
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="mailgate-upload")
        _pool_pid = os.getpid()
    return _pool


def write(name: str, data: bytes, storage: Storage | None = None) -> str:
    """Store `data` under exactly `name`, replacing what is there (an attachment rewritten by a
    rerun of standardize); returns the name."""
    storage = storage or default()
    if is_local(storage) and storage.exists(name):
        storage.delete(name)  # FileSystemStorage would otherwise pick name_<random>
    saved = storage.save(name, ContentFile(data))
    if saved != name:
        raise StorageConfigError(f"storage wrote {saved!r} instead of {name!r}: it must overwrite (file_overwrite)")
    return saved


def _write_file_once(storage: FileSystemStorage, name: str, raw: bytes) -> None:
    """Local-disk fast path of write_once (bench/sync.py: the storage API's exists + name checks +
    makedirs cost as much as the write). The bytes go to a temporary file renamed into place, so
    a file under the content-addressed name is always complete: a process killed mid-write leaves
    only a stray *.tmp (the orphan sweep removes it), never a truncated message that exists()
    would then vouch for."""
    path = storage.path(name)
    try:
        os.utime(path)  # there already: only restart its grace age
        return
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    if directory not in _known_dirs:
        os.makedirs(directory, exist_ok=True)
        _known_dirs.add(directory)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # the directory was removed since we cached it
        _known_dirs.discard(directory)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if storage.file_permissions_mode is not None:  # FILE_UPLOAD_PERMISSIONS, as save() applies it
                os.fchmod(fh.fileno(), storage.file_permissions_mode)
            fh.write(raw)
        # A concurrent writer of the same digest renames identical bytes: either one wins.
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ----------------------------------------------------------------------------------- reading

class _ObjectStream:
    """An S3 object's body as a read-only file for FileResponse: read(n) pulls the next chunk off
    the connection, so a download never holds the whole object (S3File would fetch it all first)."""

    def __init__(self, body, size: int):
        self._body, self.size = body, size

    def read(self, n: int = -1) -> bytes:
        return self._body.read(None if n is None or n < 0 else n)

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_stream(name: str, storage: Storage | None = None):
    """A read-only binary stream of `name` with a `.size`, read in chunks as it is consumed;
    FileNotFoundError when there is no such object (purged, or never written)."""
    storage = storage or default()
    if not name:
        raise FileNotFoundError("no stored object named")
    if is_local(storage):
        fh = storage.open(name, "rb")
        fh.size = os.fstat(fh.fileno()).st_size
        return fh
    from botocore.exceptions import ClientError

    try:
        answer = storage.bucket.Object(_key(storage, name)).get()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"no stored object {name}") from None
        raise
    return _ObjectStream(answer["Body"], answer["ContentLength"])


def read_bytes(name: str, storage: Storage | None = None) -> bytes:
    with open_stream(name, storage) as fh:
        return fh.read()


def sha256_of(name: str, storage: Storage | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of a stored object, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open_stream(name, storage) as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ----------------------------------------------------------------------------------- listing

def iter_objects(prefix: str, storage: Storage | None = None):
    """Every object under `prefix` ("raw", "attachments") as StoredObject, in no set order: one
    LIST request per 1000 objects on S3, a directory walk locally."""
    storage = storage or default()
    prefix = prefix.strip("/")
    if is_local(storage):
        root = storage.path("")
        top = storage.path(prefix)
        for directory, _dirs, files in os.walk(top):
            for filename in files:
                path = os.path.join(directory, filename)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:  # removed while we walked
                    continue
                yield StoredObject(os.path.relpath(path, root).replace(os.sep, "/"), stat.st_size,
                                   datetime.fromtimestamp(stat.st_mtime, dt_timezone.utc))
        return
    location = storage.location.strip("/")
    start = f"{location}/" if location else ""
    for summary in storage.bucket.objects.filter(Prefix=f"{start}{prefix}/"):
        yield StoredObject(summary.key[len(start):], summary.size, summary.last_modified)


def modified_time(name: str, storage: Storage | None = None) -> datetime | None:
    """When `name` was last written (aware), or None when it is gone."""
    storage = storage or default()
    if is_local(storage):
        try:
            return datetime.fromtimestamp(os.stat(storage.path(name)).st_mtime, dt_timezone.utc)
        except FileNotFoundError:
            return None
    from botocore.exceptions import ClientError

    try:
        return storage.bucket.Object(_key(storage, name)).last_modified  # one HEAD
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def delete(name: str, storage: Storage | None = None) -> None:
    (storage or default()).delete(name)
