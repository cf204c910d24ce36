"""The writes a mount makes to one branch, before and while they reach the daemon.

Each change is logged as a write op (sent in batches with `write_files`, applied by the daemon in
order as one atomic change of the branch's open commit) and recorded in an overlay that reads
consult first, so that the mount reads its own writes before the daemon has them. A file being
written lives in a `LocalFile` (memory, spilled to a temporary file when large) and becomes a Put
op when its last writer closes it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import trio

from pfsfuse.api.client import Client
from pfsfuse.api.types import Dated, Put, WriteOp
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import AlreadyExists, BaseChanged, FailedPrecondition, InvalidArgument, NotFound, PfsError
from pfsfuse.metadata.records import DirNode, FileNode, Node, Stat, SymlinkNode
from pfsfuse.mount.localfile import LocalFile

# The background sender holds back changes without content while the branch changed in the last
# QUIET seconds, for at most HOLD seconds or HOLD_OPS ops (Workspace.due).
QUIET = 0.05
HOLD = 0.5
HOLD_OPS = 4096
RETRY_MAX = 5.0  # seconds between the background sender's tries while the daemon refuses or is away
# How the daemon refuses a change for good (a path past a limit, a source gone): sent again, it
# would be refused again, and it must not hold up the changes made after it.
_REFUSED = (InvalidArgument, AlreadyExists, FailedPrecondition, NotFound)
log = logging.getLogger("pfsfuse.mount")
_MARKED = re.compile(r"written through pfs mount \(pid (\d+) on (.*)\)")


def _mark() -> str:
    """The description of the commits a mount starts: it lets a mount after a crash finish them."""
    return f"written through pfs mount (pid {os.getpid()} on {socket.gethostname()})"


def _left_by_dead_mount(description: str) -> bool:
    """Whether a commit was started by a mount process of this host that is gone (or by us)."""
    m = _MARKED.fullmatch(description)
    if m is None or m[2] != socket.gethostname():
        return False
    pid = int(m[1])
    return pid == os.getpid() or not alive(pid)


def alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class _Gone:
    def __repr__(self) -> str:
        return "GONE"


GONE = _Gone()  # the overlay's mark of a deleted path (and everything under it)


def stat_of(entry, mtime: float = 0.0) -> Stat:
    """An entry's stat; for one stored without it (older records, put-file), what the mount
    shows for it: the mounting user's, dated `mtime` (its commit's)."""
    st = getattr(entry, "stat", None)
    if st is not None:
        return st
    if isinstance(entry, SymlinkNode):
        mode = 0o777
    elif isinstance(entry, FileNode):
        mode = 0o755 if entry.executable else 0o644
    elif isinstance(entry, DirNode):
        mode = 0o755
    else:
        mode = 0o644
    ns = int(mtime * 1e9)
    return Stat(mode, os.getuid(), os.getgid(), ns, ns)


Entry = Node | LocalFile | _Gone


@dataclass
class _LocalPut:
    path: str
    file: LocalFile
    synced: bool = False  # fsync: send the content as it is now, though the file is still open


def _changes(op: _LocalPut, last: bool) -> str | None:
    """How a file's put in a batch names what changed (LocalFile.put): only its last does."""
    if not last:
        return None
    return "fsync" if op.synced else "close"


