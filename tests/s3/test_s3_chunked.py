"""aws-chunked bodies: each piece's signature (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) and the trailing
checksums are verified, and a body that fails either is refused with nothing committed; real
boto3 over HTTPS sends its default trailing checksums, which pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import zlib
from urllib.parse import urlparse

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from awscrt import checksums
from botocore.config import Config
from s3kit import Gateway

from helpers import Daemon, free_port, self_signed, wait_for

_EMPTY = hashlib.sha256(b"").hexdigest()
KEY, SECRET = "AKEXAMPLE", "s3cret"


def _b64(n: int, width: int) -> str:
    return base64.b64encode(n.to_bytes(width, "big")).decode()


# Each algorithm's checksum as S3 spells it, computed here independently of the gateway.
SUMS = {
    "crc32": lambda d: _b64(zlib.crc32(d), 4),
    "crc32c": lambda d: _b64(checksums.crc32c(d), 4),
    "crc64nvme": lambda d: _b64(checksums.crc64nvme(d), 8),
    "sha1": lambda d: base64.b64encode(hashlib.sha1(d).digest()).decode(),
    "sha256": lambda d: base64.b64encode(hashlib.sha256(d).digest()).decode(),
}


def _send(url: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("PUT", path, body=body, headers={**headers, "content-length": str(len(body))})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _signed_put(url, path, pieces, *, trailer=None, tamper=None, bad_trailer_sig=False, secret=SECRET):
    """A PUT signed as the AWS SDKs sign aws-chunked bodies: the headers by botocore's SigV4 with
    the streaming payload marker, then each piece chained from the seed signature. `trailer`
    is (name, value); `tamper(i, data)` changes piece i after it was signed."""
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    headers = {
        "x-amz-content-sha256": payload,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(sum(map(len, pieces))),
    }
    if trailer:
        headers["x-amz-trailer"] = trailer[0]
    req = botocore.awsrequest.AWSRequest("PUT", url + path, headers=headers)
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(KEY, secret), "s3", "us-east-1").add_auth(req)
    amz_date = req.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    k = hmac.new(f"AWS4{secret}".encode(), amz_date[:8].encode(), hashlib.sha256).digest()
    for part in ("us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()

    def sign(*lines: str) -> str:
        return hmac.new(k, "\n".join(lines).encode(), hashlib.sha256).hexdigest()

    previous = req.headers["Authorization"].rpartition("Signature=")[2]
    body = b""
    for i, data in enumerate([*pieces, b""]):
        previous = sign("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, _EMPTY, hashlib.sha256(data).hexdigest())
        if tamper is not None:
            data = tamper(i, data)
        body += f"{len(data):x};chunk-signature={previous}\r\n".encode() + data
        body += b"\r\n" if data or not trailer else b""
    if trailer:
        line = f"{trailer[0]}:{trailer[1]}"
        sig = sign(
            "AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, hashlib.sha256((line + "\n").encode()).hexdigest()
        )
        body += f"{line}\r\nx-amz-trailer-signature:{'0' * 64 if bad_trailer_sig else sig}\r\n\r\n".encode()
    return _send(url, path, dict(req.headers.items()), body)


def _unsigned_trailer_put(url, path, pieces, algo, value=None, *, announce=None):
    """A PUT with an unsigned aws-chunked body and a trailing checksum, as boto3 sends by default."""
    data = b"".join(pieces)
    name = f"x-amz-checksum-{algo}"
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": announce or name,
    }
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    body += f"0\r\n{name}:{value if value is not None else SUMS[algo](data)}\r\n\r\n".encode()
    return _send(url, path, headers, body)


def test_signed_pieces_and_trailers_are_verified(daemon, sdk):
    sdk.create_repo("data")
    gw = Gateway(daemon, "--credentials", f"{KEY}:{SECRET}")
    try:
        pieces = [b"a" * 65536, b"b" * 65536, b"tail"]  # the first two: same size, to swap
        status, _ = _signed_put(gw.url, "/master.data/good", pieces)
        assert status == 200
        assert sdk.get_file("data@master:good").read() == b"".join(pieces)
        commits = len(list(sdk.list_commit("data")))

        def flip(i, data):
            return data[:-1] + b"X" if i == 1 else data

        def swap(i, data):  # pieces sent in another order than they were signed in
            return pieces[1 - i] if i < 2 else data

        for tampered in (
            _signed_put(gw.url, "/master.data/t1", pieces, tamper=flip),
            _signed_put(gw.url, "/master.data/t2", pieces, tamper=swap),
            _signed_put(gw.url, "/master.data/t3", pieces, secret="wrong"),
        ):
            assert tampered[0] == 403 and "SignatureDoesNotMatch" in tampered[1], tampered
        crc = ("x-amz-checksum-crc32c", SUMS["crc32c"](b"".join(pieces)))
        status, body = _signed_put(gw.url, "/master.data/trailed", pieces, trailer=crc)
        assert status == 200, body
        commits += 1
        status, body = _signed_put(gw.url, "/master.data/t4", pieces, trailer=(crc[0], SUMS["crc32c"](b"other")))
        assert status == 400 and "BadDigest" in body
        status, body = _signed_put(gw.url, "/master.data/t5", pieces, trailer=crc, bad_trailer_sig=True)
        assert status == 403 and "SignatureDoesNotMatch" in body
        # Refused bodies left nothing: no object, no commit.
        assert sorted(f.path for f in sdk.list_file("data@master")) == ["good", "trailed"]
        assert len(list(sdk.list_commit("data"))) == commits
    finally:
        gw.stop()


@pytest.mark.parametrize("algo", sorted(SUMS))
def test_trailing_checksums_are_verified(daemon, sdk, gateway, algo):
    sdk.create_repo("data")
    pieces = [b"0123456789" * 1000, b"tail"]
    status, body = _unsigned_trailer_put(gateway.url, "/master.data/ok", pieces, algo)
    assert status == 200, body
    status, body = _unsigned_trailer_put(gateway.url, "/master.data/bad", pieces, algo, SUMS[algo](b"other"))
    assert status == 400 and "BadDigest" in body and algo.upper() in body
    # a trailer other than the one announced
    status, body = _unsigned_trailer_put(gateway.url, "/master.data/odd", pieces, algo, announce="x-amz-checksum-x")
    assert status == 400 and "not supported" in body
    assert [f.path for f in sdk.list_file("data@master")] == ["ok"]


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_boto3_over_https_sends_trailing_checksums(tmp_path, tmp_home, algo):
    cert, key = self_signed(tmp_path)
    port = free_port()
    d = Daemon(tmp_home / "home", ["--s3", f"127.0.0.1:{port}", "--tls", f"{cert},{key}", "--insecure"])
    try:
        d.start()
        d.pfs("create-repo", "data")
        s3 = boto3.client(
            "s3",
            endpoint_url=f"https://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="any",
            aws_secret_access_key="any",
            verify=cert,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        wait_for(lambda: _answers(s3), what="the S3 gateway to answer over HTTPS")
        sent: list[str] = []
        s3.meta.events.register(
            "before-send.s3.PutObject",
            lambda request, **kw: sent.append(request.headers["x-amz-content-sha256"].decode()),
        )
        data = b"boto3 " * 100_000
        s3.upload_fileobj(io.BytesIO(data), "master.data", "up.bin", ExtraArgs={"ChecksumAlgorithm": algo})
        assert sent == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"]  # boto3 streamed it aws-chunked
        got = s3.get_object(Bucket="master.data", Key="up.bin")
        assert got["Body"].read() == data and got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    finally:
        d.stop()
        d.kill()


def _answers(s3) -> bool:
    try:
        s3.list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
