"""Where the data of a put comes from: a stream the caller hands over, a file the daemon opens
itself, or a URL it fetches (pfsfuse.ingress)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import BinaryIO

from pfsfuse import ingress
from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import InvalidArgument, NotFound


@contextlib.contextmanager
def open_source(op: Put) -> Iterator[BinaryIO]:
    """The data a Put stores: its stream, a local file the daemon opens, or a URL it fetches."""
    if op.stream is not None:
        yield op.stream
    elif op.local is not None:
        try:
            f = open(op.local, "rb")
        except FileNotFoundError:
            raise NotFound(f"{op.local}: no such file") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{op.local} is a directory; use -r") from None
        except PermissionError:
            raise InvalidArgument(f"{op.local}: permission denied") from None
        with f:
            yield f
    elif op.url is not None:
        with ingress.open_url(op.url) as stream:
            yield stream
    else:
        raise InvalidArgument(f"no data given for {op.path}")
