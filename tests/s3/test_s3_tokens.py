"""The gateway inside the daemon (`pfs serve --s3`) with auth active: SigV4 credentials are a pfs
token (access key = secret key = the token), the signature is checked, and each request then
passes the daemon's ACL check as its token's subject, through boto3."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from s3kit import s3_client

from helpers import Daemon, free_port, wait_for


def _code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return e.value.response["Error"]["Code"]


@pytest.fixture
def served(tmp_home):
    port = free_port()
    d = Daemon(tmp_home / "home", ["--s3", f"127.0.0.1:{port}", "--insecure"])
    try:
        d.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), what="the S3 gateway to answer")
        yield d, url
    finally:
        d.stop()
        d.kill()


def _answers(url: str) -> bool:
    try:
        s3_client(url).list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _token(out: bytes) -> str:
    return next(line.split()[1] for line in out.decode().splitlines() if line.startswith("Token:"))


def test_sigv4_with_tokens_and_acls(served):
    d, url = served
    # Without auth, any credentials are accepted.
    d.pfs("create-repo", "shared")
    d.pfs("put-file", "shared", "master", "a.txt", input=b"for bob")
    assert [b["Name"] for b in s3_client(url, "x", "y").list_buckets()["Buckets"]] == ["master.shared"]

    admin = _token(d.pfs("auth", "activate", "--admins=admin").stdout)
    d.pfs("create-repo", "secret")
    d.pfs("put-file", "secret", "master", "s.txt", input=b"not for bob")
    bob = _token(d.pfs("auth", "get-auth-token", "bob").stdout)
    d.pfs("auth", "set", "bob", "reader", "shared")

    with pytest.raises(ClientError) as e:
        s3_client(url, "x", "y").list_buckets()
    assert _code(e) == "ExpiredToken"
    with pytest.raises(ClientError) as e:
        s3_client(url, bob, "not-the-token").list_buckets()
    assert _code(e) == "SignatureDoesNotMatch"

    as_bob = s3_client(url, bob, bob)
    assert [b["Name"] for b in as_bob.list_buckets()["Buckets"]] == ["master.shared"]  # only what bob reads
    assert as_bob.get_object(Bucket="master.shared", Key="a.txt")["Body"].read() == b"for bob"
    with pytest.raises(ClientError) as e:
        as_bob.put_object(Bucket="master.shared", Key="b.txt", Body=b"x")
    assert _code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        as_bob.get_object(Bucket="master.secret", Key="s.txt")
    assert _code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        as_bob.list_objects_v2(Bucket="master.secret")
    assert _code(e) == "AccessDenied"

    d.pfs("auth", "set", "bob", "writer", "shared")
    as_bob.put_object(Bucket="master.shared", Key="b.txt", Body=b"from bob")
    assert d.pfs("get-file", "shared", "master", "b.txt").stdout == b"from bob"

    as_admin = s3_client(url, admin, admin)
    assert sorted(b["Name"] for b in as_admin.list_buckets()["Buckets"]) == ["master.secret", "master.shared"]

    d.pfs("auth", "revoke", input=bob.encode())
    with pytest.raises(ClientError) as e:
        as_bob.get_object(Bucket="master.shared", Key="a.txt")
    assert _code(e) == "ExpiredToken"


def test_standalone_gateway_with_tokens(daemon):
    from s3kit import Gateway

    daemon.pfs("auth", "activate", "--admins=admin")
    daemon.pfs("create-repo", "shared")
    daemon.pfs("create-repo", "secret")
    daemon.pfs("put-file", "shared", "master", "a.txt", input=b"for bob")
    bob = _token(daemon.pfs("auth", "get-auth-token", "bob").stdout)
    daemon.pfs("auth", "set", "bob", "reader", "shared")
    gw = Gateway(daemon, "--tokens")
    try:
        as_bob = s3_client(gw.url, bob, bob)
        assert [b["Name"] for b in as_bob.list_buckets()["Buckets"]] == ["master.shared"]
        assert as_bob.get_object(Bucket="master.shared", Key="a.txt")["Body"].read() == b"for bob"
        with pytest.raises(ClientError) as e:
            as_bob.put_object(Bucket="master.shared", Key="b.txt", Body=b"x")
        assert _code(e) == "AccessDenied"
        with pytest.raises(ClientError) as e:
            s3_client(gw.url, "pfs_made_up", "pfs_made_up").list_buckets()
        assert _code(e) == "ExpiredToken"
    finally:
        gw.stop()
