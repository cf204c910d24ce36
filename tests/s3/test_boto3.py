"""The S3 gateway through boto3: buckets, objects, listings, ranges, copies, multipart."""

from __future__ import annotations

import hashlib
import io

import pytest
from botocore.exceptions import ClientError


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_put_get_head_and_commit_header(s3, sdk):
    r = s3.put_object(Bucket="master.data", Key="a/hello.txt", Body=b"hello")
    assert r["ETag"] == f'"{hashlib.md5(b"hello").hexdigest()}"'
    commit = r["ResponseMetadata"]["HTTPHeaders"]["x-pfs-commit"]
    assert sdk.inspect_branch("data", "master").head == commit
    got = s3.get_object(Bucket="master.data", Key="a/hello.txt")
    assert got["Body"].read() == b"hello" and got["ETag"] == r["ETag"]
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-pfs-commit"] == commit
    head = s3.head_object(Bucket="master.data", Key="a/hello.txt")
    assert head["ContentLength"] == 5
    # a commit bucket: read-only, and pinned
    s3.put_object(Bucket="master.data", Key="a/hello.txt", Body=b"changed")
    assert s3.get_object(Bucket=f"{commit}.data", Key="a/hello.txt")["Body"].read() == b"hello"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=f"{commit}.data", Key="x", Body=b"no")
    assert code(e.value) == "AccessDenied"
    assert len(list(sdk.list_commit("data"))) == 2  # one commit per put


def test_buckets(s3, sdk):
    sdk.create_branch("data", "dev")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == ["dev.data"]
    s3.create_bucket(Bucket="master.fresh")
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"dev.data", "master.fresh"}
    s3.head_bucket(Bucket="master.fresh")
    for bad, expected in [("master.nosuch", "404"), ("nodot", "404"), ("dev.bad.name", "400")]:
        with pytest.raises(ClientError) as e:
            s3.head_bucket(Bucket=bad)
        assert code(e.value) == expected
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="master.nosuch")
    assert code(e.value) == "NoSuchBucket"


def test_ranges_and_errors(s3):
    body = bytes(range(256)) * 4000
    s3.put_object(Bucket="master.data", Key="big", Body=body)
    assert s3.get_object(Bucket="master.data", Key="big", Range="bytes=10-19")["Body"].read() == body[10:20]
    r = s3.get_object(Bucket="master.data", Key="big", Range="bytes=-5")
    assert r["Body"].read() == body[-5:] and r["ContentRange"] == f"bytes {len(body) - 5}-{len(body) - 1}/{len(body)}"
    assert s3.get_object(Bucket="master.data", Key="big", Range="bytes=1000000-")["Body"].read() == body[1000000:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="master.data", Key="big", Range=f"bytes={len(body)}-")
    assert code(e.value) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="master.data", Key="nope")
    assert code(e.value) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="master.data", Key="a/../b", Body=b"x")
    assert code(e.value) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="master.data", Key="md5", Body=b"x", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert code(e.value) == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_acl(Bucket="master.data")
    assert code(e.value) == "NotImplemented"


