"""A mount's pending writes to a branch (Workspace) against a real daemon, without FUSE."""

from __future__ import annotations

import trio

from pfsfuse.api.types import Chmod, Mkdir
from pfsfuse.metadata.records import EMPTY_DIR, DirNode
from pfsfuse.mount.inodes import InodeTable
from pfsfuse.mount.resolve import Resolver
from pfsfuse.mount.trees import Trees
from pfsfuse.mount.workspace import Workspace


async def test_two_mounts_starting_the_branchs_commit_at_once_share_it(daemon, tmp_path):
    """Both look, find no open commit and start one: the second start fails, and that mount
    writes into the first one's commit instead of failing its writes."""
    client = daemon.client()
    try:
        client.create_repo("r")
        looked = 0
        both_looked = trio.Event()

        async def call(fn, *args):
            nonlocal looked
            if fn == client.start_commit:
                await both_looked.wait()  # neither starts one before both have looked
            try:
                return await trio.to_thread.run_sync(fn, *args)
            finally:
                if fn == client.inspect_commit:
                    looked += 1
                    if looked == 2:
                        both_looked.set()

        a, b = (Workspace(client, "r", "master", str(tmp_path), call) for _ in range(2))
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.ensure_commit)
                nursery.start_soon(b.ensure_commit)
        head = client.inspect_commit("r", "master")
        assert head.finished is None and a.commit_id == b.commit_id == head.id
        assert len(client.list_commit("r")) == 1
    finally:
        client.close()


async def test_a_change_the_daemon_refuses_holds_up_none_after_it(daemon, tmp_path):
    """A batch the daemon refuses is sent again op by op: only the refused op is lost, and it is
    counted and reported; the ops before and after it are saved in order."""
    client = daemon.client()
    try:
        client.create_repo("r")

        async def call(fn, *args):
            return await trio.to_thread.run_sync(fn, *args)

        ws = Workspace(client, "r", "master", str(tmp_path), call)
        lost: list[str] = []
        ws.on_lost = lost.append
        ws.put_node("a", EMPTY_DIR, Mkdir("a"))
        ws.put_node("a", EMPTY_DIR, Chmod("a", True))  # refused: only a file has an executable bit
        ws.put_node("b", EMPTY_DIR, Mkdir("b"))
        with trio.fail_after(30):
            await ws.flush()
            assert ws.ops == [] and ws.refused == 1
            assert len(lost) == 1 and lost[0].startswith("r@master:/a: not saved: a is not a file"), lost
            assert await ws.finish()
        assert [f.path for f in client.list_file("r", "master", "")] == ["a", "b"]
    finally:
        client.close()


async def test_an_entry_looked_up_after_a_flush_reads_the_commit_that_flush_made(daemon, tmp_path):
    """A caller holds a branch's ref (resolved before a flush) and looks a path up after it: the
    overlay no longer holds what the flush sent, so the lookup must read the commit after it."""
    client = daemon.client()
    try:
        client.create_repo("r")
        client.write_files("r", "master", [Mkdir("a")])

        async def call(fn, *args):
            return await trio.to_thread.run_sync(fn, *args)

        trees = Trees(client)
        resolver = Resolver(client, trees, call, InodeTable(), str(tmp_path), None, {}, False, lambda what: None)
        with trio.fail_after(30):
            r = await resolver.ref("r", "master")  # before the flush, as _parent holds it
            ws = r.workspace
            assert ws is not None
            ws.put_node("a/x", EMPTY_DIR, Mkdir("a/x"))
            assert await resolver.entry(r, "a/x") == EMPTY_DIR  # from the overlay
            await ws.flush()
            assert "a/x" not in ws.overlay  # the daemon has it now
            assert isinstance(await resolver.entry(r, "a/x"), DirNode)
    finally:
        client.close()
