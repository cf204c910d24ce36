"""The public Python SDK: `Client` with python-pachyderm 1.x's verbs.

    from pfsfuse import Client

    with Client() as client:
        client.create_repo("images")
        with client.commit("images", "master") as c:
            c.put_file_bytes("/a.txt", b"hello")
        print(client.get_file("images@master:a.txt").read())

Commits are named `"repo@ref"` (a branch, a commit id, `master^2`) or `(repo, ref)`; files
`"repo@ref:path"`, `(repo, ref, path)`, or a commit and a path. Failures raise `PfsError`
subclasses (`NotFound`, `InvalidArgument`, `FailedPrecondition`, ...).
"""

from pfsfuse.api.types import Copy, Delete, DiffResult, FileInfo, Put, RepoInfo, WriteResult
from pfsfuse.metadata.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PfsError,
    Unavailable,
)
from pfsfuse.metadata.records import Branch, BranchRef, Commit, CommitRef
from pfsfuse.sdk.client import Client, CommitContext

__all__ = [
    "AlreadyExists",
    "Branch",
    "BranchRef",
    "Client",
    "Commit",
    "CommitContext",
    "CommitRef",
    "Copy",
    "DataLoss",
    "Delete",
    "DiffResult",
    "FailedPrecondition",
    "FileInfo",
    "InvalidArgument",
    "NotFound",
    "PfsError",
    "Put",
    "RepoInfo",
    "Unavailable",
    "WriteResult",
]
