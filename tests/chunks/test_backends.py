"""The cloud backends' specifics: URLs, error classification, start-up checks, paging.

The contract they share is in test_object_store.py; faults in test_faults.py.
"""

import http.client
from types import SimpleNamespace

import azure.core.exceptions as az
import botocore.exceptions as boto
import google.api_core.exceptions as gapi
import google.auth.exceptions
import pytest
import requests.exceptions
from google.cloud.storage.exceptions import InvalidResponse

from conftest import BUCKET
from helpers import free_port
from pfsfuse.chunks import AzureStore, GCSStore, S3Store, StorageError, objects, open_store


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """Fails the test if a call is retried."""

    def refuse(delay):
        raise AssertionError("a permanent failure was retried")

    monkeypatch.setattr(objects, "sleep", refuse)


@pytest.fixture
def fake_gcs(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")


@pytest.fixture
def fake_azure(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")


def test_s3_url():
    store = open_store("s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix) == ("bkt", "a/b/")
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.client.meta.region_name == "eu-west-1"
    assert store.client.meta.config.s3["addressing_style"] == "path"  # MinIO-like endpoints
    assert open_store("s3://bkt").prefix == ""


def test_s3_endpoint_from_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    assert open_store("s3://bkt/x").client.meta.endpoint_url == "http://127.0.0.1:9001"


def test_gcs_and_azure_urls(fake_gcs, fake_azure):
    gs = open_store("gs://bkt/p%20q")
    assert isinstance(gs, GCSStore) and (gs.bucket, gs.prefix) == ("bkt", "p q/")
    azs = open_store("az://container")
    assert isinstance(azs, AzureStore) and (azs.bucket, azs.prefix) == ("container", "")


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///x",
        "s3://b/a//c",
        "s3://b/../c",
        "s3://b/.x",
        "s3://b/x?color=red",
        "gs://b?endpoint=x",
        "az://c#f",
    ],
)
def test_bad_urls(url, fake_gcs, fake_azure):
    with pytest.raises(ValueError, match="unsupported storage URL"):
        open_store(url)


def client_error(code: str, status: int) -> boto.ClientError:
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return boto.ClientError(response, "GetObject")


def test_s3_classification():
    store = open_store("s3://bkt/x")
    temporary = [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        client_error("RequestTimeout", 400),
        client_error("Throttling", 400),
        boto.EndpointConnectionError(endpoint_url="http://x"),
        boto.ReadTimeoutError(endpoint_url="http://x"),
        boto.ConnectionClosedError(endpoint_url="http://x"),
        boto.ResponseStreamingError(error="reset"),
        boto.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        ConnectionResetError(),
    ]
    permanent = [
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        client_error("InvalidAccessKeyId", 403),
        boto.NoCredentialsError(),
        ValueError("a bug"),
    ]
    assert all(store.is_temp_failure(e) for e in temporary)
    assert not any(store.is_temp_failure(e) for e in permanent)


def test_gcs_classification(fake_gcs):
    store = open_store("gs://bkt/x")
    response = SimpleNamespace(status_code=503)
    temporary = [
        gapi.ServiceUnavailable("x"),
        gapi.TooManyRequests("x"),
        gapi.InternalServerError("x"),
        gapi.GatewayTimeout("x"),
        requests.exceptions.ConnectionError("reset"),
        requests.exceptions.ReadTimeout("slow"),
        requests.exceptions.ChunkedEncodingError("cut short"),
        google.auth.exceptions.TransportError("token fetch failed"),
        InvalidResponse(response, "bad status"),
    ]
    permanent = [
        gapi.Forbidden("x"),
        gapi.NotFound("x"),
        gapi.Unauthorized("x"),
        google.auth.exceptions.DefaultCredentialsError("none"),
        InvalidResponse(SimpleNamespace(status_code=400), "bad request"),
    ]
    assert all(store.is_temp_failure(e) for e in temporary)
    assert not any(store.is_temp_failure(e) for e in permanent)


def azure_error(cls, status: int):
    exc = cls(message="m")
    exc.status_code = status
    return exc


def test_azure_classification(fake_azure):
    store = open_store("az://container/x")
    try:  # what the SDK raises after reading a body cut short
        try:
            raise http.client.IncompleteRead(b"partial", 10)
        except http.client.IncompleteRead as cut:
            raise az.HttpResponseError(cut) from cut
    except az.HttpResponseError as exc:
        wrapped = exc
    temporary = [
        azure_error(az.HttpResponseError, 503),
        azure_error(az.HttpResponseError, 500),
        azure_error(az.HttpResponseError, 429),
        az.ServiceRequestError("connection refused"),
        az.ServiceResponseError("connection reset"),
        az.IncompleteReadError(message="cut short"),
        wrapped,
    ]
    permanent = [
        azure_error(az.ClientAuthenticationError, 403),
        azure_error(az.ResourceNotFoundError, 404),
        azure_error(az.HttpResponseError, 400),
    ]
    assert all(store.is_temp_failure(e) for e in temporary)
    assert not any(store.is_temp_failure(e) for e in permanent)


def test_gcs_follows_pages(fake_gcs, monkeypatch):
    # gcp-storage-emulator ignores page sizes, so the contract test's pages never reach GCSStore:
    # a fake listing does.
    store = open_store("gs://bkt/pre")
    names = [f"pre/p/{i}" for i in range(7)] + ["pre/q"]
    tokens = []

    def list_blobs(bucket, prefix, page_size, page_token, **kwargs):
        tokens.append(page_token)
        matching = [n for n in names if n.startswith(prefix)]
        start = int(page_token or 0)
        more = start + page_size < len(matching)
        page = [SimpleNamespace(name=n) for n in matching[start : start + page_size]]
        token = str(start + page_size) if more else None
        return SimpleNamespace(pages=iter([page]), next_page_token=token)

    monkeypatch.setattr(store.client, "list_blobs", list_blobs)
    store.page_size = 3
    assert list(store.list("p/")) == [f"p/{i}" for i in range(7)]
    assert tokens == [None, "3", "6"]


# -- start-up checks: one clear error, no retry loop ------------------------------------------


def test_check_no_such_bucket(moto, gcs, azurite, no_retry_sleep):
    for url, cause in [
        (f"s3://no-such-bucket/x?endpoint={moto.url}", "NoSuchBucket"),
        ("gs://no-such-bucket/x", "404"),
        ("az://no-such-container/x", "ContainerNotFound"),
    ]:
        with pytest.raises(StorageError, match=f"cannot use the object store.*no-such.*{cause}"):
            open_store(url).check()


def test_check_no_credentials(monkeypatch, no_retry_sleep, tmp_path):
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(StorageError, match="credentials"):
        open_store(f"s3://{BUCKET}/x?endpoint=http://127.0.0.1:{free_port()}").check()

    for name in ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"]:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="no Azure credentials"):
        open_store("az://container/x")

    for name in ["STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    with pytest.raises(StorageError, match="no Google Cloud credentials"):
        open_store("gs://bkt/x")


def test_check_unreachable(monkeypatch):
    # Refused connections are temporary (a restarting endpoint): retried, then one clear error.
    monkeypatch.setattr(S3Store, "retry_attempts", 2)
    with pytest.raises(StorageError, match="cannot use the object store.*connect"):
        open_store(f"s3://{BUCKET}/x?endpoint=http://127.0.0.1:{free_port()}").check()
