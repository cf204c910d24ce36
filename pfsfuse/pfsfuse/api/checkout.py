"""Checking out a tree of a commit onto local disk: `get-file -r`, a worker's inputs.

Fetching a read plan per file costs a round trip per file, which dominated a checkout of many
small files. Here the plans come a page at a time (`Client.read_plans`, up to PLANS_PAGE entries a
request), the next page is asked for while a pool of threads writes the files of this one, and
those files are read in the order of their first chunk in the packs, so that each pack is read
front to back.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pfsfuse.api.client import Client
from pfsfuse.api.types import PLANS_PAGE, FileInfo, ReadPlan
from pfsfuse.metadata import names
from pfsfuse.metadata.records import SPECIAL_MODES

WORKERS = 8  # files written at once: enough to hide a read's latency, few enough for 2 cores


def plan_pages(client: Client, repo: str, ref: str, path: str) -> Iterator[list[ReadPlan]]:
    """The read plans of `path` and everything under it, a page at a time, in path order."""
    after = None
    # A short page is not the last (a page of big files ends early): the last one is empty.
    while page := client.read_plans(repo, ref, path, after, PLANS_PAGE):
        yield page
        after = page[-1].info.path


def _pack_order(item: tuple[ReadPlan, str]) -> tuple[bytes, int]:
    chunks = item[0].chunks
    return (chunks[0][1].pack, chunks[0][1].offset) if chunks else (b"", 0)


def checkout(
    client: Client,
    repo: str,
    ref: str,
    path: str,
    dest: str,
    workers: int = WORKERS,
    stats: bool = False,
    skipped: list[tuple[FileInfo, str]] | None = None,
) -> list[tuple[FileInfo, str]]:
    """Write `path` of `repo@ref` (a directory, or a file) to `dest`, as a file-by-file copy
    would; returns the files written, each with its local path. With `stats`, special files
    (FIFOs, sockets, devices) are made too, and every entry gets its kept mode, times and, as
    root (as tar does), owner; directories last, once their entries are in; the names of a
    hard link are hard links again. Device nodes this process may not make (not root) go to
    `skipped`."""
    root = names.path(path)
    written: list[tuple[FileInfo, str]] = []
    made: list[tuple[FileInfo, str]] = []  # every entry, for its stat
    first_name: dict[int, str] = {}  # hard link id -> where its first name was written
    links: list[tuple[str, str]] = []  # (that name, another name), linked once it is written

    def write(plan: ReadPlan, target: str) -> None:
        with open(target, "wb") as out:
            for piece in client.plan_bytes(repo, ref, plan):
                out.write(piece)
        if plan.info.executable:
            os.chmod(target, 0o755)

    with ThreadPoolExecutor(workers, thread_name_prefix="checkout") as pool:
        pending: list[Future[None]] = []
        for page in plan_pages(client, repo, ref, root):
            files = []
            for plan in page:
                info = plan.info
                target = dest if info.path == root else os.path.join(dest, posixpath.relpath(info.path, root or "."))
                if info.type == "dir":
                    os.makedirs(target, exist_ok=True)
                elif info.type == "symlink":
                    os.symlink(info.target, target)
                elif info.type in SPECIAL_MODES:
                    if not stats:
                        continue
                    if not _mknod(info, target):
                        if skipped is not None:
                            skipped.append((info, target))
                        continue
                elif stats and info.link is not None and info.link in first_name:
                    links.append((first_name[info.link], target))
                    continue
                else:
                    files.append((plan, target))
                    if stats and info.link is not None:
                        first_name[info.link] = target
                made.append((info, target))
            # This page's directories exist: wait for the last page's files, then start these.
            for f in pending:
                f.result()
            files.sort(key=_pack_order)
            pending = [pool.submit(write, plan, target) for plan, target in files]
            written.extend((plan.info, target) for plan, target in files)
        for f in pending:
            f.result()
    for src, target in links:
        os.link(src, target)
    if stats:
        for info, target in reversed(made):  # a directory after what is in it
            _restore(info, target)
    return written


def _mknod(info: FileInfo, target: str) -> bool:
    """Make a special file; False where we may not (a device node, not as root)."""
    kind = next(bits for k, bits in SPECIAL_MODES.items() if k == info.type)
    try:
        os.mknod(target, kind | (info.mode or 0o644) & 0o7777, info.rdev)
    except PermissionError:
        return False
    return True


def _restore(info: FileInfo, target: str) -> None:
    """Give a written entry its kept user extended attributes, owner (as root only), mode and
    times."""
    link = info.type == "symlink"
    for name, value in (info.xattrs or {}).items():  # before a mode that could refuse them
        if not name.startswith(names.XATTR_PREFIX):
            continue  # never a security.* one (a capability) from what a store says
        try:
            os.setxattr(target, name, value)
        except OSError as e:
            if e.errno == errno.ENOTSUP:
                break  # a file system without them: the rest of the stat is still given
            if e.errno not in (errno.ENOSPC, errno.E2BIG):
                raise
            # more than this file system keeps for one file (ext4: about 4 KiB): the others go
    if info.uid is not None and info.gid is not None and os.geteuid() == 0:
        os.chown(target, info.uid, info.gid, follow_symlinks=False)
    if info.mode is not None and not link:
        os.chmod(target, info.mode & 0o7777)
    if info.mtime is not None and (not link or os.utime in os.supports_follow_symlinks):
        atime = info.mtime if info.atime is None else info.atime
        os.utime(target, ns=(atime, info.mtime), follow_symlinks=False)
