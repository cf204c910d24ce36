"""Request bodies: spooled to a temporary file while their digests are computed, `aws-chunked`
bodies decoded, and every checksum the client sent (Content-MD5, x-amz-checksum-*, the signed
payload hash) verified before anything is written."""

from __future__ import annotations

import base64
import hashlib
import tempfile
import zlib
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from pfsfuse.s3gateway.errors import S3Error

_SPOOL = 16 << 20  # bodies up to this size stay in memory


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


# The algorithms whose checksums are verified here; others (CRC32C, CRC64NVME) pass unchecked.
_CHECKSUMS: dict[str, Callable[[], Any]] = {"crc32": _Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}


class Body:
    """A received body: `file` (at offset 0), its `size`, and its MD5 (for the ETag)."""

    def __init__(self, file, size: int, md5: bytes):
        self.file, self.size, self.md5 = file, size, md5

    def close(self) -> None:
        self.file.close()


class _Chunked:
    """Decodes `aws-chunked`: hex-size[;chunk-signature=...] CRLF data CRLF ... 0 CRLF
    trailers CRLF, feeding the data to `out` and collecting the trailers."""

    def __init__(self, out):
        self.out = out
        self.buf = b""
        self.left = 0  # data bytes still due in the current chunk
        self.state = "size"
        self.trailers: dict[str, str] = {}

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.state == "data":
                if not self.buf:
                    return
                take = self.buf[: self.left]
                self.out(take)
                self.buf, self.left = self.buf[len(take) :], self.left - len(take)
                if self.left == 0:
                    self.state = "crlf"
                continue
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                if len(self.buf) > 4096:
                    raise S3Error(400, "IncompleteBody", "malformed aws-chunked body")
                return
            self.buf = rest
            if self.state == "crlf":
                if line:
                    raise S3Error(400, "IncompleteBody", "malformed aws-chunked body")
                self.state = "size"
            elif self.state == "size":
                try:
                    self.left = int(line.split(b";")[0], 16)
                except ValueError:
                    raise S3Error(400, "IncompleteBody", "malformed aws-chunked body") from None
                self.state = "data" if self.left else "trailers"
            elif self.state == "trailers":
                if not line:
                    self.state = "done"
                    return
                name, _, value = line.decode("latin-1").partition(":")
                self.trailers[name.strip().lower()] = value.strip()

    def finish(self) -> None:
        if self.state not in ("done", "trailers") or (self.state == "trailers" and self.buf):
            raise S3Error(400, "IncompleteBody", "the aws-chunked body ended early")


async def receive(request: Request, signed_sha256: str | None) -> Body:
    """The request's body, decoded and verified."""
    h = request.headers
    file = tempfile.SpooledTemporaryFile(_SPOOL)
    md5 = hashlib.md5()
    sha = hashlib.sha256() if signed_sha256 else None
    wanted: dict[str, str] = {
        k[len("x-amz-checksum-") :]: v
        for k, v in h.items()
        if k.startswith("x-amz-checksum-") and k != "x-amz-checksum-type"
    }
    algo = (h.get("x-amz-sdk-checksum-algorithm") or "").lower()
    trailer = (h.get("x-amz-trailer") or "").lower()
    if trailer.startswith("x-amz-checksum-"):
        algo = trailer[len("x-amz-checksum-") :]
    sums = {a: _CHECKSUMS[a]() for a in {*wanted, algo} if a in _CHECKSUMS}
    size = 0

    def out(data: bytes) -> None:
        nonlocal size
        size += len(data)
        file.write(data)
        md5.update(data)
        for s in sums.values():
            s.update(data)

    raw_hash = sha
    chunked = None
    if "aws-chunked" in (h.get("content-encoding") or "") or (h.get("x-amz-content-sha256") or "").startswith(
        "STREAMING-"
    ):
        chunked = _Chunked(out)
    try:
        async for piece in request.stream():
            if raw_hash is not None:
                raw_hash.update(piece)
            if chunked is not None:
                chunked.feed(piece)
            else:
                out(piece)
        if chunked is not None:
            chunked.finish()
            wanted.update(
                {k[len("x-amz-checksum-") :]: v for k, v in chunked.trailers.items() if k.startswith("x-amz-checksum-")}
            )
            declared = h.get("x-amz-decoded-content-length")
            if declared is not None and declared.isdigit() and int(declared) != size:
                raise S3Error(400, "IncompleteBody", f"expected {declared} bytes, got {size}")
        elif "content-length" in h and h["content-length"].isdigit() and int(h["content-length"]) != size:
            raise S3Error(400, "IncompleteBody", "the body ended early")
        if raw_hash is not None and raw_hash.hexdigest() != signed_sha256:
            raise S3Error(400, "XAmzContentSHA256Mismatch", "the body does not hash to x-amz-content-sha256")
        if "content-md5" in h and base64.b64encode(md5.digest()).decode() != h["content-md5"]:
            raise S3Error(400, "BadDigest", "the body does not match Content-MD5")
        for name, value in wanted.items():
            if name in sums and base64.b64encode(sums[name].digest()).decode() != value:
                raise S3Error(400, "BadDigest", f"the body does not match its {name.upper()} checksum")
    except BaseException:
        file.close()
        raise
    file.seek(0)
    return Body(file, size, md5.digest())
