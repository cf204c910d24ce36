"""What every part of the mount shares: errors become errnos at the FUSE boundary, names from the
kernel are checked there, and blocking calls (the daemon, the object store) go to worker threads."""

from __future__ import annotations

import errno
import functools
import logging

import pyfuse3
import trio

from pfsfuse.metadata import names
from pfsfuse.metadata.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NameTooLong,
    NoSpace,
    NotFound,
    PfsError,
)

log = logging.getLogger("pfsfuse.mount")

BLOCK = 1 << 20  # what we tell readers to read at a time

_ERRNO = {  # the first class an error is an instance of decides
    NotFound: errno.ENOENT,
    NameTooLong: errno.ENAMETOOLONG,
    AlreadyExists: errno.EEXIST,
    InvalidArgument: errno.EINVAL,
    FailedPrecondition: errno.EROFS,
    NoSpace: errno.ENOSPC,
    DataLoss: errno.EIO,
}


def translate(handler):
    """Errors become errnos here, at the boundary; anything unexpected is logged as EIO."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except PfsError as e:
            code = next((c for cls, c in _ERRNO.items() if isinstance(e, cls)), errno.EIO)
            if code == errno.EIO:
                log.error("%s: %s", handler.__name__, e)
            raise pyfuse3.FUSEError(code) from None
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def component(name: bytes) -> str:
    """A name the kernel gives for an entry of a directory, as text the store accepts."""
    if len(name) > names.MAX_COMPONENT:
        raise fail(errno.ENAMETOOLONG)
    try:
        text = name.decode()
        names.path(text)
    except (UnicodeDecodeError, PfsError):
        raise fail(errno.EINVAL) from None
    if "/" in text:
        raise fail(errno.EINVAL)
    return text


class Threads:
    """Runs blocking calls in worker threads, a bounded number at a time."""

    def __init__(self, limit: int = 16):
        self._limiter = trio.CapacityLimiter(limit)

    async def run(self, fn, *args):
        return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)
