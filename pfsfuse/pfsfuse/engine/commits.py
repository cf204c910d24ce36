"""Commits: starting, finishing, listing and deleting them, and following a branch as commits
finish on it (subscribe-commit)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

from pfsfuse.engine.core import EngineCore
from pfsfuse.metadata import names
from pfsfuse.metadata.records import Commit, CommitRef


class Commits(EngineCore):
    def start_commit(
        self,
        repo: str,
        branch: str | None = None,
        parent: str | None = None,
        description: str = "",
        provenance: list[CommitRef] | None = None,
    ) -> Commit:
        c = self.index.start_commit(repo, branch, parent, description, provenance or ())
        self.notify_changed()
        return c

    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> Commit:
        c = self.index.finish_commit(repo, ref, description)
        self.notify_changed()
        return c

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return self.index.resolve(repo, ref)

    def list_commit(
        self, repo: str, ref: str | None = None, number: int | None = None, since: str | None = None
    ) -> list[Commit]:
        stop = self.index.resolve(repo, since).id if since else None
        if ref is None:
            found = self.index.commits(repo)
            self.index.repo(repo)
        else:
            found = self.ancestry(repo, self.index.resolve(repo, ref))
        out: list[Commit] = []
        for c in found:
            if c.id == stop or (number is not None and len(out) >= number):
                break
            out.append(c)
        return out

    def delete_commit(self, repo: str, ref: str) -> list[CommitRef]:
        deleted = self.index.delete_commit(repo, ref)
        self.notify_changed()
        return deleted

    def subscribe_commit(
        self, repo: str, branch: str, since: str | None = None, new_only: bool = False
    ) -> Iterator[Commit]:
        return self.subscribe(repo, branch, since, new_only, threading.Event())

    def subscribe(
        self, repo: str, branch: str, since: str | None, new_only: bool, cancel: threading.Event
    ) -> Iterator[Commit]:
        """subscribe_commit that stops within a second of `cancel` being set."""
        self.index.repo(repo)
        names.branch_name(branch)
        seen: set[str] = set()
        if since:
            seen.update(c.id for c in self.ancestry(repo, self.index.resolve(repo, since)))
        if new_only:
            seen.update(c.id for c in self._finished_on(repo, branch, seen))
        return self._follow(repo, branch, seen, cancel)

    def _follow(self, repo: str, branch: str, seen: set[str], cancel: threading.Event) -> Iterator[Commit]:
        while not cancel.is_set():
            with self.changed:
                generation = self.generation
            for c in reversed(list(self._finished_on(repo, branch, seen))):
                seen.add(c.id)
                yield c
            with self.changed:
                self.changed.wait_for(functools.partial(self._moved_on, generation, cancel), timeout=1.0)

    def _moved_on(self, generation: int, cancel: threading.Event) -> bool:
        return self.generation != generation or cancel.is_set()

    def _finished_on(self, repo: str, branch: str, seen: set[str]) -> Iterator[Commit]:
        """Finished commits from the branch head back to the first already seen one."""
        b = self.index.branch(repo, branch)
        if b is None or b.head is None:
            return
        for c in self.ancestry(repo, self.index.commit(repo, b.head)):
            if c.id in seen:
                return
            if c.finished is not None:
                yield c
