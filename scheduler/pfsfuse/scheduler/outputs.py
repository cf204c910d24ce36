"""What a successful job leaves besides its datums: the output commit, merged from the outputs of
its datums; its copy at the pipeline's egress URL; and, with enable_stats, the stats branch."""

from __future__ import annotations

import io
from collections.abc import Iterator

import msgspec

from pfsfuse import urlpolicy
from pfsfuse.api.client import Client
from pfsfuse.api.types import Copy, Delete, Mkdir, Put, WriteOp
from pfsfuse.scheduler.jobs import JobStore
from pfsfuse.scheduler.records import JobInfo, PipelineInfo


def merge(client: Client, p: PipelineInfo, job: JobInfo, keys: list[str]) -> None:
    """Build the output commit from the outputs of the job's datums, in key order; a path
    several datums wrote holds their outputs concatenated."""
    files: dict[str, list[str]] = {}
    dirs: set[str] = set()
    for f in client.walk_file(p.meta_repo, job.meta_commit, ""):
        key, _, rest = f.path.partition("/")
        if not rest.startswith("out/"):
            continue
        path = rest[4:]
        if f.type == "dir":
            dirs.add(path)
        else:
            files.setdefault(path, []).append(key)
    order = {k: n for n, k in enumerate(sorted(keys))}
    ops: list[WriteOp] = [Delete("")]  # the output is made afresh from the datums, not from the parent commit
    holding = {a for path in files for a in _parents(path)}
    for d in sorted(dirs - holding):
        ops.append(Mkdir(d))
    for path in sorted(files):
        for n, key in enumerate(sorted(files[path], key=order.__getitem__)):
            ops.append(Copy(path, p.meta_repo, job.meta_commit, f"{key}/out/{path}", append=n > 0))
    client.write_files(p.output_repo, job.output_commit, ops)


def egress(client: Client, p: PipelineInfo, job: JobInfo) -> None:
    """Copy the output commit's files to the egress URL (an object store)."""
    from pfsfuse.chunks import open_store  # only pipelines with egress need a store client

    assert p.spec.egress is not None  # called for pipelines with egress
    url = p.spec.egress.URL.rstrip("/")
    urlpolicy.current().check_url(url, "egress")  # again: the policy or DNS may have changed since
    scheme, _, rest = url.partition("://")
    bucket_url, _, prefix = rest.partition("/") if scheme != "file" else (rest, "", "")
    store = open_store(f"{scheme}://{bucket_url}")
    try:
        for f in client.walk_file(p.output_repo, job.output_commit, ""):
            if f.type == "file":
                data = b"".join(client.get_file(p.output_repo, job.output_commit, f.path))
                store.put("/".join(x for x in (prefix, f.path) if x), data)
    finally:
        store.close()


def stats(client: Client, jobs: JobStore, p: PipelineInfo, job: JobInfo) -> None:
    """enable_stats: per-datum timing, sizes and logs in the output repo's `stats` branch."""
    ops = [Put(f"{job.id}/job.json", stream=io.BytesIO(msgspec.json.encode(job)))]
    for d in jobs.datums(job.id):
        ops.append(
            Put(
                f"{job.id}/{d.key}/stats.json",
                stream=io.BytesIO(msgspec.json.encode(msgspec.structs.replace(d, log=""))),
            )
        )
        ops.append(Put(f"{job.id}/{d.key}/logs", stream=io.BytesIO(d.log.encode())))
    client.write_files(p.output_repo, "stats", ops)


def _parents(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path
