"""File verbs: put-file, put-header, put-footer, get-file, list-file, inspect-file, glob-file,
diff-file, delete-file, copy-file. Each takes REPO REF PATH also as one word, REPO@REF:PATH."""

from __future__ import annotations

import inspect
import os
import posixpath
import stat
import sys
from collections.abc import Iterable, Iterator
from urllib.parse import unquote, urlsplit

import click
import msgspec

from pfsfuse import ingress
from pfsfuse.api.client import Client
from pfsfuse.api.types import Copy, Delete, FileInfo, Mkdir, Mknod, Put, Symlink, WriteOp
from pfsfuse.metadata import glob, names
from pfsfuse.metadata.errors import InvalidArgument, NotFound
from pfsfuse.metadata.records import SPECIAL_MODES, Stat, Xattrs
from pfsfuse.tools.cli import unchanged, views
from pfsfuse.tools.cli.app import App, RefPathCommand, json_option, pass_app
from pfsfuse.tools.cli.output import Output

PROGRESS_MIN = 64 << 20  # show a progress bar for transfers at least this large


def _dest(source: str) -> str:
    """Where a source lands when no path is given: its URL's path (an object's key, a pfs://
    file's path), or its local path without any leading '/', './' or '../' (as pachctl does)."""
    if ingress.is_url(source):
        return ingress.default_path(source)
    if urlsplit(source).scheme == "pfs":
        return _pfs_source(source)[2]
    parts = [p for p in posixpath.normpath(source).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def expand_sources(
    client: Client,
    path: str | None,
    sources: list[str],
    recursive: bool,
    by_reference: bool = True,
    unchanged_in: tuple[str, str] | None = None,
) -> list[WriteOp]:
    """pachctl's rules: one source and a PATH writes PATH; no PATH writes each source at its own
    name; several sources and a PATH write under PATH. Directories and prefixes need -r.

    URLs are read by the daemon; a pfs:// file of this store is copied by reference (read and
    written again only when not `by_reference`, as a split does). With `unchanged_in` (REPO,
    REF), a local directory's entries that REF holds with the same size and stat are left out."""
    if not sources:
        if not path:
            raise click.UsageError("put-file from stdin needs a PATH")
        return [Put(path, stream=sys.stdin.buffer)]
    out: list[WriteOp] = []
    for source in sources:
        if source == "-":
            if not path:
                raise click.UsageError("put-file from stdin needs a PATH")
            out.append(Put(path, stream=sys.stdin.buffer))
            continue
        if path and len(sources) == 1:
            dest = path
        elif path:
            dest = posixpath.join(path, _dest(source))
        else:
            dest = _dest(source)
        if ingress.is_url(source):
            out.append(Put(dest, url=source, recursive=recursive and ingress.is_object_url(source)))
        elif urlsplit(source).scheme == "pfs":
            out.extend(_pfs_ops(client, source, dest, recursive, by_reference))
        elif os.path.isdir(source):
            if not recursive:
                raise InvalidArgument(f"{source} is a directory; use -r")
            sizes: dict[str, int] = {}
            if unchanged_in is None:
                out.extend(_walk(source, dest, sizes))
                continue
            from concurrent.futures import ThreadPoolExecutor  # only for put-file -r

            # What the branch holds comes while the local tree is walked.
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(unchanged.held_under, client, *unchanged_in, dest)
                walked = list(_walk(source, dest, sizes))
                out.extend(unchanged.skip_unchanged(walked, held.result(), sizes))
        elif os.path.exists(source):
            out.append(Put(dest, local=source, stat=_stat(os.stat(source), source)))
        else:
            raise NotFound(f"{source}: no such file or directory")
    return out


def _pfs_source(url: str) -> tuple[str, str, str]:
    """REPO, COMMIT and PATH of pfs://REPO/COMMIT/PATH (a file or directory of this store)."""
    parts = urlsplit(url)
    repo = parts.netloc
    commit, _, file = unquote(parts.path).lstrip("/").partition("/")
    if not repo or not commit or ":" in repo or parts.query or parts.fragment:
        raise InvalidArgument(f"invalid URL {url!r}: use pfs://REPO/COMMIT/PATH, a file of this store")
    return repo, commit, file


def _pfs_ops(client: Client, url: str, dest: str, recursive: bool, by_reference: bool) -> list[WriteOp]:
    repo, ref, path = _pfs_source(url)
    commit = client.inspect_commit(repo, ref).id  # one snapshot for every file of a directory
    try:
        info = client.inspect_file(repo, commit, path)
    except NotFound:
        raise NotFound(f"{url}: no such file or directory") from None
    if info.type == "dir":
        if not recursive:
            raise InvalidArgument(f"{url} is a directory; use -r")
        files = [f for f in client.walk_file(repo, commit, info.path) if f.type != "dir"]
    else:
        files = [info]
    ops: list[WriteOp] = []
    for f in files:
        target = posixpath.join(dest, f.path[len(info.path) :].lstrip("/")) if f is not info else dest
        if by_reference:
            ops.append(Copy(target, repo, commit, f.path))
        else:
            ops.append(Put(target, stream=ingress.reader(client.get_file(repo, commit, f.path))))
    return ops


def _stat(st: os.stat_result, local: str | None = None) -> Stat:
    """What the store keeps of a local entry beside its content (as tar does); with `local`, a
    file's or directory's user extended attributes too."""
    xattrs = None if local is None else _xattrs(local)
    return Stat(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, xattrs=xattrs)


def _xattrs(local: str) -> Xattrs | None:
    """The user extended attributes of a local file or directory (none where its file system
    keeps none). A mount's own (user.pfs.*) describe where a copy came from, and are left out."""
    try:
        wanted = [
            n
            for n in os.listxattr(local, follow_symlinks=False)
            if n.startswith(names.XATTR_PREFIX) and not n.startswith(names.XATTR_OWN_PREFIX)
        ]
        return tuple(sorted((n, os.getxattr(local, n, follow_symlinks=False)) for n in wanted)) or None
    except OSError:  # ENOTSUP: a file system without them
        return None


def _walk(directory: str, dest: str, sizes: dict[str, int]) -> Iterator[WriteOp]:
    """A local directory's files, symlinks (as symlinks), FIFOs, sockets, device nodes and
    directories, with their modes, owners and times; each file's size goes in `sizes`. A file's
    further names (hard links, as tar finds them) become links to its first (a Copy with `link`,
    its repo and ref left to fill)."""
    first_name: dict[tuple[int, int], str] = {}  # (device, inode) -> the target it was put at
    # Bottom-up: a directory is given its stat after its entries are in (which move its mtime).
    for root, dirs, files in sorted(os.walk(directory, topdown=False), key=lambda w: _walk_key(w[0])):
        rel = os.path.relpath(root, directory)
        here = dest if rel == "." else posixpath.join(dest, rel)
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            local = os.path.join(root, name)
            st = os.lstat(local)
            target = posixpath.join(here, name) if here else name
            if stat.S_ISLNK(st.st_mode):
                yield Symlink(target, os.readlink(local), _stat(st))
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) in first_name:
                yield Copy(target, "", "", first_name[(st.st_dev, st.st_ino)], link=True)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    first_name[(st.st_dev, st.st_ino)] = target
                sizes[local] = st.st_size
                yield Put(target, local=local, stat=_stat(st, local))
            else:
                kind = next(k for k, bits in SPECIAL_MODES.items() if stat.S_IFMT(st.st_mode) == bits)
                yield Mknod(target, kind, st.st_rdev if kind in ("char", "block") else 0, _stat(st))
        if here.strip("/"):  # not the repo's root, which is always there
            yield Mkdir(here, _stat(os.stat(root), root))


