"""GCSStore: objects in a Google Cloud Storage bucket, via google-cloud-storage."""

from __future__ import annotations

import google.api_core.exceptions as gapi
import google.auth.exceptions
import requests.adapters
import requests.exceptions
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from .cloud import TEMP_STATUSES, CloudStore
from .objects import ObjectNotFound, StorageError, one_line, retrying


class GCSStore(CloudStore):
    """`gs://bucket/prefix`.

    Credentials and project come from Application Default Credentials
    (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, or the metadata server on GCP). With
    STORAGE_EMULATOR_HOST set (http://host:port), the client talks to that emulator, anonymously.

    Puts replace objects unconditionally, so no request uses generation preconditions: retrying
    a put of a pack (which has a unique name) is harmless.
    """

    scheme = "gs"
    temp_errors = CloudStore.temp_errors + (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,  # a body cut short
        google.auth.exceptions.TransportError,  # fetching a token failed on the network
        DataCorruption,  # an upload's checksum did not match what the server stored
    )
    sdk_errors = (gapi.GoogleAPIError, google.auth.exceptions.GoogleAuthError, InvalidResponse)

    def __init__(self, url: str):
        super().__init__(url)
        try:
            self.client = storage.Client()
        except google.auth.exceptions.GoogleAuthError as exc:
            raise StorageError(f"{url}: no Google Cloud credentials: {one_line(exc)}") from exc
        # requests keeps 10 connections per host by default: as many as calls may run at once.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.max_in_flight, max_retries=0)
        for scheme in ("https://", "http://"):
            self.client._http.mount(scheme, adapter)  # the client's requests session
        self._bucket = self.client.bucket(self.bucket)
        self._timeout = (self.connect_timeout, self.read_timeout)

    def close(self) -> None:
        self.client.close()

    def is_temp_error(self, exc: BaseException) -> bool:
        if isinstance(exc, gapi.GoogleAPICallError):
            return exc.code in TEMP_STATUSES
        if isinstance(exc, InvalidResponse):
            return getattr(exc.response, "status_code", None) in TEMP_STATUSES
        return False

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, gapi.GoogleAPICallError):
            # the message starts with the request's method and URL
            return f"{exc.code} {exc.message.split(': ', 1)[-1]}"
        return super().describe(exc)

    @retrying
    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        blob = self._bucket.blob(self._name(key))
        end = None if length is None or offset < 0 else offset + length - 1
        try:
            data = blob.download_as_bytes(
                start=offset or None,
                end=end,
                raw_download=True,  # the stored bytes, never transcoded
                checksum=None,  # a range has no checksum; chunks are verified by their hash
                retry=None,
                timeout=self._timeout,
            )
        except gapi.NotFound:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
        except gapi.RequestRangeNotSatisfiable:
            return b""
        if offset < 0:
            # A suffix range; gcp-storage-emulator ignores those and sends the whole object.
            data = data[offset:]
            return data[:length] if length is not None else data
        return data

    @retrying
    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None:
        # Sends a checksum of the data; GCS refuses an upload that does not match it.
        self._bucket.blob(self._name(key)).upload_from_string(
            bytes(data),
            content_type="application/octet-stream",
            retry=None,
            timeout=self._timeout,
        )

    @retrying
    def _exists(self, key: str) -> bool:
        return self._bucket.blob(self._name(key)).exists(retry=None, timeout=self._timeout)

    @retrying
    def _delete(self, key: str) -> None:
        try:
            self._bucket.blob(self._name(key)).delete(retry=None, timeout=self._timeout)
        except gapi.NotFound:
            pass

    @retrying
    def _list_page(self, prefix: str, token: str | None) -> tuple[list[str], str | None]:
        # gcp-storage-emulator ignores page_size and returns every name at once.
        blobs = self.client.list_blobs(
            self._bucket,
            prefix=prefix,
            page_size=self.page_size,
            page_token=token,
            fields="items(name),nextPageToken",
            retry=None,
            timeout=self._timeout,
        )
        page = next(blobs.pages)
        return [b.name for b in page], blobs.next_page_token
