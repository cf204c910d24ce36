"""S3Store: objects in an S3 bucket (or MinIO, Ceph RGW... any S3-compatible store), via boto3."""

from __future__ import annotations

import os

import boto3
import botocore.config
import botocore.exceptions as boto

from .cloud import TEMP_STATUSES, CloudStore
from .objects import ObjectNotFound, retrying

# Error codes S3 sends with a 4xx status that still mean "try again later".
_TEMP_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "TooManyRequestsException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_EMPTY_RANGE = "InvalidRange"  # 416: the range starts at or after the end of the object


class S3Store(CloudStore):
    """`s3://bucket/prefix[?endpoint=URL][&region=NAME]`.

    Credentials come from the usual AWS sources (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile,
    an instance or pod role). The endpoint defaults to AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else
    AWS itself; any other endpoint (MinIO...) is addressed path-style. Put in the URL, the endpoint
    is part of the store's config, so every client finds it.
    """

    scheme = "s3"
    options = frozenset({"endpoint", "region"})
    temp_errors = CloudStore.temp_errors + (
        boto.ConnectionError,  # connect failures and timeouts
        boto.HTTPClientError,  # read timeouts, connections closed, bodies cut short
        boto.IncompleteReadError,  # a body shorter than its Content-Length
    )
    sdk_errors = (boto.BotoCoreError, boto.ClientError)

    def __init__(self, url: str):
        super().__init__(url)
        session = boto3.session.Session()
        endpoint = (
            self.query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        config = botocore.config.Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": 1},  # @retrying retries
            max_pool_connections=self.max_in_flight,
            s3={"addressing_style": "path"} if endpoint else None,
        )
        self.client = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.query.get("region") or session.region_name or "us-east-1",
            config=config,
        )

    def close(self) -> None:
        self.client.close()

    def is_temp_error(self, exc: BaseException) -> bool:
        if not isinstance(exc, boto.ClientError):
            return False
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in TEMP_STATUSES or exc.response.get("Error", {}).get("Code") in _TEMP_CODES

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            return f"{error.get('Code')}: {error.get('Message')}"
        return super().describe(exc)

    @retrying
    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        args = {"Bucket": self.bucket, "Key": self._name(key)}
        if offset < 0:  # the last bytes: a suffix range
            args["Range"] = f"bytes={offset}"
        elif length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        try:
            response = self.client.get_object(**args)
        except boto.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in _NOT_FOUND:
                raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
            if code == _EMPTY_RANGE:
                return b""
            raise
        with response["Body"] as body:
            data = body.read()  # botocore checks the length against Content-Length
        return data[:length] if offset < 0 and length is not None else data

    @retrying
    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None:
        # boto3 takes bytes or files, not views; it sends a checksum that S3 verifies.
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=bytes(data))

    @retrying
    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except boto.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise
        return True

    @retrying
    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    @retrying
    def _list_page(self, prefix: str, token: str | None) -> tuple[list[str], str | None]:
        args = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": self.page_size}
        if token:
            args["ContinuationToken"] = token
        page = self.client.list_objects_v2(**args)
        names = [o["Key"] for o in page.get("Contents", ())]
        return names, page.get("NextContinuationToken") if page.get("IsTruncated") else None
