"""Strict schema validation of Kubernetes objects, for every API version we support.

kubernetes-validate ships the OpenAPI schemas of 1.25 to 1.37 (its 1.37.0 release); strict mode
refuses fields a version does not know, as a server with field validation Strict does.
"""

from __future__ import annotations

import kubernetes_validate

VERSIONS = ("1.28", "1.30", "1.33", "1.37")


def validate(obj: dict, version: str) -> None:
    """Raise AssertionError naming the object and the first problem."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        raise AssertionError(
            f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} is invalid for "
            f"Kubernetes {version} at {where}: {e.message}"
        ) from None


def problem(obj: dict, version: str) -> str | None:
    """The first schema problem of `obj`, in one line, or None."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return f"{where}: {e.message}" if where else e.message
    except kubernetes_validate.utils.SchemaNotFoundError as e:  # a kind the schemas lack
        return str(e).splitlines()[0]
    return None
