"""Repos and branches."""

from __future__ import annotations

from pfsfuse.api.types import RepoInfo
from pfsfuse.engine.core import EngineCore
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.records import Branch, BranchRef


class Repos(EngineCore):
    def _repo_info(self, name: str) -> RepoInfo:
        repo = self.index.repo(name)
        branches = self.index.branches(name)
        master = next((b for b in branches if b.name == "master"), None)
        size = self.index.commit(name, master.head).size if master and master.head else 0
        return RepoInfo(repo.name, repo.created, repo.description, size, [b.name for b in branches])

    def create_repo(self, name: str, description: str = "", update: bool = False) -> RepoInfo:
        self.index.create_repo(name, description, update)
        return self._repo_info(name)

    def inspect_repo(self, name: str) -> RepoInfo:
        return self._repo_info(name)

    def list_repo(self) -> list[RepoInfo]:
        return [self._repo_info(r.name) for r in self.index.repos()]

    def delete_repo(self, name: str, force: bool = False) -> None:
        self.index.delete_repo(name, force)
        self.notify_changed()

    # -- branches -----------------------------------------------------------------------------

    def create_branch(
        self,
        repo: str,
        name: str,
        head: str | None = None,
        provenance: list[BranchRef] | None = None,
    ) -> Branch:
        b = self.index.create_branch(repo, name, head, provenance)
        self.notify_changed()
        return b

    def inspect_branch(self, repo: str, name: str) -> Branch:
        self.index.repo(repo)
        b = self.index.branch(repo, names.branch_name(name))
        if b is None:
            raise NotFound(f"branch {name} not found in repo {repo}")
        return b

    def list_branch(self, repo: str) -> list[Branch]:
        self.index.repo(repo)
        return self.index.branches(repo)

    def delete_branch(self, repo: str, name: str, force: bool = False) -> None:
        self.index.delete_branch(repo, name, force)
        self.notify_changed()