def test_listing_prefix_delimiter_pages(s3, sdk):
    from pfsfuse.sdk import Put

    keys = [f"d/{i:03d}.csv" for i in range(25)] + ["d/sub/x", "d/sub/y", "e/z", "top", "d-side"]
    sdk.write("data@master", [Put(k, stream=io.BytesIO(k.encode())) for k in keys])
    paginator = s3.get_paginator("list_objects_v2")
    got = [
        o["Key"]
        for page in paginator.paginate(Bucket="master.data", PaginationConfig={"PageSize": 7})
        for o in page.get("Contents", [])
    ]
    assert got == sorted(keys)
    r = s3.list_objects_v2(Bucket="master.data", Prefix="d/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["d/sub/"]
    assert len(r["Contents"]) == 25 and r["Contents"][0]["Size"] == len("d/000.csv")
    r = s3.list_objects_v2(Bucket="master.data", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["d/", "e/"]
    assert [o["Key"] for o in r["Contents"]] == ["d-side", "top"]
    r = s3.list_objects_v2(Bucket="master.data", Prefix="d/0", MaxKeys=10)
    assert r["IsTruncated"] and r["KeyCount"] == 10
    v1 = [
        o["Key"]
        for page in s3.get_paginator("list_objects").paginate(Bucket="master.data", PaginationConfig={"PageSize": 4})
        for o in page["Contents"]
    ]
    assert v1 == sorted(keys)
    r = s3.list_objects(Bucket="master.data", Prefix="d/s", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["d/sub/"]
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-pfs-commit"] == sdk.inspect_branch("data", "master").head


def test_copy_and_deletes(s3, sdk):
    s3.put_object(Bucket="master.data", Key="src", Body=b"payload")
    s3.copy_object(Bucket="master.data", Key="dst", CopySource={"Bucket": "master.data", "Key": "src"})
    assert s3.get_object(Bucket="master.data", Key="dst")["Body"].read() == b"payload"
    assert sdk.inspect_file("data@master:dst").hash == sdk.inspect_file("data@master:src").hash
    s3.delete_object(Bucket="master.data", Key="src")
    before = len(list(sdk.list_commit("data")))
    for i in range(3):
        s3.put_object(Bucket="master.data", Key=f"m/{i}", Body=b"x")
    r = s3.delete_objects(
        Bucket="master.data", Delete={"Objects": [{"Key": f"m/{i}"} for i in range(3)] + [{"Key": "missing"}]}
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["m/0", "m/1", "m/2", "missing"]
    assert len(list(sdk.list_commit("data"))) == before + 4  # three puts, one delete
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="master.data")["Contents"]] == ["dst"]


def test_multipart(s3, sdk):
    parts = [bytes([i]) * (5 << 20) for i in range(2)] + [b"tail"]
    up = s3.create_multipart_upload(Bucket="master.data", Key="mp.bin")
    etags = []
    for n, data in enumerate(parts, 1):
        r = s3.upload_part(Bucket="master.data", Key="mp.bin", UploadId=up["UploadId"], PartNumber=n, Body=data)
        etags.append({"ETag": r["ETag"], "PartNumber": n})
    assert sdk.list_branch("data") == []  # nothing lands before completion
    done = s3.complete_multipart_upload(
        Bucket="master.data", Key="mp.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": etags}
    )
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    assert s3.get_object(Bucket="master.data", Key="mp.bin")["Body"].read() == b"".join(parts)
    aborted = s3.create_multipart_upload(Bucket="master.data", Key="gone")
    s3.upload_part(Bucket="master.data", Key="gone", UploadId=aborted["UploadId"], PartNumber=1, Body=b"x")
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket="master.data")["Uploads"]] == ["gone"]
    s3.abort_multipart_upload(Bucket="master.data", Key="gone", UploadId=aborted["UploadId"])
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket="master.data",
            Key="gone",
            UploadId=aborted["UploadId"],
            MultipartUpload={"Parts": [{"ETag": '"x"', "PartNumber": 1}]},
        )
    assert code(e.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="master.data", Key="gone")
    assert e.value.response["Error"]["Code"] == "404"


def test_checksums_and_chunked_bodies(s3, sdk):
    # boto3's defaults: a CRC32 checksum; upload_fileobj streams an aws-chunked body
    s3.put_object(Bucket="master.data", Key="crc", Body=b"with checksum", ChecksumAlgorithm="CRC32")
    s3.upload_fileobj(io.BytesIO(b"streamed" * 1000), "master.data", "chunked")
    assert s3.get_object(Bucket="master.data", Key="chunked")["Body"].read() == b"streamed" * 1000
    s3.put_object(Bucket="master.data", Key="sha", Body=b"sha", ChecksumAlgorithm="SHA256")
    assert sdk.get_file("data@master:sha").read() == b"sha"
