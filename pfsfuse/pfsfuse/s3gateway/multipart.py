"""Multipart uploads: parts kept in a private temporary directory until the upload is completed
(then written as one put) or aborted. Nothing reaches a commit before completion, so an upload
that is aborted or never completed leaves no trace in any repo."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

from pfsfuse.metadata.records import Xattrs
from pfsfuse.s3gateway.errors import S3Error

MAX_PART = 10_000


@dataclass
class Upload:
    bucket: str
    key: str
    dir: str
    xattrs: Xattrs = ()  # the object's user metadata, given when the upload started
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)  # number -> (md5 hex, size)


class Uploads:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="pfs-s3-uploads-")
        os.chmod(self.root, 0o700)
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def create(self, bucket: str, key: str, xattrs: Xattrs = ()) -> str:
        upload_id = secrets.token_hex(16)
        path = os.path.join(self.root, upload_id)
        os.mkdir(path)
        with self._lock:
            self._uploads[upload_id] = Upload(bucket, key, path, xattrs)
        return upload_id

    def get(self, upload_id: str, bucket: str, key: str) -> Upload:
        with self._lock:
            up = self._uploads.get(upload_id)
        if up is None or (up.bucket, up.key) != (bucket, key):
            raise S3Error(404, "NoSuchUpload", f"no upload {upload_id!r} for {bucket}/{key}")
        return up

    def listing(self, bucket: str) -> list[tuple[str, str]]:
        with self._lock:
            return sorted((u.key, i) for i, u in self._uploads.items() if u.bucket == bucket)

    def put_part(self, up: Upload, number: int, body_file, md5: bytes, size: int) -> str:
        if not 1 <= number <= MAX_PART:
            raise S3Error(400, "InvalidArgument", f"part numbers are 1 to {MAX_PART}")
        with open(os.path.join(up.dir, str(number)), "wb") as out:
            shutil.copyfileobj(body_file, out, 1 << 20)
        up.parts[number] = (md5.hex(), size)
        return md5.hex()

    def assemble(self, up: Upload, wanted: list[tuple[int, str]]):
        """The parts the client names, in order, as one stream; and the multipart ETag."""
        if not wanted:
            raise S3Error(400, "MalformedXML", "a completed upload needs at least one part")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "parts must be listed in ascending order")
        digest = hashlib.md5()
        for n, etag in wanted:
            have = up.parts.get(n)
            if have is None or have[0] != etag.strip('"'):
                raise S3Error(400, "InvalidPart", f"part {n} was not uploaded with ETag {etag}")
            digest.update(bytes.fromhex(have[0]))
        return _Joined([os.path.join(up.dir, str(n)) for n in numbers]), f"{digest.hexdigest()}-{len(numbers)}"

    def drop(self, upload_id: str) -> None:
        with self._lock:
            up = self._uploads.pop(upload_id, None)
        if up is not None:
            shutil.rmtree(up.dir, ignore_errors=True)


class _Joined:
    """Files read one after the other as one binary stream."""

    def __init__(self, paths: list[str]):
        self._paths = list(paths)
        self._file: BinaryIO | None = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._file is None:
                if not self._paths:
                    return b""
                self._file = open(self._paths.pop(0), "rb")
            data = self._file.read(n)
            if data or n == 0:
                return data
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
