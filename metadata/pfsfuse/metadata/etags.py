"""S3 ETags of file contents, per repo: what an S3 client was told when it wrote the bytes (the
MD5 of a single-part upload, `md5-of-md5s-N` of a multipart one), kept so that every later HEAD
and listing, through any gateway and after any restart, gives the same ETag.

Keyed by repo and content hash: a repo's writers vouch for its ETags only, never another repo's,
and an unchanged file keeps its ETag in every commit.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pfsfuse.metadata.errors import InvalidArgument

if TYPE_CHECKING:  # (clients import the pattern without RocksDB)
    from pfsfuse.metadata.db import DB, Txn

ETAGS = "etags"  # repo \0 file content hash -> ETag (ASCII)
PATTERN = r"^[0-9a-f]{32}(-[1-9][0-9]{0,4})?$"
_ETAG = re.compile(PATTERN)


def _key(repo: str, content_hash: bytes) -> bytes:
    return repo.encode() + b"\0" + content_hash


def check(etag: str) -> str:
    if not _ETAG.fullmatch(etag):
        raise InvalidArgument(f"{etag!r} is not an S3 ETag (32 hex digits, then -PARTS for a multipart upload)")
    return etag


def lookup(db: DB, repo: str, hashes: list[bytes]) -> list[str]:
    """The ETag of each content hash in `repo`, "" where none was recorded."""
    out = []
    for h in hashes:
        value = db.get(ETAGS, _key(repo, h))
        out.append("" if value is None else value.decode())
    return out


def record(txn: Txn, repo: str, content_hash: bytes, etag: str) -> None:
    txn.put(ETAGS, _key(repo, content_hash), check(etag).encode())


def copy(db: DB, txn: Txn, src_repo: str, dst_repo: str, content_hash: bytes) -> None:
    """A file copied to another repo keeps the ETag it had."""
    if src_repo != dst_repo:
        value = db.get(ETAGS, _key(src_repo, content_hash))
        if value is not None:
            txn.put(ETAGS, _key(dst_repo, content_hash), value)


def drop_repo(db: DB, txn: Txn, repo: str) -> None:
    for key, _ in db.scan(ETAGS, repo.encode() + b"\0"):
        txn.delete(ETAGS, key)
