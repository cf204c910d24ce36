"""AzureStore: objects as block blobs in an Azure Blob Storage container, via azure-storage-blob."""

from __future__ import annotations

import os
from typing import Any, cast

import azure.core.exceptions as az
import requests
import requests.adapters
import requests.exceptions
from azure.core.paging import PageIterator
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient

from .cloud import TEMP_STATUSES, CloudStore
from .objects import ObjectNotFound, StorageError, retrying


def _code(exc: az.HttpResponseError) -> str | None:
    """The storage service's error code, which the SDK sets on the exceptions it raises."""
    return getattr(exc, "error_code", None)


class AzureStore(CloudStore):
    """`az://container/prefix`.

    Credentials: AZURE_STORAGE_CONNECTION_STRING (which may name another endpoint, as Azurite's
    does), or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN.
    """

    scheme = "az"
    temp_errors = CloudStore.temp_errors + (
        az.ServiceRequestError,  # the request could not be sent: connect failures, timeouts
        az.ServiceResponseError,  # the response could not be read: resets, read timeouts
        az.IncompleteReadError,  # a body shorter than its Content-Length
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
    )
    sdk_errors = (az.AzureError,)

    def __init__(self, url: str):
        super().__init__(url)
        # requests keeps 10 connections per host by default: as many as calls may run at once.
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.max_in_flight, max_retries=0)
        for scheme in ("https://", "http://"):
            session.mount(scheme, adapter)
        transport = RequestsTransport(
            session=session,
            session_owner=True,
            connection_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )
        options = {"transport": transport, "retry_total": 0}  # @retrying retries
        env = os.environ
        if env.get("AZURE_STORAGE_CONNECTION_STRING"):
            service = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"], **options)
        elif env.get("AZURE_STORAGE_ACCOUNT") and (env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_SAS_TOKEN")):
            account = env["AZURE_STORAGE_ACCOUNT"]
            credential = (
                {"account_name": account, "account_key": env["AZURE_STORAGE_KEY"]}
                if env.get("AZURE_STORAGE_KEY")
                else env["AZURE_STORAGE_SAS_TOKEN"]
            )
            service = BlobServiceClient(f"https://{account}.blob.core.windows.net", credential=credential, **options)
        else:
            raise StorageError(
                f"{url}: no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (or AZURE_STORAGE_SAS_TOKEN)"
            )
        self.container = service.get_container_client(self.bucket)

    def close(self) -> None:
        self.container.close()

    def is_temp_error(self, exc: BaseException) -> bool:
        return isinstance(exc, az.HttpResponseError) and exc.status_code in TEMP_STATUSES

    def describe(self, exc: BaseException) -> str:
        code = getattr(exc, "error_code", None)
        return f"{super().describe(exc)}{f' ({code})' if code else ''}"

    @retrying
    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        name = self._name(key)
        try:
            if offset < 0:  # Azure has no suffix ranges: the size first
                size = self.container.get_blob_client(name).get_blob_properties().size
                offset = max(size + offset, 0)
            # Without a range the SDK also reads empty blobs (a range on those fails).
            ranged: dict[str, Any] = {"offset": offset, "length": length} if offset or length is not None else {}
            return self.container.download_blob(name, max_concurrency=1, **ranged).readall()
        except az.ResourceNotFoundError as exc:
            if _code(exc) == "BlobNotFound":
                raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
            raise
        except az.HttpResponseError as exc:
            if exc.status_code == 416:  # the range starts at or after the end of the blob
                return b""
            raise

    @retrying
    def _put(self, key: str, data: bytes | memoryview, durable: bool) -> None:
        # validate_content sends an MD5 of the body, which the service checks.
        self.container.upload_blob(
            self._name(key), bytes(data), overwrite=True, validate_content=True, max_concurrency=1
        )

    @retrying
    def _exists(self, key: str) -> bool:
        return self.container.get_blob_client(self._name(key)).exists()

    @retrying
    def _delete(self, key: str) -> None:
        try:
            self.container.delete_blob(self._name(key))
        except az.ResourceNotFoundError as exc:
            if _code(exc) != "BlobNotFound":
                raise

    @retrying
    def _list_page(self, prefix: str, token: str | None) -> tuple[list[str], str | None]:
        listing = self.container.list_blob_names(name_starts_with=prefix, results_per_page=self.page_size)
        pages = cast(PageIterator, listing.by_page(continuation_token=token))  # typed as a plain iterator
        names = list(next(pages))
        return names, pages.continuation_token
