"""1.7's object verbs, as far as they map onto this store: get-object, get-tag.

1.7 stored file data as objects named by content hash, and datum outputs under tags. Here a large
file's content is addressed by its hash (the chunk list stored under it), so get-object reads it;
smaller files keep their chunk list inline and have no object of their own, and a datum's output
is kept under its key in the pipeline's `__<pipeline>` repo, not under a tag.
"""

from __future__ import annotations

import sys

import click

from pfsfuse.metadata.errors import DataLoss, InvalidArgument, NotFound
from pfsfuse.tools.cli.app import App, pass_app


@click.command("get-object")
@click.argument("hash_")
@pass_app
def get_object(app: App, hash_: str) -> None:
    """Print the content of the object HASH: a file of more than a few chunks, by the hash
    inspect-file shows (read smaller files with get-file)."""
    try:
        key = bytes.fromhex(hash_)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise InvalidArgument(f"{hash_!r} is not an object hash (32 hex digits, as inspect-file shows)")
    try:
        chunks = app.client.chunk_list(key)
    except (NotFound, DataLoss):
        raise NotFound(
            f"no object {hash_}: only files of more than a few chunks are objects here; "
            "read other files with get-file REPO@REF:PATH"
        ) from None
    for c in chunks:
        sys.stdout.buffer.write(app.client.read_chunk(c))
    sys.stdout.buffer.flush()


@click.command("get-tag")
@click.argument("tag")
@pass_app
def get_tag(app: App, tag: str) -> None:
    """1.7's tagged objects (datum outputs) do not exist here: this says where to look instead."""
    raise NotFound(
        f"no tag {tag}: pfs keeps no tags; a datum's output is in the pipeline's __PIPELINE repo "
        "under the datum's id (get-file __PIPELINE@datums:DATUM/out)"
    )
