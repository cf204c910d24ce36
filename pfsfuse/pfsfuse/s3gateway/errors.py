"""S3's error convention: an HTTP status and an XML body with a code and a message."""

from __future__ import annotations

from xml.sax.saxutils import escape

from starlette.responses import Response

from pfsfuse.metadata.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NameTooLong,
    NotFound,
    PermissionDenied,
    PfsError,
    Unauthenticated,
    Unavailable,
)


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, resource: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.resource = status, code, message, resource

    def response(self, headers: dict[str, str] | None = None) -> Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(self.resource)}</Resource></Error>"
        )
        return Response(body, status_code=self.status, media_type="application/xml", headers=headers)


def from_pfs(e: PfsError, resource: str, missing: str = "NoSuchKey") -> S3Error:
    """The S3 error for a daemon's error; `missing` is the code for a thing not found."""
    if isinstance(e, NotFound):
        return S3Error(404, missing, str(e), resource)
    if isinstance(e, NameTooLong):
        return S3Error(400, "KeyTooLongError", str(e), resource)
    if isinstance(e, InvalidArgument):
        return S3Error(400, "InvalidArgument", str(e), resource)
    if isinstance(e, AlreadyExists):
        return S3Error(409, "BucketAlreadyOwnedByYou", str(e), resource)
    if isinstance(e, FailedPrecondition):
        return S3Error(409, "OperationAborted", str(e), resource)
    if isinstance(e, (PermissionDenied, Unauthenticated)):  # the daemon's ACL check, as on every route
        return S3Error(403, "AccessDenied", str(e), resource)
    if isinstance(e, Unavailable):
        return S3Error(503, "ServiceUnavailable", str(e), resource)
    return S3Error(500, "InternalError", str(e), resource)
