"""The bodies of the common read-only verbs, shared by their click commands and the light path
(`lite.py`): given a client (the full `RemoteClient`, or the light one of `pfsfuse.api.lite`, whose
records read the same by attribute) and an Output, both print the same bytes.

Nothing here imports click, rich or msgspec: the light path loads this module.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Iterable, Iterator

from pfsfuse.tools.cli.output import Output, ago, commit_duration, duration, size, when
from pfsfuse.version import VERSION

COMMIT_HEADERS = ["REPO", "ID", "PARENT", "STARTED", "DURATION", "SIZE"]
FILE_HEADERS = ["NAME", "TYPE", "SIZE"]
LIST_PAGE = 10_000
FIRST_PAGE = 1000  # list-file's first request, and the rows its column widths come from
# The entry types whose stat bits are not those of a special file (fifo, socket, char, block).
_KINDS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def commit_row(c) -> list[str]:
    return [c.repo, c.id, c.parent or "<none>", ago(c.started), commit_duration(c), size(c.size)]


def file_rows(files: Iterable) -> Iterator[list[str]]:
    for f in files:
        yield [f.path or "/", f.type, size(f.size)]


def history_count(value: str | None) -> int | None:
    """list-file --history's versions a file: a number, or all (-1); None if it is neither."""
    if value is None:
        return 0
    if value == "all":
        return -1
    try:
        n = int(value)
    except ValueError:
        return None
    return None if n < -1 or n == 0 else n


def list_repo(client, out: Output, show_all: bool, as_json: bool) -> None:
    repos = [r for r in client.list_repo() if show_all or not r.name.startswith("__")]
    if as_json:
        return out.json(repos)
    out.table(["NAME", "CREATED", "SIZE"], ([r.name, ago(r.created), size(r.size)] for r in repos))


def inspect_repo(client, out: Output, name: str, as_json: bool) -> None:
    r = client.inspect_repo(name)
    if as_json:
        return out.json(r)
    out.fields(
        [
            ("Name", r.name),
            ("Description", r.description),
            ("Created", ago(r.created)),
            ("Size", size(r.size)),
            ("Branches", ", ".join(r.branches) or "-"),
        ]
    )


def list_branch(client, out: Output, repo: str, as_json: bool) -> None:
    branches = client.list_branch(repo)
    if as_json:
        return out.json(branches)
    out.table(["BRANCH", "HEAD"], ([b.name, b.head or "-"] for b in branches))


def list_commit(
    client, out: Output, repo: str, ref: str | None, number: int | None, since: str | None, as_json: bool
) -> None:
    commits = client.list_commit(repo, ref, number, since)
    if as_json:
        return out.json(commits)
    out.table(COMMIT_HEADERS, (commit_row(c) for c in commits))


def inspect_commit(client, out: Output, repo: str, ref: str, as_json: bool) -> None:
    c = client.inspect_commit(repo, ref)
    if as_json:
        return out.json(c)
    out.fields(
        [
            ("Commit", f"{c.repo}@{c.id}"),
            ("Branch", c.branch or "-"),
            ("Parent", c.parent or "<none>"),
            ("Children", ", ".join(c.children) or "-"),
            ("Started", ago(c.started)),
            ("Finished", ago(c.finished) if c.finished else "open"),
            ("Duration", commit_duration(c)),
            ("Size", size(c.size)),
            ("Description", c.description),
            ("Provenance", ", ".join(f"{p.repo}@{p.id}" for p in c.provenance) or "-"),
        ]
    )


def list_file(client, out: Output, repo: str, ref: str, path: str, versions: int, as_json: bool) -> None:
    def pages() -> Iterator:
        after, limit = None, FIRST_PAGE  # a small first page: the first lines come at once
        while True:
            page = client.list_file(repo, ref, path, after, limit, versions)
            yield from page
            paths = {f.path for f in page}
            if len(paths) < limit:
                return
            after, limit = posixpath.basename(page[-1].path), LIST_PAGE

    if as_json:
        return out.json(list(pages()))
    if versions:
        rows = ([f.commit, f.path or "/", f.type, size(f.size)] for f in pages())
        return out.table(["COMMIT", *FILE_HEADERS], rows, window=FIRST_PAGE)
    out.table(FILE_HEADERS, file_rows(pages()), window=FIRST_PAGE)


