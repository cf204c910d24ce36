"""A file's stat (mode, owner, times) is not part of its datum's identity: a touched or chmodded
file is not processed again."""

from __future__ import annotations

import io

from pfsfuse.api.types import Put, SetStat
from pfsfuse.metadata.records import CommitRef, Stat
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines


def test_a_touched_file_is_not_processed_again(daemon):
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("nums")
        client.write_files("nums", "master", [Put(n, stream=io.BytesIO(b"1\n")) for n in ("a", "b")])
        spec = specs.PipelineSpec(
            pipeline=specs.PipelineName("copy"),
            transform=specs.Transform(cmd=["sh"], stdin=["cp /pfs/nums/* /pfs/out/"]),
            input=specs.Input(atom=specs.AtomInput(repo="nums", glob="/*")),
        )
        pps.create_pipeline(specs.validate(spec))
        first = client.inspect_commit("nums", "master").id
        [job] = pps.flush_job([CommitRef("nums", first)])
        assert (job.processed, job.skipped) == (2, 0)
        touched = client.write_files(
            "nums",
            "master",
            [SetStat("a", Stat(0o600, 1, 1, 10**18, 10**18)), Put("c", stream=io.BytesIO(b"2\n"))],
        ).commit
        [job] = pps.flush_job([CommitRef("nums", touched)])
        assert job.state == "success" and (job.processed, job.skipped) == (1, 2)
        assert client.inspect_file("nums", "master", "a").mode == 0o600
    finally:
        pps.close()
        client.close()


def test_a_directory_datum_is_not_processed_again_when_only_stats_below_it_change(daemon):
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("dirs")
        st = Stat(0o644, 1, 1, 10**18, 10**18)
        files = ("x/deep/a", "x/b", "y/c")
        client.write_files("dirs", "master", [Put(p, stream=io.BytesIO(b"1\n"), stat=st) for p in files])
        spec = specs.PipelineSpec(
            pipeline=specs.PipelineName("count"),
            transform=specs.Transform(cmd=["sh"], stdin=["find /pfs/dirs -type f | wc -l > /pfs/out/$(ls /pfs/dirs)"]),
            input=specs.Input(atom=specs.AtomInput(repo="dirs", glob="/*")),
        )
        pps.create_pipeline(specs.validate(spec))
        first = client.inspect_commit("dirs", "master").id
        [job] = pps.flush_job([CommitRef("dirs", first)])
        assert (job.processed, job.skipped) == (2, 0)
        # A chmod deep below x and a touch of y's file: the same datums, though their pages changed.
        before = client.inspect_file("dirs", "master", "x").hash
        touched = client.write_files(
            "dirs",
            "master",
            [SetStat("x/deep/a", Stat(0o600, 1, 1, 10**18, 10**18)), SetStat("y/c", Stat(0o644, 1, 1, 5, 5))],
        ).commit
        assert client.inspect_file("dirs", "master", "x").hash != before
        [job] = pps.flush_job([CommitRef("dirs", touched)])
        assert job.state == "success" and (job.processed, job.skipped) == (0, 2)
        # New content below one of them is a new datum.
        changed = client.write_files("dirs", "master", [Put("x/deep/a", stream=io.BytesIO(b"2\n"))]).commit
        [job] = pps.flush_job([CommitRef("dirs", changed)])
        assert job.state == "success" and (job.processed, job.skipped) == (1, 1)
        assert b"".join(client.get_file("count", "master", "x")) == b"2\n"
    finally:
        pps.close()
        client.close()
