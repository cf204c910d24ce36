"""The gateway through the AWS CLI and s3fs, with SigV4 checked, and inside `pfs serve --s3`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs
from botocore.exceptions import ClientError
from s3kit import Gateway, s3_client

from helpers import Daemon, free_port, wait_for

AWS = str(Path(sys.executable).parent / "aws")


def aws(gateway, tmp_path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
    env = {
        **os.environ,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
    }
    return subprocess.run(
        [AWS, "--endpoint-url", gateway.url, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_aws_cli_sync_and_multipart_cp(gateway, sdk, tmp_path):
    sdk.create_repo("data")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    (src / "sub" / "deep.txt").write_text("deep\n")
    r = aws(gateway, tmp_path, "s3", "sync", str(src), "s3://master.data/tree")
    assert r.returncode == 0, r.stderr
    assert sorted(f.path for f in sdk.walk_file("data@master:tree") if f.type == "file") == [
        "tree/f0.txt",
        "tree/f1.txt",
        "tree/f2.txt",
        "tree/f3.txt",
        "tree/f4.txt",
        "tree/sub/deep.txt",
    ]
    r = aws(gateway, tmp_path, "s3", "sync", str(src), "s3://master.data/tree")
    assert r.returncode == 0 and "upload" not in r.stdout  # nothing changed: nothing sent
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))  # past the CLI's 8 MiB multipart threshold
    r = aws(gateway, tmp_path, "s3", "cp", str(big), "s3://master.data/big.bin")
    assert r.returncode == 0, r.stderr
    assert sdk.inspect_file("data@master:big.bin").size == 20 << 20
    r = aws(gateway, tmp_path, "s3", "cp", "s3://master.data/big.bin", str(tmp_path / "back.bin"))
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    down = tmp_path / "down"
    r = aws(gateway, tmp_path, "s3", "sync", "s3://master.data/tree", str(down))
    assert r.returncode == 0, r.stderr
    assert (down / "sub" / "deep.txt").read_text() == "deep\n"
    r = aws(gateway, tmp_path, "s3", "ls", "s3://master.data/tree/")
    assert "PRE sub/" in r.stdout and "f4.txt" in r.stdout
    r = aws(gateway, tmp_path, "s3", "cp", str(big), "s3://master.nosuch/x")
    assert r.returncode != 0 and "NoSuchBucket" in r.stderr


def test_s3fs(gateway, sdk):
    sdk.create_repo("data")
    fs = s3fs.S3FileSystem(
        key="any",
        secret="any",
        endpoint_url=gateway.url,
        skip_instance_cache=True,
        config_kwargs={"s3": {"addressing_style": "path"}},
    )
    fs.pipe("master.data/a/one.csv", b"x,y\n1,2\n")
    fs.pipe("master.data/a/two.csv", b"x,y\n3,4\n")
    assert fs.ls("master.data/a", refresh=True) == ["master.data/a/one.csv", "master.data/a/two.csv"]
    assert fs.cat("master.data/a/two.csv") == b"x,y\n3,4\n"
    with fs.open("master.data/a/one.csv", "rb") as f:
        f.seek(4)
        assert f.read() == b"1,2\n"
    assert fs.glob("master.data/a/*.csv") == ["master.data/a/one.csv", "master.data/a/two.csv"]
    fs.rm("master.data/a/one.csv")
    assert [f.path for f in sdk.list_file("data@master:a")] == ["a/two.csv"]
    import pandas as pd

    df = pd.read_csv(
        "s3://master.data/a/two.csv",
        storage_options={
            "key": "any",
            "secret": "any",
            "endpoint_url": gateway.url,
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        },
    )
    assert df.to_dict("list") == {"x": [3], "y": [4]}


def test_sigv4_checked_when_credentials_are_set(daemon, sdk):
    sdk.create_repo("data")
    gw = Gateway(daemon, "--credentials", "AKEXAMPLE:s3cret")
    try:
        good = s3_client(gw.url, "AKEXAMPLE", "s3cret")
        good.put_object(Bucket="master.data", Key="k", Body=b"v")
        assert good.get_object(Bucket="master.data", Key="k")["Body"].read() == b"v"
        url = good.generate_presigned_url("get_object", Params={"Bucket": "master.data", "Key": "k"})
        import urllib.request

        assert urllib.request.urlopen(url).read() == b"v"
        for key, secret, expected in [
            ("AKEXAMPLE", "wrong", "SignatureDoesNotMatch"),
            ("NOSUCHKEY", "s3cret", "InvalidAccessKeyId"),
        ]:
            with pytest.raises(ClientError) as e:
                s3_client(gw.url, key, secret).put_object(Bucket="master.data", Key="k2", Body=b"x")
            assert e.value.response["Error"]["Code"] == expected
        assert [f.path for f in sdk.list_file("data@master")] == ["k"]  # the refused puts left nothing
    finally:
        gw.stop()


def test_pfs_serve_s3(tmp_home):
    port = free_port()
    d = Daemon(tmp_home / "home", ["--s3", f"127.0.0.1:{port}", "--insecure"])
    try:
        d.start()
        d.pfs("create-repo", "served")
        s3 = s3_client(f"http://127.0.0.1:{port}")
        wait_for(lambda: _answers(s3), proc=d.proc, what="the daemon's S3 gateway")
        s3.put_object(Bucket="master.served", Key="x.txt", Body=b"through the daemon")
        assert d.pfs("get-file", "served@master:x.txt").stdout == b"through the daemon"
    finally:
        try:
            d.stop()
        finally:
            d.kill()


def _answers(s3) -> bool:
    try:
        s3.list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False