def inspect_file(client, out: Output, repo: str, ref: str, path: str, as_json: bool) -> None:
    f = client.inspect_file(repo, ref, path)
    if as_json:
        return out.json(f)
    fields = [("Path", "/" + f.path), ("Type", f.type), ("Size", size(f.size))]
    if f.type == "file":
        fields.append(("Hash", f.hash))
        fields.append(("Executable", "yes" if f.executable else "no"))
    elif f.type == "dir":
        fields.append(("Children", str(f.children)))
    elif f.type == "symlink":
        fields.append(("Target", f.target))
    elif f.rdev:
        fields.append(("Device", f"{os.major(f.rdev)},{os.minor(f.rdev)}"))
    if f.mode is not None:
        kind = _KINDS.get(f.type)
        if kind is None:  # a special file: its kinds are the records'
            from pfsfuse.metadata.records import SPECIAL_MODES

            kind = SPECIAL_MODES[f.type]
        fields.append(("Mode", f"{stat.filemode(kind | f.mode)} ({f.mode:04o})"))
        fields.append(("Owner", f"{f.uid}:{f.gid}"))
        fields.append(("Modified", time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime((f.mtime or 0) / 1e9))))
    if f.nlink is not None:
        fields.append(("Links", f"{f.nlink} (hard link {f.link:x})"))
    if f.xattrs:
        fields.append(("Attributes", ", ".join(f"{n} ({size(len(v))})" for n, v in f.xattrs.items())))
    out.fields(fields)


def input_text(i) -> str:
    """A pipeline's input in a line: REPO:GLOB, cron SPEC, cross(...) or union(...)."""
    a = i.atom or i.pfs  # (scheduler.spec.atom, without loading the spec parser)
    if a is not None:
        return f"{a.repo}:{a.glob}"
    if i.cron is not None:
        return f"cron {i.cron.spec}"
    kind = "cross" if i.cross is not None else "union"
    return f"{kind}(" + ", ".join(input_text(s) for s in getattr(i, kind)) + ")"


def list_pipeline(pipelines, out: Output, show_spec: bool, as_json: bool) -> None:
    """`pipelines`: the pipeline API (RemotePipelines, or the light client)."""
    infos = pipelines.list_pipeline()
    if show_spec:
        return out.json([p.spec for p in infos])
    if as_json:
        return out.json(infos)
    out.table(
        ["NAME", "INPUT", "OUTPUT", "CREATED", "STATE"],
        (
            [p.name, input_text(p.spec.input), f"{p.name}/{p.spec.output_branch}", ago(p.created), p.state]
            for p in infos
        ),
    )


JOB_HEADERS = ["ID", "OUTPUT COMMIT", "STARTED", "DURATION", "RESTART", "PROGRESS", "DL", "UL", "STATE"]


def job_row(j) -> list[str]:
    end = j.finished or time.time()
    return [
        j.id,
        f"{j.pipeline}/{j.output_commit or '-'}",
        ago(j.started),
        duration(end - j.started) if j.finished else "-",
        str(j.restarts),
        f"{j.processed} + {j.skipped} / {j.total}",
        size(j.downloaded),
        size(j.uploaded),
        j.state,
    ]


def list_job(pipelines, out: Output, pipeline: str | None, input_commit, as_json: bool) -> None:
    """`pipelines`: the pipeline API (RemotePipelines, or the light client)."""
    jobs = pipelines.list_job(pipeline, input_commit)
    if as_json:
        return out.json(jobs)
    out.table(JOB_HEADERS, (job_row(j) for j in jobs))


def whoami(auth, out: Output, as_json: bool) -> None:
    """`auth`: the auth API (RemoteAuth, or the light client)."""
    w = auth.who_am_i()
    if as_json:
        return out.json(w)
    out.line(f'You are "{w.subject}"')
    out.line(f"session expires: {when(w.expires)}")
    if w.admin:
        out.line("You are an administrator of this pfs cluster")


def version(client, out: Output) -> None:
    """The client's version, and the daemon's unless `client` is None (--client-only)."""
    rows = [["pfs", VERSION]] if client is None else [["pfs", VERSION], ["pfsd", client.version()]]
    out.table(["COMPONENT", "VERSION"], rows)
