"""An object's user metadata through boto3: kept as the file's user extended attributes (which
the SDK, and a mount, show), and replaced, copied or refused as S3 does."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from pfsfuse.api.types import SetStat
from pfsfuse.metadata.records import Stat

B = "master.data"


def _meta(s3, key: str) -> dict[str, str]:
    head = s3.head_object(Bucket=B, Key=key)
    assert s3.get_object(Bucket=B, Key=key)["Metadata"] == head["Metadata"]
    return head["Metadata"]


def test_metadata_is_kept_as_attributes_copied_and_replaced(s3, sdk):
    s3.put_object(Bucket=B, Key="plain", Body=b"p")
    assert _meta(s3, "plain") == {}
    assert sdk.inspect_file(("data", "master"), "plain").mode is None  # (no stat made for nothing)
    given = {"origin": "https://example.org/a.csv", "Team": "data"}
    s3.put_object(Bucket=B, Key="a.csv", Body=b"x,y\n", Metadata=given)
    assert _meta(s3, "a.csv") == {"origin": "https://example.org/a.csv", "team": "data"}
    assert sdk.inspect_file(("data", "master"), "a.csv").xattrs == {
        "user.origin": b"https://example.org/a.csv",
        "user.team": b"data",
    }
    s3.copy_object(Bucket=B, Key="copied.csv", CopySource=f"{B}/a.csv")  # the source's, by default
    assert _meta(s3, "copied.csv") == _meta(s3, "a.csv")
    s3.copy_object(Bucket=B, Key="new.csv", CopySource=f"{B}/a.csv", Metadata={"k": "v"}, MetadataDirective="REPLACE")
    assert _meta(s3, "new.csv") == {"k": "v"}
    s3.put_object(Bucket=B, Key="a.csv", Body=b"x,y\n1,2\n")  # a put replaces it all, as on S3
    assert _meta(s3, "a.csv") == {}
    assert sdk.inspect_file(("data", "master"), "a.csv").xattrs is None


def test_multipart_metadata_and_what_a_header_cannot_carry(s3, sdk):
    up = s3.create_multipart_upload(Bucket=B, Key="mp.bin", Metadata={"parts": "1"})
    r = s3.upload_part(Bucket=B, Key="mp.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"one part")
    s3.complete_multipart_upload(
        Bucket=B,
        Key="mp.bin",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"ETag": r["ETag"], "PartNumber": 1}]},
    )
    assert _meta(s3, "mp.bin") == {"parts": "1"}
    # Set as a mount's setfattr would: a binary value is counted, not sent.
    st = Stat(0o644, 0, 0, 1, 1, xattrs=(("user.bin", b"\x00\xff"), ("user.ok", b"fine")))
    sdk.write(("data", "master"), [SetStat("mp.bin", st)])
    head = s3.head_object(Bucket=B, Key="mp.bin")
    assert head["Metadata"] == {"ok": "fine"}
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-missing-meta"] == "1"


def test_too_much_metadata_is_refused_and_changes_nothing(s3, sdk):
    s3.put_object(Bucket=B, Key="f", Body=b"before")
    commits = len(list(sdk.list_commit("data")))
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=B, Key="f", Body=b"after", Metadata={"v": "x" * 3000})
    assert e.value.response["Error"]["Code"] == "MetadataTooLarge"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=B, Key="g", CopySource=f"{B}/f", MetadataDirective="SOMETIMES")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert s3.get_object(Bucket=B, Key="f")["Body"].read() == b"before"
    assert len(list(sdk.list_commit("data"))) == commits
