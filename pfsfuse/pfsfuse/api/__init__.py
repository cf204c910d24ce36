"""The API every client uses: one interface, an in-process and a remote implementation."""

from pfsfuse.api.client import Client
from pfsfuse.api.types import FileInfo, PutResult, PutSource, ReadPlan, RepoInfo

__all__ = ["Client", "FileInfo", "PutResult", "PutSource", "ReadPlan", "RepoInfo"]
