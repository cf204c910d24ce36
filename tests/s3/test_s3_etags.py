"""ETags are what S3 gives (the MD5 of a single-part upload, md5-of-md5s-N of a multipart one) and
stay the same after the daemon restarts and through another gateway process."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from s3kit import Gateway, s3_client
from test_clients import aws

from pfsfuse.sdk import InvalidArgument, Put


def _md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _listed(s3, bucket: str) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}


def test_etags_are_md5s_and_survive_restarts(daemon, sdk, tmp_path):
    sdk.create_repo("data")
    sdk.create_repo("other")
    gw = Gateway(daemon)
    try:
        s3 = s3_client(gw.url)
        small = os.urandom(1000)
        s3.put_object(Bucket="master.data", Key="small.bin", Body=small)
        parts = [os.urandom(5 << 20), os.urandom(1 << 20)]
        up = s3.create_multipart_upload(Bucket="master.data", Key="mp.bin")
        done = []
        for n, data in enumerate(parts, 1):
            r = s3.upload_part(Bucket="master.data", Key="mp.bin", UploadId=up["UploadId"], PartNumber=n, Body=data)
            done.append({"ETag": r["ETag"], "PartNumber": n})
        s3.complete_multipart_upload(
            Bucket="master.data", Key="mp.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": done}
        )
        s3.copy_object(Bucket="master.other", Key="copied.bin", CopySource="master.data/small.bin")
    finally:
        gw.stop()
    md5 = _md5(small)
    multi = f'"{hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()}-2"'
    sdk.close()
    daemon.stop()
    daemon.start()
    gw = Gateway(daemon)  # a new gateway process, in front of the restarted daemon
    try:
        s3 = s3_client(gw.url)
        assert s3.head_object(Bucket="master.data", Key="small.bin")["ETag"] == md5
        assert s3.get_object(Bucket="master.data", Key="small.bin")["ETag"] == md5
        assert s3.head_object(Bucket="master.data", Key="mp.bin")["ETag"] == multi
        assert _listed(s3, "master.data") == {"small.bin": md5, "mp.bin": multi}
        assert _listed(s3, "master.other") == {"copied.bin": md5}  # a copy keeps its ETag
        # Bytes written otherwise (pfs put-file) have no MD5 on record: a one-part multipart
        # form, which S3 clients do not compare with an MD5, the same in HEAD and listings.
        daemon.pfs("put-file", "data@master:plain.txt", "-f", "-", input=b"plain\n")
        plain = s3.head_object(Bucket="master.data", Key="plain.txt")["ETag"]
        assert plain.endswith('-1"') and _listed(s3, "master.data")["plain.txt"] == plain
        # The same bytes written again by S3 now have their MD5.
        s3.put_object(Bucket="master.data", Key="plain.txt", Body=b"plain\n")
        assert s3.head_object(Bucket="master.data", Key="plain.txt")["ETag"] == _md5(b"plain\n")
    finally:
        gw.stop()


def test_aws_sync_after_a_restart_sends_nothing(daemon, sdk, tmp_path):
    sdk.create_repo("data")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    gw = Gateway(daemon)
    try:
        r = aws(gw, tmp_path, "s3", "sync", str(src), "s3://master.data/tree")
        assert r.returncode == 0 and r.stdout.count("upload:") == 3, r.stderr
    finally:
        gw.stop()
    daemon.stop()
    daemon.start()
    gw = Gateway(daemon)
    try:
        r = aws(gw, tmp_path, "s3", "sync", str(src), "s3://master.data/tree")
        assert r.returncode == 0 and "upload" not in r.stdout, r.stdout + r.stderr
        listed = _listed(s3_client(gw.url), "master.data")
        assert listed == {f"tree/f{i}.txt": _md5(f"file {i}\n".encode()) for i in range(3)}
    finally:
        gw.stop()


def test_etags_belong_to_their_repo(sdk):
    sdk.create_repo("a")
    sdk.create_repo("b")
    tag = "0123456789abcdef" * 2
    sdk.write(("a", "master"), [Put("f", stream=io.BytesIO(b"x"), etag=tag)])
    sdk.write(("b", "master"), [Put("f", stream=io.BytesIO(b"x"))])
    h = sdk.inspect_file("a@master:f").hash
    assert h == sdk.inspect_file("b@master:f").hash
    assert sdk.api.etags("a", [h]) == [tag]
    assert sdk.api.etags("b", [h]) == [""]  # a writer of a vouches for a's ETags only
    for bad in (
        Put("g", stream=io.BytesIO(b"y"), etag="not-an-etag"),
        Put("f", stream=io.BytesIO(b"y"), etag=tag, append=True),
    ):
        with pytest.raises(InvalidArgument):
            sdk.write(("a", "master"), [bad])
    sdk.delete_repo("a")
    sdk.create_repo("a")
    sdk.write(("a", "master"), [Put("f", stream=io.BytesIO(b"x"))])
    assert sdk.api.etags("a", [h]) == [""]  # gone with the repo
