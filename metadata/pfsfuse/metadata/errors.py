"""The errors every layer raises and the API carries to clients.

Each class has a stable `kind` that travels over the wire, so a remote client raises the same class
the store raised. Messages are one line meant for people: they name what was wrong.
"""

from __future__ import annotations


class PfsError(Exception):
    kind = "internal"
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(PfsError):
    kind = "not_found"
    status = 404


class AlreadyExists(PfsError):
    kind = "already_exists"
    status = 409


class InvalidArgument(PfsError):
    kind = "invalid_argument"
    status = 400


class NameTooLong(InvalidArgument):
    """A name or path over the store's limits (255 bytes a component, 4096 a path)."""

    kind = "name_too_long"


class TooLarge(InvalidArgument):
    """A request bigger than the daemon takes (its arguments, not a file's data)."""

    kind = "too_large"
    status = 413


class Unauthenticated(PfsError):
    """No valid token where one is needed: log in (`pfs auth login`)."""

    kind = "unauthenticated"
    status = 401


class PermissionDenied(PfsError):
    """The caller is known but its scope does not allow the call."""

    kind = "permission_denied"
    status = 403


class FailedPrecondition(PfsError):
    """The request is well formed but the store's state forbids it (e.g. a finished commit)."""

    kind = "failed_precondition"
    status = 412


class BaseChanged(PfsError):
    """A sparse put's stored file (`Put.since`) is no longer where it was, or no longer whole:
    the writer, who holds only the changed ranges, must send the whole content."""

    kind = "base_changed"
    status = 409


class Unavailable(PfsError):
    """A dependency (URL, object store, daemon) cannot be reached; retrying may help."""

    kind = "unavailable"
    status = 503


class DataLoss(PfsError):
    """Stored data is missing or does not hash to its address."""

    kind = "data_loss"
    status = 500


class NoSpace(PfsError):
    kind = "no_space"
    status = 507


KINDS: dict[str, type[PfsError]] = {
    cls.kind: cls
    for cls in (
        PfsError,
        NotFound,
        AlreadyExists,
        InvalidArgument,
        NameTooLong,
        TooLarge,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        BaseChanged,
        Unavailable,
        DataLoss,
        NoSpace,
    )
}