def _walk_key(path: str) -> tuple[int, str]:
    """Deepest directories first, each level in name order."""
    return (-path.count(os.sep), path)


class _Counting:
    """A readable file that advances a progress bar."""

    def __init__(self, f, progress, task):
        self._f, self._progress, self._task = f, progress, task

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._progress.advance(self._task, len(data))
        return data

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        self._progress.advance(self._task, n)
        return n


def _progress():
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        transient=True,
    )


def _with_progress(sources: list[WriteOp], progress) -> Iterator[WriteOp]:
    """Stream local files through the client so their progress can be shown."""
    local = [s.local for s in sources if isinstance(s, Put) and s.local]
    task = progress.add_task("put-file", total=sum(os.path.getsize(f) for f in local))
    for s in sources:
        if not isinstance(s, Put) or s.local is None:
            yield s
            continue
        with open(s.local, "rb") as f:
            yield msgspec.structs.replace(s, local=None, stream=_Counting(f, progress, task))


@click.command("put-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("path", required=False)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    help="A local file, a directory (with -r), a URL (http(s)://, s3://, gs://, as://, wasb://, "
    "pfs://REPO/COMMIT/PATH; with -r, every object under a prefix), or - for stdin. Repeatable.",
)
@click.option("-i", "--input-file", type=click.File("r"), help="A file listing sources, one per line.")
@click.option("-r", "--recursive", is_flag=True, help="Put directories, or every object under a prefix, recursively.")
@click.option("-a", "--append", is_flag=True, help="Append to existing files instead of overwriting.")
@click.option("-o", "--overwrite", is_flag=True, help="Overwrite existing files (the default).")
@click.option(
    "--checksum",
    is_flag=True,
    help="With -r, read every local file, even one the branch holds with the same size and times.",
)
@click.option(
    "-c", "--commit", is_flag=True, help="Accepted for pachctl; a branch without an open commit always gets one."
)
@click.option("-p", "--parallelism", type=int, default=None, hidden=True)
@click.option(
    "--split",
    type=click.Choice(["line", "json", "sql"]),
    help="Make PATH a directory of records: lines, JSON values, or a pg_dump's rows.",
)
@click.option(
    "--target-file-datums",
    type=click.IntRange(min=0),
    default=0,
    help="With --split: at most this many datums a record (default 1).",
)
@click.option(
    "--target-file-bytes",
    type=click.IntRange(min=0),
    default=0,
    help="With --split: at most this many bytes a record, unless one datum is bigger.",
)
@pass_app
def put_file(
    app: App,
    repo,
    ref,
    path,
    files,
    input_file,
    recursive,
    append,
    overwrite,
    checksum,
    commit,
    parallelism,
    split,
    target_file_datums,
    target_file_bytes,
):
    """Put files into REF (a branch or an open commit).

    With no open commit on the branch, one is started and finished around the write. Existing
    files are overwritten unless -a is given (pachctl 1.7 appended by default).

    With -r, a local file the branch already holds with the same size, mode, owners and
    modification and change times is not read again, as git and rsync decide; --checksum reads
    every file.

    URLs are read by the daemon, with the credentials and endpoints of its storage backends:
    http(s)://..., s3://BUCKET/KEY, gs://BUCKET/KEY, as://ACCOUNT/CONTAINER/KEY or
    wasb://CONTAINER@ACCOUNT/KEY; with -r, every object under the prefix KEY, at its path below
    it. pfs://REPO/COMMIT/PATH copies a file (with -r, a directory) of this store by reference.

    With --split, PATH becomes a directory of records named 0000000000000000, 0000000000000001,
    ...; a later split put to PATH numbers on. A pg_dump's statements before its rows become the
    directory's header, those after them its footer (see put-header).
    """
    if append and overwrite:
        raise click.UsageError("-a and -o contradict each other")
    if (target_file_datums or target_file_bytes) and not split:
        raise click.UsageError("--target-file-datums and --target-file-bytes need --split")
    sources = list(files)
    if input_file is not None:
        sources.extend(line.strip() for line in input_file if line.strip())
    # A directory's files the branch holds with the same size, mode, owners and times are not
    # read again (as git and rsync decide); appending would change them, so they are read then.
    unchanged_in = None if checksum or append else (repo, ref)
    expanded = expand_sources(app.client, path, sources, recursive, not split, unchanged_in)
    if split and (len(expanded) != 1 or getattr(expanded[0], "recursive", False)):
        raise click.UsageError("--split takes one source: a file, a URL or stdin")
    options = {"append": append}
    if split:
        options = {"split": split, "target_datums": target_file_datums, "target_bytes": target_file_bytes}
    # (directories and symlinks of put-file -r neither append nor split; its hard links are
    # names of a file of this repo and branch)
    expanded = [
        msgspec.structs.replace(p, src_repo=repo, src_ref=ref)
        if isinstance(p, Copy) and p.link
        else msgspec.structs.replace(p, **options)
        if isinstance(p, (Put, Copy))
        else p
        for p in expanded
    ]
    total = sum(os.path.getsize(s.local) for s in expanded if isinstance(s, Put) and s.local)
    if sys.stderr.isatty() and total >= PROGRESS_MIN:
        with _progress() as progress:
            app.client.write_files(repo, ref, _with_progress(expanded, progress))
    else:
        app.client.write_files(repo, ref, expanded)


def _put_frame(which: str):
    doc = f"""Set the {which} of directory PATH (a split file), read from -f or stdin.

    Every file of the directory then reads with it: get-file of a file prints header + file +
    footer, of the directory header + footer, of 'PATH/*' the header, all the files and the
    footer. An empty {which} (or a lone newline: echo "" | pfs put-{which} ...) removes it.
    """

    @click.command(f"put-{which}", cls=RefPathCommand, help=inspect.cleandoc(doc))
    @click.argument("repo")
    @click.argument("ref")
    @click.argument("path")
    @click.option(
        "-f",
        "--file",
        "source",
        default="-",
        help="A local file, a URL (as put-file takes), or - for stdin (the default).",
    )
    @pass_app
    def put(app: App, repo: str, ref: str, path: str, source: str) -> None:
        [op] = expand_sources(app.client, path, [source], False, by_reference=False)
        app.client.write_files(repo, ref, [msgspec.structs.replace(op, frame=which)])

    return put


put_header = _put_frame("header")
put_footer = _put_frame("footer")


def _write(pieces: Iterable[bytes], out, total: int) -> None:
    if sys.stderr.isatty() and total >= PROGRESS_MIN:
        with _progress() as progress:
            task = progress.add_task("get-file", total=total)
            for piece in pieces:
                out.write(piece)
                progress.advance(task, len(piece))
    else:
        for piece in pieces:
            out.write(piece)


@click.command("get-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@click.option("-o", "--output", type=click.Path(), help="Write to this file (or directory with -r).")
@click.option("-r", "--recursive", is_flag=True, help="Get a directory into --output.")
@pass_app
def get_file(app: App, repo: str, ref: str, path: str, output: str | None, recursive: bool) -> None:
    """Print a file, or write it (or with -r a directory) to --output.

    A file of a directory with a header or footer (a split file's record) prints between them,
    the directory itself prints just them, and a glob pattern ('users/*') prints the files it
    matches in order, with each directory's header and footer once around its files.
    """
    total = 0
    if not glob.is_pattern(path):
        info = app.client.inspect_file(repo, ref, path)
        if info.type == "dir" and recursive:
            if not output:
                raise click.UsageError("get-file -r needs -o DIRECTORY")
            return _get_tree(app, repo, ref, info.path, output)
        total = info.size
    pieces = app.client.get_file(repo, ref, path)
    if output:
        with open(output, "wb") as out:
            _write(pieces, out, total)
    else:
        _write(pieces, sys.stdout.buffer, total)
        sys.stdout.buffer.flush()


def _get_tree(app: App, repo: str, ref: str, root: str, output: str) -> None:
    from pfsfuse.api.checkout import checkout  # a thread pool: loaded only for a checkout

    skipped: list[tuple[FileInfo, str]] = []
    checkout(app.client, repo, ref, root, output, stats=True, skipped=skipped)
    for f, target in skipped:  # as tar does: say so and go on
        click.echo(f"pfs: cannot make {f.type} device {target}: permission denied", err=True)


def _files_out(out: Output, files: Iterable[FileInfo], as_json: bool) -> None:
    if as_json:
        return out.json(list(files))
    out.table(views.FILE_HEADERS, views.file_rows(files))


@click.command("list-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("path", default="")
@click.option("--history", metavar="N|all", help="Also list earlier versions: up to N in all per file.")
@json_option
@pass_app
def list_file(app: App, repo: str, ref: str, path: str, history: str | None, as_json: bool) -> None:
    """List the files in a directory of REF: NAME TYPE SIZE.

    With --history, each entry is followed by its versions in earlier commits, newest first, with
    the commit that wrote each: COMMIT NAME TYPE SIZE.
    """
    versions = views.history_count(history)
    if versions is None:
        raise click.BadParameter(f"{history!r}: give a number of versions, or all (-1)")
    views.list_file(app.client, app.out, repo, ref, path, versions, as_json)


@click.command("inspect-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@json_option
@pass_app
def inspect_file(app: App, repo: str, ref: str, path: str, as_json: bool) -> None:
    """Show a file's details."""
    views.inspect_file(app.client, app.out, repo, ref, path, as_json)


@click.command("glob-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("pattern")
@json_option
@pass_app
def glob_file(app: App, repo: str, ref: str, pattern: str, as_json: bool) -> None:
    """List the files matching a glob pattern (e.g. '/*', '/dir/*.csv', '/**/x')."""
    _files_out(app.out, app.client.glob_file(repo, ref, pattern), as_json)


@click.command("diff-file", cls=RefPathCommand)
@click.argument("new_repo")
@click.argument("new_ref")
@click.argument("new_path", default="")
@click.argument("old_repo", required=False)
@click.argument("old_ref", required=False)
@click.argument("old_path", required=False)
@click.option("-s", "--shallow", is_flag=True, help="Compare only the top level of the directory.")
@json_option
@pass_app
def diff_file(app: App, new_repo, new_ref, new_path, old_repo, old_ref, old_path, shallow, as_json):
    """Show the files that differ between two versions of a path (default: the parent commit)."""
    if old_repo is not None and old_ref is None:
        raise click.UsageError("give OLD_REPO together with OLD_REF")
    d = app.client.diff_file(new_repo, new_ref, new_path, old_repo, old_ref, old_path, shallow)
    if as_json:
        return app.out.json(d)
    if d.new:
        app.out.line("New Files:")
        app.out.table(views.FILE_HEADERS, views.file_rows(d.new))
    if d.old:
        if d.new:
            app.out.line("")
        app.out.line("Old Files:")
        app.out.table(views.FILE_HEADERS, views.file_rows(d.old))


@click.command("delete-file", cls=RefPathCommand)
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@pass_app
def delete_file(app: App, repo: str, ref: str, path: str) -> None:
    """Delete a file or directory from REF (a branch or an open commit)."""
    app.client.write_files(repo, ref, [Delete(path)])


@click.command("copy-file", cls=RefPathCommand)
@click.argument("src_repo")
@click.argument("src_ref")
@click.argument("src_path")
@click.argument("dst_repo")
@click.argument("dst_ref")
@click.argument("dst_path", required=False)
@click.option("-o", "--overwrite", is_flag=True, help="Replace DST_PATH if it exists.")
@pass_app
def copy_file(app: App, src_repo, src_ref, src_path, dst_repo, dst_ref, dst_path, overwrite):
    """Copy a file or directory by reference: no data is copied."""
    dst = src_path if dst_path is None else dst_path
    app.client.write_files(dst_repo, dst_ref, [Copy(dst, src_repo, src_ref, src_path, overwrite)])
