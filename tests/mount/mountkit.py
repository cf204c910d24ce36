"""What the mount tests share besides fixtures (importable as `mountkit`: pytest puts this
folder on sys.path, as it does for tests/, since neither has an __init__.py)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from helpers import Daemon, Mount, du_bytes, wait_for
from pfsfuse.api.types import Chmod, Put, Symlink
from pfsfuse.metadata.errors import NotFound

MiB = 1 << 20

# How much the chunk directory may grow for an operation that must store no chunk bytes: index
# and pack bookkeeping, "a few KiB for nothing", nowhere near the size of the data involved.
ELISION_SLACK = 16 * 1024


class View:
    """The daemon's side of the story, through the client API: seeds data and checks what the
    mount committed without going through the mount."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.client = daemon.client()

    def close(self) -> None:
        self.client.close()

    def put(self, repo: str, branch: str, files: dict[str, bytes]) -> str:
        """One commit writing `files`; returns its id."""
        ops = [Put(path, stream=io.BytesIO(data)) for path, data in files.items()]
        return self.client.write_files(repo, branch, ops).commit

    def put_local(self, repo: str, branch: str, path: str, local: Path) -> str:
        return self.client.write_files(repo, branch, [Put(path, local=str(local))]).commit

    def ops(self, repo: str, branch: str, ops: list) -> str:
        return self.client.write_files(repo, branch, ops).commit

    def symlink(self, repo: str, branch: str, path: str, target: str) -> str:
        return self.ops(repo, branch, [Symlink(path, target)])

    def chmod(self, repo: str, branch: str, path: str, executable: bool) -> str:
        return self.ops(repo, branch, [Chmod(path, executable)])

    def head(self, repo: str, branch: str):
        return self.client.inspect_commit(repo, branch)

    def commit(self, repo: str, ref: str):
        return self.client.inspect_commit(repo, ref)

    def read(self, repo: str, ref: str, path: str) -> bytes:
        return b"".join(self.client.get_file(repo, ref, path))

    def info(self, repo: str, ref: str, path: str):
        return self.client.inspect_file(repo, ref, path)

    def exists(self, repo: str, ref: str, path: str) -> bool:
        try:
            self.client.inspect_file(repo, ref, path)
            return True
        except NotFound:
            return False

    def files(self, repo: str, ref: str, path: str = "") -> dict[str, bytes]:
        """Every regular file under `path` (relative to it) with its bytes."""
        out = {}
        for f in self.client.walk_file(repo, ref, path):
            if f.type == "file":
                rel = f.path[len(path) :].lstrip("/") if path else f.path
                out[rel] = self.read(repo, ref, f.path)
        return out

    def wait_committed(
        self,
        repo: str,
        branch: str,
        check: Callable[[str], bool],
        mount: Mount | None = None,
        timeout: float = 20.0,
        what: str = "the mount's commit",
    ) -> str:
        """Poll until the branch's head is finished and `check(head_id)` holds; returns the id.
        Fails early if the mount process dies."""
        found: list[str] = []

        def done() -> bool:
            c = self.head(repo, branch)
            if c.finished is None or not check(c.id):
                return False
            found.append(c.id)
            return True

        wait_for(done, timeout, proc=mount.process() if mount else None, what=f"{what} to be finished")
        return found[0]


def make_tree(root: Path, seed: int = 7) -> Path:
    """A small tree with the shapes that trip file systems up: empty and one-byte files, a file
    of several chunks, names with spaces, non-ASCII and a leading dot, nesting, an executable."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    files = {
        "empty": b"",
        "one": b"x",
        "hello.txt": b"hello, world\n",
        ".hidden": b"dot file\n",
        "with space.txt": b"spaces in names\n",
        "ünïcödé.txt": b"non-ASCII name\n",
        "a/b/c/deep.bin": rng.randbytes(65_539),
        "a/b/four-k": rng.randbytes(4096),
        "a/medium.bin": rng.randbytes(300_000),
        "big/multi-chunk.bin": rng.randbytes(3 * MiB + 17),
    }
    for i in range(40):
        files[f"many/f{i:03d}.txt"] = b"line %d\n" % i * (i + 1)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho ran\n")
    (root / "run.sh").chmod(0o755)
    return root


def flat_dir(d: Path, n: int, every: int) -> Path:
    """One big flat directory: `n` small files of varied sizes, and a subdirectory and a symlink
    every `every` files."""
    d.mkdir(parents=True)
    for i in range(n):
        (d / f"file-{i:05}").write_bytes(b"x" * (i % 13))
    for i in range(0, n, every):
        (d / f"sub-{i:05}").mkdir()
        (d / f"link-{i:05}").symlink_to(f"file-{i:05}")
    return d


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under root, relative path -> bytes (symlinks followed)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def sh(*cmd: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a real tool with a deadline; fail with its stderr."""
    r = subprocess.run(list(cmd), capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {r.returncode}: "
            f"{r.stderr.decode(errors='replace')}{r.stdout.decode(errors='replace')[-2000:]}"
        )
    return r


def chunk_bytes(daemon: Daemon) -> int:
    """Size of the daemon's local chunk store ($PFS_HOME/chunks), as `du -sb` reports it."""
    return du_bytes(daemon.home / "chunks")


def stays(condition: Callable[[], bool], seconds: float) -> bool:
    """True if `condition` holds at every check for `seconds`: a bounded observation that
    something does NOT happen (no readiness is waited for here)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(0.05)
    return condition()
