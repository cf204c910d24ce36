"""pfsfuse.ingress in-process: an object read cut short by the network resumes where it stopped,
and gives exactly the object's bytes."""

import os

from helpers import BUCKET, FaultProxy
from pfsfuse import ingress
from pfsfuse.chunks import S3Store, open_store
from pfsfuse.metadata.errors import Unavailable


def test_object_read_resumes_after_faults(request, monkeypatch):
    moto = request.getfixturevalue("moto")
    monkeypatch.setattr(S3Store, "retry_delay", 0.01)
    monkeypatch.setattr(S3Store, "retry_attempts", 20)
    data = os.urandom(6 << 20)
    key = f"ingress-{os.urandom(4).hex()}/big.bin"
    with open_store(f"s3://{BUCKET}?endpoint={moto.url}") as direct:
        direct.client.put_object(Bucket=BUCKET, Key=key, Body=data)
    faults = {"truncate": 0.4, "reset": 0.1, "error": 0.1}
    with FaultProxy(f"127.0.0.1:{moto.port}", faults, seed=3) as proxy:
        # The endpoint in the URL: a client of its own, through the proxy.
        with ingress.open_url(f"s3://{BUCKET}/{key}?endpoint={proxy.url}") as f:
            assert f.read() == data
    assert proxy.faults.get("truncate", 0) >= 2, proxy.faults


def test_object_read_gives_up_when_every_request_fails(request, monkeypatch):
    # (A read that makes progress goes on: only failures in a row count against the budget.)
    moto = request.getfixturevalue("moto")
    monkeypatch.setattr(S3Store, "retry_delay", 0.01)
    key = f"ingress-{os.urandom(4).hex()}/x"
    with open_store(f"s3://{BUCKET}?endpoint={moto.url}") as direct:
        direct.client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 1000)
    with FaultProxy(f"127.0.0.1:{moto.port}", {"error": 1.0}) as proxy:
        with ingress.open_url(f"s3://{BUCKET}/{key}?endpoint={proxy.url}") as f:
            try:
                f.read()
            except Unavailable as e:
                assert str(e).startswith(f"cannot read s3://{BUCKET}/{key}"), e
            else:
                raise AssertionError("a read that never completes must fail")
    assert proxy.faults["error"] == S3Store.retry_attempts
