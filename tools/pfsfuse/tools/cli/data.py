"""Backup verbs: extract and restore."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import click
import msgspec

from pfsfuse.chunks import ObjectNotFound, StorageError
from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, Unavailable
from pfsfuse.scheduler.spec import PipelineSpec
from pfsfuse.tools.cli.app import App, pass_app
from pfsfuse.tools.cli.output import size

PART = 64 << 20  # bytes per object when a dump goes to an object store
_PART_NAME = "part-{:08d}"


@click.command("extract")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the dump to this file (default: stdout).")
@click.option("--url", help="Write the dump to an object store: file:///dir, s3://bucket/prefix, gs://..., az://...")
@click.option(
    "--no-objects",
    is_flag=True,
    help="Leave the data out: then only this store (same store.json and object store, new index) can restore it.",
)
@pass_app
def extract(app: App, output: str | None, url: str | None, no_objects: bool) -> None:
    """Dump every pipeline, repo, commit (with its provenance and description) and branch, and
    their data, as a stream that `pfs restore` rebuilds into an empty store with the same commit
    ids, whose pipelines then run as before."""
    if output and url:
        raise click.UsageError("give -o or --url, not both")
    if not output and not url and sys.stdout.isatty():
        raise click.UsageError("the dump is binary: give -o FILE or --url, or redirect stdout")
    pipelines = _pipelines_header(app)  # before the store's snapshot: their repos are in it
    pieces = itertools.chain([pipelines], app.client.extract(not no_objects))
    if url:
        _to_object_store(url, pieces)
    elif output:
        # Written aside and renamed when complete: a failed extract leaves no partial dump.
        tmp = f"{output}.partial"
        try:
            with open(tmp, "wb") as f:
                for piece in pieces:
                    f.write(piece)
            os.replace(tmp, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    else:
        for piece in pieces:
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()


@click.command("restore")
@click.option(
    "-i",
    "--input",
    "source",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the dump from this file (default: stdin).",
)
@click.option("--url", help="Read the dump from an http(s) URL, or from the object store URL extract wrote it to.")
@pass_app
def restore(app: App, source: str | None, url: str | None) -> None:
    """Rebuild a dump of `pfs extract` into this store, which must be empty: the same pipelines,
    repos, commits (same ids) and branches, and their data."""
    if source and url:
        raise click.UsageError("give -i or --url, not both")
    if not source and not url and sys.stdin.isatty():
        raise click.UsageError("give -i FILE or --url, or pipe the dump into stdin")
    with contextlib.ExitStack() as stack:
        dump: BinaryIO
        if url:
            dump = io.BufferedReader(_Pieces(stack.enter_context(_from_url(url))), 1 << 20)
        elif source:
            dump = stack.enter_context(open(source, "rb"))
        else:
            dump = sys.stdin.buffer
        pipelines, dump = _read_pipelines(dump)
        r = app.client.restore(dump)
    for saved in pipelines:  # their repos, with their outputs and datums, are restored
        app.pipelines.create_pipeline(saved.spec, restore=True)
        if saved.state == "paused":
            app.pipelines.stop_pipeline(saved.spec.name)
    app.out.line(
        f"Restored {r.repos} repos, {r.commits} commits, {r.branches} branches, "
        f"{r.chunks} chunks ({size(r.bytes)}) and {len(pipelines)} pipelines"
    )


# A dump of `pfs extract` is the pipelines (PIPELINES_MAGIC, a 4-byte length, their specs and
# states as JSON), then the store's dump (which starts with PFSDUMP). Restore also takes a store's
# dump alone, as the API's extract gives it.
PIPELINES_MAGIC = b"PFSPIPES"


class _Saved(msgspec.Struct):
    spec: PipelineSpec
    state: str = "running"


def _pipelines_header(app: App) -> bytes:
    saved = [_Saved(p.spec, p.state) for p in app.pipelines.list_pipeline()]
    body = msgspec.json.encode(saved)
    return PIPELINES_MAGIC + len(body).to_bytes(4, "big") + body


def _read_pipelines(dump: BinaryIO) -> tuple[list, BinaryIO]:
    """The pipelines at the head of a dump, if any, and the store's dump that follows."""
    head = _read_exactly(dump, len(PIPELINES_MAGIC))
    if head != PIPELINES_MAGIC:  # a store's dump alone: give its first bytes back
        rest = iter(lambda: dump.read(1 << 20), b"")
        return [], io.BufferedReader(_Pieces(itertools.chain([head], rest)), 1 << 20)
    n = int.from_bytes(_read_exactly(dump, 4), "big")
    body = _read_exactly(dump, n)
    if len(body) != n:
        raise InvalidArgument("the dump ends early (truncated?) in its pipelines")
    try:
        return msgspec.json.decode(body, type=list[_Saved]), dump
    except msgspec.DecodeError as e:
        raise InvalidArgument(f"corrupt dump: its pipelines: {e}") from None


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n and (piece := f.read(n - got)):
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def _object_store(url: str):
    from pfsfuse.chunks import open_store  # only these verbs need the object stores

    try:
        return open_store(url)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


def _to_object_store(url: str, pieces: Iterable[bytes]) -> None:
    """The dump as objects part-00000000, part-00000001, ... of PART bytes under `url`."""
    store = _object_store(url)
    written: list[str] = []
    try:
        if next(iter(store.list("part-")), None) is not None:
            raise FailedPrecondition(f"{url} already holds a dump: extract to a new place")
        buf = bytearray()
        for piece in pieces:
            buf += piece
            while len(buf) >= PART:
                written.append(_PART_NAME.format(len(written)))
                store.put(written[-1], bytes(buf[:PART]))
                del buf[:PART]
        written.append(_PART_NAME.format(len(written)))
        store.put(written[-1], bytes(buf))
    except StorageError as e:
        _delete(store, written)
        raise Unavailable(str(e)) from None
    except BaseException:
        _delete(store, written)
        raise
    finally:
        store.close()


def _delete(store, keys: list[str]) -> None:
    with contextlib.suppress(Exception):
        for key in keys:
            store.delete(key)


@contextlib.contextmanager
def _from_url(url: str) -> Iterator[Iterator[bytes]]:
    if url.startswith(("http://", "https://")):
        import httpx

        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as r:
                if r.status_code != 200:
                    raise Unavailable(f"cannot fetch {url}: HTTP {r.status_code}")
                yield r.iter_bytes(1 << 20)
        except httpx.HTTPError as e:
            raise Unavailable(f"cannot fetch {url}: {e or type(e).__name__}") from None
        return
    store = _object_store(url)
    try:
        yield _parts(store, url)
    finally:
        store.close()


def _parts(store, url: str) -> Iterator[bytes]:
    n = 0
    try:
        while True:
            try:
                yield store.get(_PART_NAME.format(n))
            except ObjectNotFound:
                if n == 0:
                    raise InvalidArgument(f"{url} holds no dump (no {_PART_NAME.format(0)})") from None
                return
            n += 1
    except StorageError as e:
        raise Unavailable(str(e)) from None


class _Pieces(io.RawIOBase):
    """A readable file over an iterator of bytes."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buf = piece
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
