"""Previews of a file: text, CSV as a table, JSON, images, Parquet's schema and first rows. Each
reads only what it shows: a head of the file, or (Parquet) the footer and the first row group's
pages, through ranged reads."""

from __future__ import annotations

import csv
import io
import json
import posixpath

from pfsfuse.api.client import Client
from pfsfuse.console.markup import esc, size, table

HEAD = 64 * 1024  # bytes read for a text or CSV preview
JSON_MAX = 1024 * 1024  # larger JSON is previewed as text
ROWS = 50  # CSV and Parquet rows shown
IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


def kind(path: str) -> str:
    ext = posixpath.splitext(path)[1].lower()
    if ext in IMAGES:
        return "image"
    return {".csv": "csv", ".tsv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}.get(ext, "text")


def read(api: Client, repo: str, commit: str, path: str, offset: int, length: int) -> bytes:
    return b"".join(api.get_file(repo, commit, path, offset, length))


def render(api: Client, repo: str, commit: str, path: str, file_size: int, raw_url: str) -> str:
    k = kind(path)
    if k == "image":
        return f'<div class="preview image"><img alt="{esc(posixpath.basename(path))}" src="{esc(raw_url)}"></div>'
    if k == "parquet":
        return _parquet(api, repo, commit, path, file_size)
    if k == "json" and file_size <= JSON_MAX:
        data = read(api, repo, commit, path, 0, file_size)
        try:
            pretty = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError as e:
            return f'<p class="muted">not valid JSON ({esc(e)}); as text:</p>' + _text(data, file_size)
        return f'<pre class="preview json">{esc(pretty)}</pre>'
    head = read(api, repo, commit, path, 0, min(file_size, HEAD))
    if k == "csv":
        return _csv(head, file_size, "\t" if path.lower().endswith(".tsv") else ",")
    return _text(head, file_size)


def _cut(head: bytes, file_size: int) -> str:
    return f'<p class="muted">the first {size(len(head))} of {size(file_size)}</p>' if len(head) < file_size else ""


def _text(head: bytes, file_size: int) -> str:
    if b"\0" in head[:8192]:
        return f'<p class="muted">binary file, {size(file_size)}: download it to see it</p>'
    return _cut(head, file_size) + f'<pre class="preview text">{esc(head.decode("utf-8", "replace"))}</pre>'


def _csv(head: bytes, file_size: int, delimiter: str) -> str:
    text = head.decode("utf-8", "replace")
    if len(head) < file_size and "\n" in text:
        text = text[: text.rindex("\n")]  # no half row
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        return '<p class="muted">empty</p>'
    header, body = rows[0], rows[1 : ROWS + 1]
    more = f'<p class="muted">the first {len(body)} rows</p>' if len(rows) > ROWS + 1 or len(head) < file_size else ""
    return more + table(header, [[esc(c) for c in r] for r in body], "preview csv")


class RangedFile(io.RawIOBase):
    """A read-only, seekable file over ranged reads of one file at one commit."""

    def __init__(self, api: Client, repo: str, commit: str, path: str, file_size: int):
        self.api, self.repo, self.commit, self.path, self.size = api, repo, commit, path, file_size
        self.pos = 0
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        data = read(self.api, self.repo, self.commit, self.path, self.pos, n)
        buffer[: len(data)] = data
        self.pos += len(data)
        self.bytes_read += len(data)
        return len(data)


def _parquet(api: Client, repo: str, commit: str, path: str, file_size: int) -> str:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return '<p class="muted">install pyarrow beside the daemon to preview Parquet; download it meanwhile</p>'
    f = RangedFile(api, repo, commit, path, file_size)
    try:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        # Only the first row group: asked for all, pyarrow fetches every group's pages up front.
        first = [0] if pf.metadata.num_row_groups else []
        batch = next(pf.iter_batches(batch_size=ROWS, row_groups=first), None)
    except Exception as e:  # a file that is not Parquet after all: say so rather than fail the page
        return f'<p class="muted">not a readable Parquet file: {esc(e)}</p>'
    meta = pf.metadata
    fields = table(["column", "type"], [[esc(fl.name), esc(fl.type)] for fl in schema], "schema")
    rows = []
    if batch is not None:
        cols = batch.to_pydict()
        rows = [[esc(cols[name][i]) for name in schema.names] for i in range(batch.num_rows)]
    return (
        f'<p class="muted">{meta.num_rows} rows in {meta.num_row_groups} row groups; '
        f'<span class="read-bytes">read {size(f.bytes_read)} of {size(file_size)}</span></p>'
        f"<h3>Schema</h3>{fields}<h3>First rows</h3>{table(list(schema.names), rows, 'preview parquet')}"
    )
