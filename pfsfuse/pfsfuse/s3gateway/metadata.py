"""An object's user metadata (`x-amz-meta-NAME: VALUE`), kept as the file's user extended
attribute `user.NAME`: what an S3 client sets, a mount shows (`getfattr`), and what `setfattr`
sets in a mount, a GET or HEAD returns."""

from __future__ import annotations

import re

from pfsfuse.metadata import names
from pfsfuse.metadata.records import Xattrs
from pfsfuse.s3gateway.errors import S3Error

PREFIX = "x-amz-meta-"
MAX_BYTES = 2048  # S3's bound on an object's user metadata: names and values together
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # what an HTTP header's name may be
_SHOWABLE = re.compile(rb"[\t\x20-\x7e]*")  # what a header's value may carry as it is


def from_headers(headers) -> Xattrs:
    """The user metadata a request gives (starlette's headers: names in lower case, values as
    latin-1), as sorted attributes."""
    given: dict[str, bytes] = {}
    for header, value in headers.items():
        if header.startswith(PREFIX):
            given[names.XATTR_PREFIX + header[len(PREFIX) :]] = value.encode("latin-1")
    size = sum(len(n) - len(names.XATTR_PREFIX) + len(v) for n, v in given.items())
    if size > MAX_BYTES:
        raise S3Error(400, "MetadataTooLarge", f"{size} bytes of user metadata: at most {MAX_BYTES}")
    return tuple(sorted(given.items()))


def to_headers(xattrs: dict[str, bytes] | None) -> dict[str, str]:
    """The headers a GET or HEAD shows an object's user attributes in. One that a header cannot
    carry as it is (a binary value, a name no header may have) is counted in
    `x-amz-missing-meta`, as S3 does."""
    out: dict[str, str] = {}
    missing = 0
    for name, value in (xattrs or {}).items():
        key = name[len(names.XATTR_PREFIX) :]
        if _TOKEN.fullmatch(key) and _SHOWABLE.fullmatch(value):
            out[PREFIX + key.lower()] = value.decode("ascii")
        else:
            missing += 1
    if missing:
        out["x-amz-missing-meta"] = str(missing)
    return out
