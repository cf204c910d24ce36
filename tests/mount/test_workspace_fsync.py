"""fsync of a file still open, then its close, through a Workspace against a real daemon (no FUSE):
what each sends to the daemon."""

from __future__ import annotations

import random
import time

import trio

from pfsfuse.api.types import Delete, Mkdir, Put
from pfsfuse.metadata.records import ChunkRef, FileNode, Stat
from pfsfuse.mount.inodes import InodeTable
from pfsfuse.mount.localfile import SPILL, LocalFile, Origin
from pfsfuse.mount.resolve import Resolver
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import HOLD, QUIET, Workspace


def _workspace(client, tmp_path, sent: list[list]) -> Workspace:
    async def call(fn, *args):
        if fn == client.write_files:
            sent.append([type(op).__name__ + ":" + op.path for op in args[2]])
        return await trio.to_thread.run_sync(fn, *args)

    return Workspace(client, "r", "master", str(tmp_path), call)


def _new_file(ws: Workspace, tmp_path, path: str) -> LocalFile:
    now = time.time_ns()
    f = LocalFile(str(tmp_path), Stat(0o644, 0, 0, now, now))
    ws.created(path, f)
    return f


async def test_a_file_closed_as_its_fsync_sent_it_is_not_sent_again(daemon, tmp_path):
    """sqlite's journal: written, fsynced, closed, deleted. The close sends nothing (the fsync's
    put stands for it), and the overlay lets go of the file once the daemon has it."""
    client = daemon.client()
    try:
        client.create_repo("r")
        sent: list[list] = []
        ws = _workspace(client, tmp_path, sent)
        with trio.fail_after(30):
            f = _new_file(ws, tmp_path, "db-journal")
            f.pwrite(0, b"journal " * 1000)
            ws.synced(f)
            await ws.flush()
            assert sent == [["Put:db-journal"]]
            ws.closed(f, wrote=True)
            assert ws.ops == [] and "db-journal" not in ws.overlay
            await ws.flush()
            assert sent == [["Put:db-journal"]], "the close sent the file again"
            assert b"".join(client.get_file("r", "master", "db-journal")) == b"journal " * 1000

            # Closed before its fsync's put went: the overlay keeps it until that put is sent.
            g = _new_file(ws, tmp_path, "b")
            g.pwrite(0, b"b")
            ws.synced(g)
            ws.closed(g, wrote=True)
            assert ws.overlay.get("b") is g and len(ws.ops) == 1
            await ws.flush()
            assert sent[-1] == ["Put:b"] and "b" not in ws.overlay
            assert b"".join(client.get_file("r", "master", "b")) == b"b"
    finally:
        client.close()


async def test_a_file_changed_after_its_fsync_is_sent_again_at_close(daemon, tmp_path):
    """A write, a truncate, a chmod or a rename after the fsync: the close sends the file."""
    client = daemon.client()
    try:
        client.create_repo("r")
        sent: list[list] = []
        ws = _workspace(client, tmp_path, sent)
        with trio.fail_after(30):
            changes = {
                "written": lambda f: f.pwrite(1, b"X"),
                "truncated": lambda f: f.truncate(1),
                "chmodded": lambda f: setattr(f, "stat", Stat(0o755, 0, 0, 1, 1)),
            }
            for name, change in changes.items():
                f = _new_file(ws, tmp_path, name)
                f.pwrite(0, b"abc")
                ws.synced(f)
                await ws.flush()
                change(f)
                ws.closed(f, wrote=True)
                await ws.flush()
                assert sent[-2:] == [[f"Put:{name}"], [f"Put:{name}"]], (name, sent)
            f = _new_file(ws, tmp_path, "before")
            f.pwrite(0, b"moved")
            ws.synced(f)
            await ws.flush()
            ws.moved("before", "after", f, Delete("before", missing_ok=True))
            ws.closed(f, wrote=True)
            await ws.flush()
            assert sent[-1] == ["Delete:before", "Put:after"], sent
            assert b"".join(client.get_file("r", "master", "after")) == b"moved"
            assert b"".join(client.get_file("r", "master", "written")) == b"aXc"
            assert b"".join(client.get_file("r", "master", "truncated")) == b"a"
            assert client.inspect_file("r", "master", "chmodded").mode == 0o755
    finally:
        client.close()


