"""One request's view of the daemon, as the signed-in user: the storage, pipeline and auth
clients carrying the user's token, and which repos the user may read."""

from __future__ import annotations

from pfsfuse.api.auth import RemoteAuth
from pfsfuse.api.remote import RemoteClient
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, PermissionDenied
from pfsfuse.scheduler.api import RemotePipelines
from pfsfuse.scheduler.records import PipelineInfo


class Conn:
    def __init__(self, address: str, home: Home | None, token: str | None, admin: bool):
        self.api = RemoteClient(address, home, token)
        self.pps = RemotePipelines(address, token)
        self.auth = RemoteAuth(address, token)
        self.admin = admin
        self._scopes: dict[str, bool] = {}

    def close(self) -> None:
        self.api.close()
        self.pps.close()
        self.auth.close()

    def readable(self, repo: str) -> bool:
        """Whether the user may read `repo` (always, when auth is off or for an admin)."""
        if self.admin:
            return True
        if repo not in self._scopes:
            try:
                self._scopes[repo] = self.auth.get_scope(repo) != "none"
            except FailedPrecondition:  # auth is not activated
                self._scopes[repo] = True
        return self._scopes[repo]

    def check(self, repo: str) -> None:
        """Refuse, saying nothing of the repo, what the user may not read."""
        if not self.readable(repo):
            raise PermissionDenied("no such repo, or you may not read it")

    def repos(self):
        """The repos the user may read, without pipelines' internal ones."""
        return [r for r in self.api.list_repo() if not r.name.startswith("__") and self.readable(r.name)]

    def pipelines(self) -> list[PipelineInfo]:
        return [p for p in self.pps.list_pipeline() if self.readable(p.name)]

    def pipeline(self, name: str) -> PipelineInfo:
        self.check(name)
        return self.pps.inspect_pipeline(name)

    def job(self, job_id: str):
        job = self.pps.inspect_job(job_id)
        self.check(job.pipeline)
        return job
