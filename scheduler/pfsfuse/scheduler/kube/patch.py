"""A spec's own changes to its worker pods: `pod_spec`, a merge patch, and `pod_patch`, a JSON
patch (RFC 6902), both applied to the pod's `spec` after everything else was set.

`pod_spec` merges as Pachyderm 1.7's did (it decoded the JSON over the pod spec it had built):
objects merge key by key and `null` deletes a key (RFC 7386), and lists of named objects
(containers, volumes, env, ...) merge item by item by name, so that `{"containers": [{"name":
"user", "securityContext": ...}]}` changes the user container rather than replacing all of them.
Other lists are replaced.
"""

from __future__ import annotations

import copy
import json

from pfsfuse.metadata.errors import InvalidArgument


def merge(target, patch):
    """`patch` merged into a copy of `target`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and _named(value) and _named(out.get(key)):
            out[key] = _merge_named(out[key], value)
        else:
            out[key] = merge(out.get(key), value)
    return out


def _named(items) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _merge_named(target: list[dict], patch: list[dict]) -> list[dict]:
    out = [dict(i) for i in target]
    where = {i["name"]: n for n, i in enumerate(out)}
    for item in patch:
        if item["name"] in where:
            out[where[item["name"]]] = merge(out[where[item["name"]]], item)
        else:
            out.append(merge({}, item))
    return out


def apply_pod_spec(pod_spec: dict, text: str) -> dict:
    try:
        patch = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"pod_spec is not JSON: {e}") from None
    if not isinstance(patch, dict):
        raise InvalidArgument("pod_spec must be a JSON object (fields of the pod's spec)")
    return merge(pod_spec, patch)


def apply_pod_patch(pod_spec: dict, text: str) -> dict:
    import jsonpatch  # only specs with a pod_patch need it

    try:
        ops = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"pod_patch is not JSON: {e}") from None
    if not isinstance(ops, list):
        raise InvalidArgument(
            "pod_patch must be a JSON patch: a list of operations such as "
            '{"op": "add", "path": "/tolerations", "value": [...]}'
        )
    try:
        return jsonpatch.JsonPatch(ops).apply(pod_spec)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, TypeError) as e:
        raise InvalidArgument(f"pod_patch does not apply to the worker pod's spec: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