async def test_a_sparse_copys_close_refused_for_its_base_is_sent_whole_with_put_files_chunks(daemon, tmp_path):
    """A big file copied sparsely from the branch's open commit, fsynced, then closed: the fsync
    replaced the file the close is relative to, so the daemon refuses the close's sparse put and
    the mount fills the copy and sends it again. Sent again it is cut whole (the fsync left fine
    chunks), as the first try would have been: the file has put-file's content hash."""
    client = daemon.client()
    try:
        client.create_repo("r")
        data = random.Random(8).randbytes(SPILL + (3 << 20))
        (tmp_path / "src").write_bytes(data)
        commit = client.start_commit("r", "master").id
        client.write_files("r", commit, [Put("big", local=str(tmp_path / "src"))])
        content = bytes.fromhex(client.inspect_file("r", commit, "big").hash)
        fetched: list[int] = []

        async def fetch(chunks, i, ahead):
            fetched.append(i)
            return data

        ws = _workspace(client, tmp_path, [])
        f = _new_file(ws, tmp_path, "big")
        f.sparse_copy(len(data), Origin(content, commit, [ChunkRef(content, len(data))], fetch))
        f.based_on(content)
        with trio.fail_after(30):
            f.pwrite(5, b"mine")
            ws.synced(f)
            await ws.flush()
            assert not fetched, "the fsync of a sparse copy fetched the file"
            ws.closed(f, wrote=True)
            await ws.flush()
        assert fetched, "the refused close did not fill the copy"
        want = data[:5] + b"mine" + data[9:]
        assert b"".join(client.get_file("r", "master", "big")) == want
        (tmp_path / "want").write_bytes(want)
        client.write_files("r", commit, [Put("plain", local=str(tmp_path / "want"))])
        assert client.inspect_file("r", commit, "big").hash == client.inspect_file("r", commit, "plain").hash
    finally:
        client.close()


async def test_after_its_own_flush_the_mount_knows_the_branch_without_asking(daemon, tmp_path):
    """A flush answers with the tree it left: the ref shows it with no inspect_commit (a round
    trip after each fsync), and a write by someone else still shows once the ref expires."""
    client = daemon.client()
    try:
        client.create_repo("r")
        asked: list[str] = []

        async def call(fn, *args):
            if fn == client.inspect_commit:
                asked.append(args[1])
            return await trio.to_thread.run_sync(fn, *args)

        resolver = Resolver(client, Trees(client), call, InodeTable(), str(tmp_path), None, {}, False, lambda w: None)
        with trio.fail_after(30):
            ws = (await resolver.ref("r", "master")).workspace
            assert ws is not None
            f = _new_file(ws, tmp_path, "a")
            f.pwrite(0, b"a")
            ws.synced(f)
            await ws.flush()  # the first starts the commit
            await resolver.ref("r", "master")
            for i in range(3):
                f.pwrite(0, b"v%d" % i)
                ws.synced(f)
                await ws.flush()
                del asked[:]
                r = await resolver.ref("r", "master")
                assert asked == [], "the ref was asked for again after our own flush"
            ws.closed(f, wrote=True)
            assert "a" not in ws.overlay  # so the entry below comes from the tree the flush left
            node = await resolver.entry(r, "a")
            assert isinstance(node, FileNode) and node.hash.hex() == client.inspect_file("r", "master", "a").hash
            client.write_files("r", "master", [Mkdir("b")])  # another writer
            while await resolver.entry(await resolver.ref("r", "master"), "b") is None:
                await trio.sleep(0.05)  # (until the ref expires: fail_after bounds it)
    finally:
        client.close()


def test_the_background_sender_holds_changes_without_content_while_the_branch_is_busy(tmp_path):
    """sqlite unlinks its journal, then writes and fsyncs a new one at once: the unlink, sent
    alone, would make that fsync wait for its flush. Held while the branch is busy (at most HOLD
    seconds), it goes with the fsync; file content is never held."""

    async def never(*args):
        raise AssertionError("nothing is sent here")

    ws = Workspace(None, "r", "master", str(tmp_path), never)  # type: ignore[arg-type]
    ws.delete("db-journal", Delete("db-journal"))
    ws.changed = time.monotonic()
    assert not ws.due(), "an unlink in a busy branch was sent alone"
    ws.changed -= QUIET
    assert ws.due(), "an unlink in a quiet branch was held"
    ws.changed = time.monotonic()
    ws.waiting_since -= HOLD
    assert ws.due(), "an unlink was held past HOLD seconds"

    ws.waiting_since = ws.changed = time.monotonic()
    f = _new_file(ws, tmp_path, "data")
    f.pwrite(0, b"content")
    ws.closed(f, wrote=True)
    assert ws.due(), "a file's content was held"
