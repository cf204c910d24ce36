"""pfsfuse: Git for data, mounted as a file system.

The public Python API is `pfsfuse.Client` (see `pfsfuse.sdk`); errors are `pfsfuse.PfsError` and
its subclasses. The package's modules live in four source roots (pfsfuse/, metadata/, scheduler/,
tools/) that a wheel merges into one directory: `__path__` joins them in a source checkout, so
that this regular package still finds `pfsfuse.metadata` and the others.
"""

import os
import sys

# pkgutil.extend_path, without the 35 modules pkgutil imports (typing, re, weakref...) into every
# command's start-up. A source root on sys.path (the checkout's own pfsfuse/, when run from its
# top) is not a portion.
__path__ = [
    p
    for p in dict.fromkeys([*__path__, *(os.path.join(e, __name__) for e in sys.path if isinstance(e, str))])
    if os.path.isdir(p) and not os.path.isdir(os.path.join(p, "pfsfuse"))
]

# Loaded on first use: `import pfsfuse.metadata` (the CLI, the daemon) should not pay for the SDK.
_LAZY = {
    "Client": "pfsfuse.sdk",
    "CommitContext": "pfsfuse.sdk",
    "PfsError": "pfsfuse.metadata.errors",
    "NotFound": "pfsfuse.metadata.errors",
    "AlreadyExists": "pfsfuse.metadata.errors",
    "InvalidArgument": "pfsfuse.metadata.errors",
    "FailedPrecondition": "pfsfuse.metadata.errors",
    "Unavailable": "pfsfuse.metadata.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pfsfuse' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
