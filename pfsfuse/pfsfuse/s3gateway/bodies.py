"""Request bodies: spooled to a temporary file while their digests are computed, `aws-chunked`
bodies decoded with each piece's signature checked (when signed), and every checksum the client
sent (Content-MD5, x-amz-checksum-* in headers or trailers, the signed payload hash) verified
before anything is written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import tempfile
from collections.abc import Callable
from typing import Any

from awscrt import checksums
from starlette.requests import Request

from pfsfuse.s3gateway.errors import S3Error
from pfsfuse.s3gateway.sigv4 import Signed

_SPOOL = 16 << 20  # bodies up to this size stay in memory
_NOT_SUMS = {"type", "algorithm", "mode"}  # x-amz-checksum-* headers that carry no checksum


class _Crc:
    """A CRC of S3's, as hashlib's interface: `update`, then `digest` (big-endian)."""

    def __init__(self, fn: Callable[[bytes, int], int], width: int):
        self.fn, self.width, self.value = fn, width, 0

    def update(self, data) -> None:
        self.value = self.fn(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self.width, "big")


# Every algorithm S3 takes (x-amz-checksum-ALGORITHM); a body naming another is refused.
_CHECKSUMS: dict[str, Callable[[], Any]] = {
    "crc32": lambda: _Crc(checksums.crc32, 4),
    "crc32c": lambda: _Crc(checksums.crc32c, 4),
    "crc64nvme": lambda: _Crc(checksums.crc64nvme, 8),
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}


class Body:
    """A received body: `file` (at offset 0), its `size`, and its MD5 (for the ETag)."""

    def __init__(self, file, size: int, md5: bytes):
        self.file, self.size, self.md5 = file, size, md5

    def close(self) -> None:
        self.file.close()


class _Chunked:
    """Decodes `aws-chunked`: hex-size[;chunk-signature=...] CRLF data CRLF ... 0 CRLF
    trailers CRLF, feeding the data to `out` and collecting the trailers. With `signed` pieces,
    each piece's signature must chain from the one before it (the first from the request's),
    and the trailers' signature from the last piece's."""

    def __init__(self, out, signed: Signed | None):
        self.out = out
        self.buf = b""
        self.left = 0  # data bytes still due in the current chunk
        self.state = "size"
        self.trailers: dict[str, str] = {}
        self.signed = signed if signed is not None and signed.chunks_signed else None
        self.previous = signed.signature if signed is not None else ""
        self.piece = hashlib.sha256()  # of the current piece's data, when signed
        self.piece_signature = ""
        self.trailer_signature: str | None = None
        self.signed_trailers = b""

    def _piece_done(self) -> None:
        if self.signed is None:
            return
        expected = self.signed.chunk(self.previous, self.piece.hexdigest())
        if not hmac.compare_digest(expected, self.piece_signature):
            raise S3Error(403, "SignatureDoesNotMatch", "an aws-chunked piece's signature does not match")
        self.previous = expected

    def _trailers_done(self) -> None:
        self.state = "done"
        if self.signed is None or not self.signed.payload.endswith("-TRAILER"):
            return
        given = self.trailer_signature or ""
        if not hmac.compare_digest(self.signed.trailer(self.previous, self.signed_trailers), given):
            raise S3Error(403, "SignatureDoesNotMatch", "the aws-chunked trailers' signature does not match")

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.state == "data":
                if not self.buf:
                    return
                take = self.buf[: self.left]
                self.out(take)
                if self.signed is not None:
                    self.piece.update(take)
                self.buf, self.left = self.buf[len(take) :], self.left - len(take)
                if self.left == 0:
                    self._piece_done()
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
                size, _, ext = line.partition(b";")
                try:
                    self.left = int(size, 16)
                except ValueError:
                    raise S3Error(400, "IncompleteBody", "malformed aws-chunked body") from None
                if self.signed is not None:
                    name, _, sig = ext.decode("latin-1").partition("=")
                    if name.strip() != "chunk-signature":
                        raise S3Error(403, "SignatureDoesNotMatch", "an aws-chunked piece carries no signature")
                    self.piece, self.piece_signature = hashlib.sha256(), sig.strip()
                    if not self.left:
                        self._piece_done()
                self.state = "data" if self.left else "trailers"
            elif self.state == "trailers":
                if not line:
                    self._trailers_done()
                    return
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "x-amz-trailer-signature":
                    self.trailer_signature = value
                else:
                    self.trailers[name] = value
                    self.signed_trailers += f"{name}:{value}\n".encode("latin-1")

    def finish(self) -> None:
        if self.state == "trailers" and not self.buf:  # no blank line after the trailers
            self._trailers_done()
        if self.state != "done":
            raise S3Error(400, "IncompleteBody", "the aws-chunked body ended early")


async def receive(request: Request, signed: Signed | None) -> Body:
    """The request's body, decoded and verified (`signed`: what its signature covers, None when
    auth is not active)."""
    h = request.headers
    file = tempfile.SpooledTemporaryFile(_SPOOL)
    md5 = hashlib.md5()
    signed_sha256 = signed.sha256 if signed is not None else None
    sha = hashlib.sha256() if signed_sha256 else None
    wanted: dict[str, str] = {
        k[len("x-amz-checksum-") :]: v
        for k, v in h.items()
        if k.startswith("x-amz-checksum-") and k[len("x-amz-checksum-") :] not in _NOT_SUMS
    }
    algo = (h.get("x-amz-sdk-checksum-algorithm") or "").lower()
    trailer = (h.get("x-amz-trailer") or "").lower()
    if trailer.startswith("x-amz-checksum-"):
        algo = trailer[len("x-amz-checksum-") :]
    unknown = sorted({*wanted, algo} - {""} - set(_CHECKSUMS))
    if unknown:
        raise S3Error(400, "InvalidRequest", f"checksum algorithm {unknown[0].upper()} is not supported")
    sums = {a: _CHECKSUMS[a]() for a in {*wanted, algo} if a}
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
        chunked = _Chunked(out, signed)
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
            if trailer and trailer not in chunked.trailers:
                raise S3Error(400, "IncompleteBody", f"the body ends without its trailer {trailer}")
            trailed = {
                k[len("x-amz-checksum-") :]: v for k, v in chunked.trailers.items() if k.startswith("x-amz-checksum-")
            }
            if set(trailed) - set(sums):
                raise S3Error(
                    400,
                    "InvalidRequest",
                    f"a trailing checksum {sorted(set(trailed) - set(sums))[0]} was not announced in x-amz-trailer",
                )
            wanted.update(trailed)
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
            if base64.b64encode(sums[name].digest()).decode() != value:
                raise S3Error(400, "BadDigest", f"the body does not match its {name.upper()} checksum")
    except BaseException:
        file.close()
        raise
    file.seek(0)
    return Body(file, size, md5.digest())
