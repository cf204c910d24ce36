"""Fixtures: an S3 gateway in front of a real daemon, the SDK beside it, a boto3 client."""

from __future__ import annotations

import pytest
from s3kit import Gateway, s3_client

from pfsfuse.sdk import Client


@pytest.fixture
def sdk(daemon):
    c = Client(f"unix:{daemon.home}/pfs.sock")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def gateway(daemon):
    gw = Gateway(daemon)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def s3(gateway, sdk):
    sdk.create_repo("data")
    return s3_client(gateway.url)