class Workspace:
    """Pending writes to one branch of one repo."""

    def __init__(self, client: Client, repo: str, branch: str, tmpdir: str, call: Callable[..., Awaitable]):
        self.client = client
        self.repo = repo
        self.branch = branch
        self.tmpdir = tmpdir
        self._call = call  # runs a blocking client call in a worker thread
        self.overlay: dict[str, Entry] = {}
        self._seq: dict[str, int] = {}  # path -> the last logged op that changed it
        self.children: dict[str, set[str]] = {}  # dir -> names with overlay entries
        # A directory's new stat, kept apart from the overlay: a directory there decides what is
        # under it, and one read before its entries changed would hide them. path -> (seq, stat)
        self.dir_stats: dict[str, tuple[int, Stat]] = {}
        # A directory that gained or lost an entry here: (the op it waits for, when). Its mtime and
        # ctime show that time at once, as on a disk, until the daemon has the change (and dates it).
        self._entries_changed: dict[str, tuple[int, int]] = {}
        # A directory that gained or lost a subdirectory here: [(the op that does it, +1 or -1)].
        self._subdirs_changed: dict[str, list[tuple[int, int]]] = {}
        self.ops: list[tuple[int, WriteOp | _LocalPut]] = []
        self._next = 0
        self._sent_upto = -1  # the last op the daemon has (or refused)
        self.commit_id: str | None = None
        self.owned = False  # the open commit was started by this mount, which must finish it
        self.writing: set[LocalFile] = set()
        self.changed = time.monotonic()
        self.lock = trio.Lock()  # one flush at a time
        self._starting = trio.Lock()
        self.flushed = 0  # bumped by every flush: the branch's tree changed
        # (flush count, commit id, its tree) after our last write: the branch as that flush left
        # it, which the resolver takes instead of asking the daemon again.
        self.written: tuple[int, str, DirNode] | None = None
        self._wrote: tuple[str, DirNode] | None = None
        self.pending_bytes = 0  # content logged since the last flush
        self.waiting_since = 0.0  # when the first op not sent yet was logged
        # Paths the kernel was shown as one kind (a symlink) and the daemon stores as another
        # (the reference copy it stands for): told to the owner once the daemon has them.
        self.reshaped: set[str] = set()
        self.on_reshaped: Callable[[list[str]], None] = lambda paths: None
        self.refused = 0  # changes the daemon refused: fsync and close report them as EIO
        self.failing = ""  # the error sending changes last met, while it lasts
        self.retry_at = 0.0  # while failing: when the background sender tries again
        self._retry_in = 0.0
        self.on_lost: Callable[[str], None] = lambda what: None  # told of every change lost
        # Given the listings a write answers with (small directories it changed): the next
        # lookup there need not fetch the directory again.
        self.on_listings: Callable[[list], None] = lambda listings: None

    def failed(self, e: PfsError) -> bool:
        """Sending changes met `e`: back off (a full disk or a daemon away must not be sent the
        same body every 50 ms). Whether it is a new error, to be said once."""
        self._retry_in = min(max(2 * self._retry_in, 0.1), RETRY_MAX)
        self.retry_at = time.monotonic() + self._retry_in
        new, self.failing = str(e) != self.failing, str(e)
        return new

    def succeeded(self) -> None:
        self.failing, self.retry_at, self._retry_in = "", 0.0, 0.0

    # -- reading through the overlay

    def resolve(self, path: str):
        """("entry", e) when the overlay decides `path`, ("under", dir, rest) when `path` lies in a
        directory the overlay put there, ("base",) when the branch's tree decides."""
        e = self.overlay.get(path)
        if e is not None:
            return ("entry", e)
        p = path
        while "/" in p:
            p = p.rpartition("/")[0]
            e = self.overlay.get(p)
            if e is None:
                continue
            if isinstance(e, DirNode):
                return ("under", e, path[len(p) + 1 :])
            return ("entry", GONE)  # deleted, or replaced by something that is not a directory
        return ("base",)

    def merge(self, dirpath: str, listing: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
        """A directory's listing with the overlay's entries in it applied."""
        names_here = self.children.get(dirpath)
        if not names_here:
            return listing
        merged = dict(listing)
        for name in names_here:
            e = self.overlay[names.join(dirpath, name)]
            if e is GONE:
                merged.pop(name, None)
            else:
                merged[name] = e
        return sorted(merged.items())

    # -- recording changes

    def _set(self, path: str, entry: Entry, logged: bool = True) -> None:
        old = self.overlay.get(path)
        if isinstance(old, LocalFile) and old is not entry:
            self._drop(old)
        self.overlay[path] = entry
        parent, name = names.split(path)
        self.children.setdefault(parent, set()).add(name)
        if logged:
            self._seq[path] = self._next - 1
        else:
            self._seq.pop(path, None)  # an open file: not droppable until logged
        self.changed = time.monotonic()

    def _log(self, op: WriteOp | _LocalPut) -> None:
        if not self.ops:
            self.waiting_since = time.monotonic()
        self.ops.append((self._next, op))
        self._next += 1

    def due(self) -> bool:
        """Whether the background sender should send the logged ops now. File content goes at
        once; changes of names and stats alone (sqlite's journal unlinked) wait while the branch
        is busy, up to HOLD seconds, for the fsync that usually follows to take them along: sent
        alone, they make that fsync wait for their flush."""
        now = time.monotonic()
        if self.pending_bytes or len(self.ops) >= HOLD_OPS or now - self.waiting_since >= HOLD:
            return True
        return now - self.changed >= QUIET

    def _drop(self, f: LocalFile) -> None:
        f.dropped = True
        self.writing.discard(f)
        f.release()

    def created(self, path: str, f: LocalFile) -> None:
        """A file opened for writing (new, truncated or copied on write)."""
        f.writers += 1
        f.handles += 1
        f.path = path
        self.writing.add(f)
        self._set(path, f, logged=False)

    def reopened(self, f: LocalFile) -> None:
        f.writers += 1
        f.handles += 1
        self.writing.add(f)
        self.changed = time.monotonic()

    def closed(self, f: LocalFile, wrote: bool) -> None:
        """A handle of a local file was released; the last writer logs its content."""
        f.handles -= 1
        if wrote:
            f.writers -= 1
            if f.writers == 0:
                self.writing.discard(f)
                if self.overlay.get(f.path) is f:
                    if f.logged_as is not None and f.logged_as[:2] == (f.path, f.version) and not f.fine:
                        self._unchanged_since_put(f, f.logged_as[2])
                    else:
                        self.changed_file(f)
        f.release()

    def _unchanged_since_put(self, f: LocalFile, seq: int) -> None:
        """The last writer of `f` closed it as an fsync logged it (sqlite's journal, closed after
        its fsyncs): that put stands for the close, and the overlay keeps `f` only until the
        daemon has it."""
        self._seq[f.path] = seq
        self.changed = time.monotonic()
        if seq <= self._sent_upto:
            self._forget(seq)

    def changed_file(self, f: LocalFile) -> None:
        """A local file not open for writing was changed (closed, truncated, chmod): log it."""
        self._log_put(f, synced=False)
        self._set(f.path, f)

    def synced(self, f: LocalFile) -> None:
        """fsync of a file still open: its content so far goes to the daemon with the next flush
        (it stays in the overlay, being written)."""
        for _, op in self.ops:
            if isinstance(op, _LocalPut) and op.file is f:
                # Logged when it was closed, before this writer opened it again: a flush would stop
                # there (the file is being written), short of this fsync's put.
                op.synced = True
        self._log_put(f, synced=True)

    def _log_put(self, f: LocalFile, synced: bool) -> None:
        self._log(_LocalPut(f.path, f, synced=synced))
        f.logged += 1
        f.logged_as = (f.path, f.version, self._next - 1)
        self.pending_bytes += f.size

    def put_node(self, path: str, node: Node, op: WriteOp) -> None:
        """A change the daemon applies by reference (copy, mkdir, symlink, chmod)."""
        self._log(op)
        self._set(path, node)

    def send_next(self, op: WriteOp) -> None:
        """A change the overlay need not show: the caller flushes it at once (a hard link,
        which the daemon numbers)."""
        self._log(op)
        self.changed = time.monotonic()

    def restat_dir(self, path: str, stat: Stat, op: WriteOp) -> None:
        """A directory's mode, owner or times changed (`op` stores them)."""
        self._log(op)
        self.dir_stats[path] = (self._next - 1, stat)
        self.changed = time.monotonic()

    def dir_stat(self, path: str, base: Stat | None) -> Stat | None:
        """The stat of the directory at `path` with what changed here and is not sent yet (its
        stat given, its entries changed); `base` is the one the daemon has."""
        given = self.dir_stats.get(path)
        touched = self._entries_changed.get(path)
        st = base if given is None else given[1]
        if st is not None and touched is not None and (given is None or touched[0] > given[0]):
            st = msgspec.structs.replace(st, mtime=touched[1], ctime=touched[1])
        return st

    def entries_changed(self, path: str) -> None:
        """The directory at `path` gained or lost an entry."""
        self._entries_changed[path] = (self._next, time.time_ns())

    def subdirs_changed(self, path: str, by: int) -> None:
        """The directory at `path` gained (1) or lost (-1) a subdirectory with the op just logged
        (unless a flush already took it to the daemon)."""
        seq = self._next - 1
        if seq > self._sent_upto:
            self._subdirs_changed.setdefault(path, []).append((seq, by))

    def nlink(self, path: str, base: int) -> int:
        """The link count of the directory at `path` with the subdirectories made or removed here
        and not sent yet; `base` is what the daemon's tree says (1: not counted, left so)."""
        changes = self._subdirs_changed.get(path)
        if not changes or base == 1:
            return base
        return base + sum(by for _, by in changes)

    def delete(self, path: str, op: WriteOp) -> None:
        self._log(op)
        self._set(path, GONE)
        for changed in (self.dir_stats, self._entries_changed, self._subdirs_changed):
            for p in [p for p in changed if p == path or p.startswith(path + "/")]:
                del changed[p]

    def moved(self, old: str, new: str, f: LocalFile, op: WriteOp) -> None:
        """A local file open for writing renamed: it will be put at its new name when closed;
        `op` deletes whatever the daemon has at the old name."""
        del self.overlay[old]  # detached first, so that marking the old name gone keeps the file
        self._seq.pop(old, None)
        self.delete(old, op)
        f.path = new
        self._set(new, f, logged=False)

    def abandon_writers(self) -> None:
        """Log the files still open for writing as they are (the mount is going away)."""
        for f in list(self.writing):
            f.writers = 0
            if self.overlay.get(f.path) is f:
                self.changed_file(f)
        self.writing.clear()

    async def repo_gone(self) -> bool:
        """Whether the repo was deleted (not merely unreachable)."""
        try:
            await self._call(self.client.inspect_repo, self.repo)
        except NotFound:
            return True
        except PfsError:
            pass
        return False

    def discard(self) -> None:
        """The branch's repo is gone: forget every change not sent (files still open are
        written on, and dropped when closed)."""
        lost = len(self.ops) + len(self.writing)
        if lost:
            self.refused += 1
            self.on_lost(f"{self.repo}@{self.branch}: the repo was deleted: {lost} changes not saved")
        for _, op in self.ops:
            if isinstance(op, _LocalPut):
                op.file.logged -= 1
        self.ops.clear()
        for f in {e for e in self.overlay.values() if isinstance(e, LocalFile)} | self.writing:
            self._drop(f)  # (and out of `writing`: nothing left to commit)
        self.overlay.clear()
        self._seq.clear()
        self.children.clear()
        self.dir_stats.clear()
        self._entries_changed.clear()
        self._subdirs_changed.clear()
        self.pending_bytes = 0
        self.commit_id, self.owned = None, False

    # -- reaching the daemon

    async def ensure_commit(self) -> str:
        """The branch's open commit, started (and owned) by us if it has none."""
        async with self._starting:  # the background committer and an fsync may both ask
            for attempt in range(3):
                if self.commit_id is not None:
                    break
                try:
                    head = await self._call(self.client.inspect_commit, self.repo, self.branch)
                except NotFound:
                    head = None
                if head is not None and head.finished is None:
                    # Someone else's (pfs, another mount) unless a mount that died here left it.
                    self.commit_id, self.owned = head.id, _left_by_dead_mount(head.description)
                    break
                try:
                    c = await self._call(self.client.start_commit, self.repo, self.branch, None, _mark())
                except FailedPrecondition:
                    if attempt == 2:
                        raise
                    continue  # another writer started one since we looked: share it
                self.commit_id, self.owned = c.id, True
            assert self.commit_id is not None  # found, started, or the last try raised
            return self.commit_id

    async def flush(self) -> None:
        """Send the logged ops up to the first file still open for writing."""
        async with self.lock:
            n = 0
            for _, op in self.ops:
                if isinstance(op, _LocalPut) and op.file.writers and not op.synced:
                    break
                n += 1
            if n == 0:
                return
            batch = self.ops[:n]
            try:
                await self._send(batch)
            except _REFUSED:
                if await self.repo_gone():
                    raise
                await self._send_each(batch)
                return
            self._sent(batch)

    async def _send(self, batch: list[tuple[int, WriteOp | _LocalPut]]) -> None:
        """One atomic write of `batch` into the branch's open commit."""
        # A file's put sends what changed since it was stored: its last put in the batch (the
        # daemon finds the file the batch started from, and they all read the file as it is now).
        last = {op.file: i for i, (_, op) in enumerate(batch) if isinstance(op, _LocalPut)}
        for attempt in (0, 1):
            for i, (_, op) in enumerate(batch):  # a sparse copy the daemon would read whole
                if isinstance(op, _LocalPut) and op.file.needs_fill(_changes(op, last[op.file] == i)):
                    await op.file.fill(0, op.file.size, ahead=True)
            ops = [
                op.file.put(op.path, _changes(op, last[op.file] == i)) if isinstance(op, _LocalPut) else op
                for i, (_, op) in enumerate(batch)
            ]
            # The directories whose entries changed keep the times shown for them (not the
            # daemon's clock at the flush): times on a disk do not move by themselves.
            dated = [Dated(p, at) for p, (_, at) in self._entries_changed.items() if p]
            commit = await self.ensure_commit()
            try:
                result = await self._call(self.client.write_files, self.repo, commit, ops + dated, True)
                fsynced = [
                    item.file
                    for (_, item), op in zip(batch, ops, strict=True)
                    if isinstance(item, _LocalPut) and isinstance(op, Put) and op.changed is not None
                ]
                for f, content in zip(fsynced, result.contents, strict=True):
                    f.stored(content)
                self.on_listings(result.listings)
                self._wrote = None if result.tree is None else (result.commit, result.tree)
                return
            except BaseChanged:
                # The file a sparse copy was made of is not there to read: fill it, send it whole.
                for f in last:
                    await f.fill(0, f.size, ahead=True)
                if attempt:
                    raise
            except (FailedPrecondition, NotFound):
                # Someone finished or deleted our commit: write into a new one (or learn that
                # the daemon refuses the batch itself).
                self.commit_id, self.owned = None, False
                if attempt:
                    raise

    async def _send_each(self, batch: list[tuple[int, WriteOp | _LocalPut]]) -> None:
        """The daemon refused a batch: send its ops one at a time, so that only the ones it
        refuses are lost (each said so) and the others are saved, in order."""
        for item in batch:
            try:
                await self._send([item])
            except _REFUSED as e:
                if isinstance(e, NotFound) and await self.repo_gone():
                    raise
                self.refused += 1
                log.error("%s@%s: %s not saved: %s", self.repo, self.branch, item[1].path, e)
                self.on_lost(f"{self.repo}@{self.branch}:/{item[1].path}: not saved: {e}")
            self._sent([item])

    def _sent(self, items: list[tuple[int, WriteOp | _LocalPut]]) -> None:
        """The first ops of the log are done with: saved, or refused and reported."""
        del self.ops[: len(items)]
        for _, op in items:
            if isinstance(op, _LocalPut):
                op.file.logged -= 1
                op.file.release()
        self._sent_upto = items[-1][0]
        self._forget(items[-1][0])
        done = [p for p in self.reshaped if p not in self.overlay]
        if done:
            self.reshaped.difference_update(done)
            self.on_reshaped(done)
        self.flushed += 1
        self.written = None if self._wrote is None else (self.flushed, *self._wrote)
        self._wrote = None
        self.pending_bytes = sum(op.file.size for _, op in self.ops if isinstance(op, _LocalPut))
        self.waiting_since = time.monotonic()

    def _forget(self, upto: int) -> None:
        """Drop overlay entries the daemon now has, unless changed again since."""
        for changed in (self.dir_stats, self._entries_changed):
            for path in [p for p, (s, _) in changed.items() if s <= upto]:
                del changed[path]
        for path, changes in list(self._subdirs_changed.items()):
            left = [c for c in changes if c[0] > upto]
            if left:
                self._subdirs_changed[path] = left
            else:
                del self._subdirs_changed[path]
        for path in [p for p, s in self._seq.items() if s <= upto]:
            entry = self.overlay[path]
            if isinstance(entry, LocalFile) and entry.writers:
                continue  # written again since (after an fsync): keep reading it locally
            e = self.overlay.pop(path)
            del self._seq[path]
            if isinstance(e, LocalFile):
                self._drop(e)
            parent, name = names.split(path)
            kids = self.children.get(parent)
            if kids is not None:
                kids.discard(name)
                if not kids:
                    del self.children[parent]

    async def finish(self) -> bool:
        """Flush, and finish the commit this mount started, unless a file is open for writing.
        Returns whether everything was finished."""
        await self.flush()
        if self.writing or self.ops:
            return False
        if self.owned and self.commit_id is not None:
            try:
                await self._call(self.client.finish_commit, self.repo, self.commit_id)
            except FailedPrecondition:
                pass  # already finished with pfs finish-commit
            self.flushed += 1
        if self.commit_id is not None:
            await self._check_branch(self.commit_id)
        self.commit_id, self.owned = None, False
        return True

    async def _check_branch(self, commit: str) -> None:
        """The branch deleted while we wrote to it: the changes are saved, in a commit that no
        branch shows. Say where, rather than let them vanish from view."""
        try:
            await self._call(self.client.inspect_branch, self.repo, self.branch)
        except NotFound:
            self.refused += 1
            self.on_lost(
                f"{self.repo}@{self.branch}: the branch was deleted while the mount wrote to it; the "
                f"changes are in commit {commit} (pfs create-branch {self.repo} {self.branch} --head "
                f"{commit} shows them again)"
            )

    async def rescue(self, into: str) -> list[str]:
        """At an unmount that could not save everything: keep the content of each file not sent
        under `into`/REPO/BRANCH/PATH, and say so for it and for every other change not saved."""
        said: list[str] = []
        latest = {op.path: op for _, op in self.ops}  # a path's last change is the one that counts
        for path, op in latest.items():
            where = f"{self.repo}@{self.branch}:/{path}"
            if not isinstance(op, _LocalPut):
                said.append(f"{where}: {type(op).__name__.lower()} not saved")
                continue
            dest = os.path.join(into, self.repo, self.branch, path)
            try:
                await op.file.fill(0, op.file.size, ahead=True)
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                op.file.save_as(dest)
            except (OSError, PfsError) as e:
                why = e.strerror if isinstance(e, OSError) else str(e)
                said.append(f"{where}: not saved, and its content could not be kept: {why}")
            else:
                said.append(f"{where}: not saved; its content is kept in {dest}")
        return said

    @property
    def busy(self) -> bool:
        """Whether anything is pending or open."""
        return bool(self.ops or self.writing or self.owned)
