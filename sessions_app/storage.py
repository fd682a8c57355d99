"""Session workspaces in storage: S3 (django-storages + boto3) when SANDBOX_S3_BUCKET is set, else local files.

Layout: everything of session `<id>` lives under `sessions/<id>/` (the trailing slash keeps `abc` and `abc2`
apart); the file at /workspace/<path> of its sandbox is stored as `sessions/<id>/workspace/<path>`.

When it is written: uploads through the files API go to the live sandbox and here; when the session ends
(`session_end`: terminate, idle, lifetime, failure) the whole workspace is mirrored here before the sandbox is
removed; `session_delete` removes the prefix. After the end, the files API lists and serves this copy.

Everything streams in chunks: a file goes from the executor (or, when the executor is already dead, from the
sandbox's workspace directory on this host) to storage, and from storage to a client, without ever being
held whole in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_SAVED_FILES = 10_000
_buckets_checked: set[str] = set()


def session_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/"


def workspace_key(session_id: str, path: str = "") -> str:
    """The key of a workspace path; `path` is already clean (relative, no '..', see files.clean_path)."""
    return f"{session_prefix(session_id)}workspace/{path}"


class StorageUnavailable(Exception):
    """The object store did not answer or refused the request (not a missing file: that is FileNotFoundError)."""


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn the store's own failures (boto3, the file system) into StorageUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (BotoCoreError, ClientError, OSError) as exc:
        raise StorageUnavailable(f"storage is unavailable: {exc}") from exc


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    modified: dt.datetime | None


class ChunkReader(io.RawIOBase):
    """A read()-able stream over an iterator of byte chunks (an executor download), for storage uploads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # a generator over an HTTP response: closing it closes the connection
        super().close()


def iter_reader(reader: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := reader.read(CHUNK):
            yield chunk
    finally:
        reader.close()


class FileStore:
    """Local files under MEDIA_ROOT (FileSystemStorage): the embedded default."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def ensure_bucket(self) -> None:
        os.makedirs(self.storage.location, exist_ok=True)

    def save(self, key: str, reader: IO[bytes]) -> None:
        self.storage.save(key, File(reader))

    def open(self, key: str) -> tuple[IO[bytes], int]:
        path = self.storage.path(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(key)
        handle = open(path, "rb")  # noqa: SIM115 - the caller streams and closes it
        return handle, os.fstat(handle.fileno()).st_size

    def size(self, key: str) -> int | None:
        path = self.storage.path(key)
        return os.path.getsize(path) if os.path.isfile(path) else None

    def listdir(self, prefix: str) -> tuple[list[str], list[StoredFile]]:
        path = self.storage.path(prefix)
        if not os.path.isdir(path):
            return [], []
        dirs, files = [], []
        with os.scandir(path) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    dirs.append(entry.name)
                elif stat.S_ISREG(st.st_mode):
                    when = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.UTC)
                    files.append(StoredFile(entry.name, st.st_size, when))
        return dirs, files

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        root = self.storage.path(prefix)
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                full = os.path.join(directory, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    yield prefix + os.path.relpath(full, root).replace(os.sep, "/"), os.path.getsize(full)

    def delete(self, key: str) -> None:
        self.storage.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        path = self.storage.path(prefix)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)

    def presigned_url(self, key: str, filename: str) -> str | None:
        return None


class S3Store:
    """An S3 bucket (AWS, MinIO, moto) through django-storages' S3Storage and its boto3 client."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.bucket = storage.bucket_name
        self.client = storage.connection.meta.client

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (once per process and bucket)."""
        if self.bucket in _buckets_checked:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            options: dict[str, Any] = {"Bucket": self.bucket}
            region = self.client.meta.region_name
            if region and region != "us-east-1":
                options["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(**options)
            except ClientError as race:
                if race.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
            logger.info("created storage bucket %s", self.bucket)
        _buckets_checked.add(self.bucket)

    def save(self, key: str, reader: IO[bytes]) -> None:
        self.ensure_bucket()
        self.storage.save(key, File(reader))

    def open(self, key: str) -> tuple[IO[bytes], int]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None
        return response["Body"], int(response["ContentLength"])

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def listdir(self, prefix: str) -> tuple[list[str], list[StoredFile]]:
        dirs, files = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            dirs += [entry["Prefix"][len(prefix) :].rstrip("/") for entry in page.get("CommonPrefixes", ())]
            for entry in page.get("Contents", ()):
                name = entry["Key"][len(prefix) :]
                if name:
                    files.append(StoredFile(name, int(entry["Size"]), entry.get("LastModified")))
        return dirs, files

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for entry in page.get("Contents", ()):
                yield entry["Key"], int(entry["Size"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> None:
        batch: list[dict[str, str]] = []
        for key, _ in list(self.keys(prefix)):
            batch.append({"Key": key})
            if len(batch) == 1000:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                batch = []
        if batch:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def presigned_url(self, key: str, filename: str) -> str | None:
        from urllib.parse import quote

        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        return self.storage.url(
            key,
            parameters={"ResponseContentDisposition": disposition},
            expire=settings.SANDBOX_PRESIGN_EXPIRY,
        )


def store() -> FileStore | S3Store:
    """The workspace store over STORAGES["default"] (django-storages caches the backend per process)."""
    backend = storages["default"]
    if hasattr(backend, "bucket_name") and hasattr(backend, "connection"):
        return S3Store(backend)
    if hasattr(backend, "location") and hasattr(backend, "path"):
        return FileStore(backend)
    raise RuntimeError(f"unsupported storage backend for workspaces: {type(backend).__name__}")


def ensure_bucket() -> None:
    store().ensure_bucket()
