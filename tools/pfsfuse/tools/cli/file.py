"""File verbs: put-file, get-file, list-file, inspect-file, glob-file, diff-file, delete-file,
copy-file."""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Iterable, Iterator
from urllib.parse import urlparse

import click
import msgspec

from pfsfuse.api.types import Copy, Delete, FileInfo, Put
from pfsfuse.metadata.errors import InvalidArgument, NotFound
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import Output, size

PROGRESS_MIN = 64 << 20  # show a progress bar for transfers at least this large
LIST_PAGE = 10_000


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def _dest(source: str) -> str:
    """Where a source lands when no path is given: its URL path, or its local path without any
    leading '/', './' or '../' (as pachctl does)."""
    if _is_url(source):
        return urlparse(source).path
    parts = [p for p in posixpath.normpath(source).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def expand_sources(path: str | None, sources: list[str], recursive: bool) -> list[Put]:
    """pachctl's rules: one source and a PATH writes PATH; no PATH writes each source at its own
    name; several sources and a PATH write under PATH. Directories need -r."""
    if not sources:
        if not path:
            raise click.UsageError("put-file from stdin needs a PATH")
        return [Put(path, stream=sys.stdin.buffer)]
    out = []
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
        if _is_url(source):
            out.append(Put(dest, url=source))
        elif os.path.isdir(source):
            if not recursive:
                raise InvalidArgument(f"{source} is a directory; use -r")
            out.extend(_walk(source, dest))
        elif os.path.exists(source):
            out.append(Put(dest, local=source))
        else:
            raise NotFound(f"{source}: no such file or directory")
    return out


def _walk(directory: str, dest: str) -> Iterator[Put]:
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel = os.path.relpath(root, directory)
        for name in sorted(files):
            target = posixpath.join(dest, name) if rel == "." else posixpath.join(dest, rel, name)
            yield Put(target, local=os.path.join(root, name))


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


def _with_progress(sources: list[Put], progress) -> Iterator[Put]:
    """Stream local files through the client so their progress can be shown."""
    task = progress.add_task("put-file", total=sum(os.path.getsize(s.local) for s in sources if s.local))
    for s in sources:
        if s.local is None:
            yield s
            continue
        with open(s.local, "rb") as f:
            yield msgspec.structs.replace(s, local=None, stream=_Counting(f, progress, task))


@click.command("put-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("path", required=False)
@click.option(
    "-f", "--file", "files", multiple=True,
    help="A local file, a directory (with -r), an http(s) URL, or - for stdin. Repeatable.",
)
@click.option("-i", "--input-file", type=click.File("r"), help="A file listing sources, one per line.")
@click.option("-r", "--recursive", is_flag=True, help="Put directories recursively.")
@click.option("-a", "--append", is_flag=True, help="Append to existing files instead of overwriting.")
@click.option("-o", "--overwrite", is_flag=True, help="Overwrite existing files (the default).")
@click.option("-c", "--commit", is_flag=True, help="Accepted for pachctl; a branch without an open commit always gets one.")
@click.option("-p", "--parallelism", type=int, default=None, hidden=True)
@pass_app
def put_file(app: App, repo, ref, path, files, input_file, recursive, append, overwrite, commit, parallelism):
    """Put files into REF (a branch or an open commit).

    With no open commit on the branch, one is started and finished around the write. Existing
    files are overwritten unless -a is given (pachctl 1.7 appended by default).
    """
    if append and overwrite:
        raise click.UsageError("-a and -o contradict each other")
    sources = list(files)
    if input_file is not None:
        sources.extend(line.strip() for line in input_file if line.strip())
    expanded = [msgspec.structs.replace(p, append=append) for p in expand_sources(path, sources, recursive)]
    total = sum(os.path.getsize(s.local) for s in expanded if s.local)
    if sys.stderr.isatty() and total >= PROGRESS_MIN:
        with _progress() as progress:
            app.client.write_files(repo, ref, _with_progress(expanded, progress))
    else:
        app.client.write_files(repo, ref, expanded)


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


@click.command("get-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@click.option("-o", "--output", type=click.Path(), help="Write to this file (or directory with -r).")
@click.option("-r", "--recursive", is_flag=True, help="Get a directory into --output.")
@pass_app
def get_file(app: App, repo: str, ref: str, path: str, output: str | None, recursive: bool) -> None:
    """Print a file, or write it (or with -r a directory) to --output."""
    info = app.client.inspect_file(repo, ref, path)
    if info.type == "dir":
        if not recursive:
            raise InvalidArgument(f"{repo}@{ref}:{info.path or '/'} is a directory; use -r")
        if not output:
            raise click.UsageError("get-file -r needs -o DIRECTORY")
        return _get_tree(app, repo, ref, info.path, output)
    if output:
        with open(output, "wb") as out:
            _write(app.client.get_file(repo, ref, path), out, info.size)
    else:
        _write(app.client.get_file(repo, ref, path), sys.stdout.buffer, info.size)
        sys.stdout.buffer.flush()


def _get_tree(app: App, repo: str, ref: str, root: str, output: str) -> None:
    for f in app.client.walk_file(repo, ref, root):
        rel = posixpath.relpath(f.path, root) if root else f.path or "."
        target = os.path.join(output, rel)
        if f.type == "dir":
            os.makedirs(target, exist_ok=True)
        elif f.type == "symlink":
            os.symlink(f.target, target)
        else:
            with open(target, "wb") as out:
                _write(app.client.get_file(repo, ref, f.path), out, f.size)
            if f.executable:
                os.chmod(target, 0o755)


def _file_rows(files: Iterable[FileInfo]) -> Iterator[list[str]]:
    for f in files:
        yield [f.path or "/", f.type, size(f.size)]


def _files_out(out: Output, files: Iterable[FileInfo], as_json: bool) -> None:
    if as_json:
        return out.json(list(files))
    out.table(["NAME", "TYPE", "SIZE"], _file_rows(files))


@click.command("list-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("path", default="")
@json_option
@pass_app
def list_file(app: App, repo: str, ref: str, path: str, as_json: bool) -> None:
    """List the files in a directory of REF: NAME TYPE SIZE."""

    def pages() -> Iterator[FileInfo]:
        after = None
        while True:
            page = app.client.list_file(repo, ref, path, after, LIST_PAGE)
            yield from page
            if len(page) < LIST_PAGE:
                return
            after = posixpath.basename(page[-1].path)

    _files_out(app.out, pages(), as_json)


@click.command("inspect-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@json_option
@pass_app
def inspect_file(app: App, repo: str, ref: str, path: str, as_json: bool) -> None:
    """Show a file's details."""
    f = app.client.inspect_file(repo, ref, path)
    if as_json:
        return app.out.json(f)
    fields = [("Path", "/" + f.path), ("Type", f.type), ("Size", size(f.size))]
    if f.type == "file":
        fields.append(("Hash", f.hash))
        fields.append(("Executable", "yes" if f.executable else "no"))
    elif f.type == "dir":
        fields.append(("Children", str(f.children)))
    else:
        fields.append(("Target", f.target))
    app.out.fields(fields)


@click.command("glob-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("pattern")
@json_option
@pass_app
def glob_file(app: App, repo: str, ref: str, pattern: str, as_json: bool) -> None:
    """List the files matching a glob pattern (e.g. '/*', '/dir/*.csv', '/**/x')."""
    _files_out(app.out, app.client.glob_file(repo, ref, pattern), as_json)


@click.command("diff-file")
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
        app.out.table(["NAME", "TYPE", "SIZE"], _file_rows(d.new))
    if d.old:
        if d.new:
            app.out.line("")
        app.out.line("Old Files:")
        app.out.table(["NAME", "TYPE", "SIZE"], _file_rows(d.old))


@click.command("delete-file")
@click.argument("repo")
@click.argument("ref")
@click.argument("path")
@pass_app
def delete_file(app: App, repo: str, ref: str, path: str) -> None:
    """Delete a file or directory from REF (a branch or an open commit)."""
    app.client.write_files(repo, ref, [Delete(path)])


@click.command("copy-file")
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


COMMANDS = [put_file, get_file, list_file, inspect_file, glob_file, diff_file, delete_file, copy_file]
