"""pfsfuse: Git for data, mounted as a file system.

The public Python API is `pfsfuse.Client` (see `pfsfuse.sdk`); errors are `pfsfuse.PfsError` and
its subclasses. The package's modules live in four source roots (pfsfuse/, metadata/, scheduler/,
tools/) that a wheel merges into one directory: `extend_path` joins them in a source checkout, so
that this regular package still finds `pfsfuse.metadata` and the others.
"""

import os
from pkgutil import extend_path

# A source root on sys.path (the checkout's own pfsfuse/, when run from its top) is not a portion.
__path__ = [p for p in extend_path(__path__, __name__) if not os.path.isdir(os.path.join(p, "pfsfuse"))]

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
