"""A fake Kubernetes API server for tests: a real HTTP server, in a thread, with the REST paths
pfs uses, driven by the real `kubernetes` client.

It does what the real one does where our code depends on it: server-set uid, resourceVersion and
creationTimestamp; generateName; 404, 409 (exists, or a stale resourceVersion) and 422 (every body
is checked with kubernetes-validate's strict schemas, and names as the server checks them); label
and field selectors; JSON, merge and strategic-merge patches; the status and log subresources;
watches from a resourceVersion (410 Gone once it is compacted); ownerReference garbage
collection; and RBAC refusals (`forbid`). The kubelet simulator (kubelet.py) drives pods.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jsonpatch
from fakeforward import portforward
from kubecheck import problem

VERSION = "1.33"
# plural -> (kind, apiVersion, namespaced)
RESOURCES = {
    "pods": ("Pod", "v1", True),
    "configmaps": ("ConfigMap", "v1", True),
    "secrets": ("Secret", "v1", True),
    "services": ("Service", "v1", True),
    "serviceaccounts": ("ServiceAccount", "v1", True),
    "events": ("Event", "v1", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "v1", True),
    "nodes": ("Node", "v1", False),
    "namespaces": ("Namespace", "v1", False),
    "roles": ("Role", "rbac.authorization.k8s.io/v1", True),
    "rolebindings": ("RoleBinding", "rbac.authorization.k8s.io/v1", True),
    "clusterroles": ("ClusterRole", "rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", False),
    "statefulsets": ("StatefulSet", "apps/v1", True),
    "daemonsets": ("DaemonSet", "apps/v1", True),
    "networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1", True),
}
_PATH = re.compile(
    r"/(?:api/v1|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))(?:/namespaces/(?P<ns>[^/]+))?"
    r"/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|log|portforward))?"
)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        self.code, self.reason, self.message = code, reason, message


class FakeApi:
    """The objects, the event history and the HTTP server. Use as a context manager."""

    def __init__(self, version: str = VERSION):
        self.version = version
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.events: list[tuple[int, str, str, dict]] = []  # (rv, type, plural, object)
        self.compacted = 0  # watches from before this resourceVersion get 410 Gone
        self.rv = 100
        self.lock = threading.Condition()
        self.logs: dict[tuple[str, str, str], str] = {}  # (namespace, pod, container) -> text
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural) refused as RBAC would
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self.down = False  # answer nothing (a cluster that is unreachable)
        self.forwards: dict[tuple[str, str, int], tuple[str, int]] = {}  # a pod's port: (host, port) here
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle

    def __enter__(self) -> FakeApi:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def kubeconfig(self, path) -> str:
        """A kubeconfig file for this server, whose current context is `fake`."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": "default"}}],
        }
        path.write_text(json.dumps(cfg))
        return str(path)

    def forbid(self, verb: str, plural: str) -> None:
        self.forbidden.add((verb, plural))

    # -- the store, also used directly by the kubelet simulator

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, plural: str, namespace: str | None = None, labels: str = "", fields: str = "") -> list[dict]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (p, ns, _), o in sorted(self.objects.items())
                if p == plural
                and (namespace is None or ns == namespace)
                and _labels_match(o, labels)
                and _fields_match(o, fields)
            ]

    def create(self, plural: str, namespace: str, body: dict, validate: bool = True) -> dict:
        kind, api_version, namespaced = RESOURCES[plural]
        if validate:
            self._check(body, kind)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f'{kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                    )
                meta["name"] = meta["generateName"] + "".join(
                    secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5)
                )
            _check_name(kind, meta["name"])
            ns = namespace if namespaced else ""
            if namespaced:
                if meta.get("namespace", ns) != ns:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                meta["namespace"] = ns
            if (plural, ns, meta["name"]) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            obj["apiVersion"], obj["kind"] = api_version, kind
            _defaults(plural, obj)
            self._put(plural, ns, obj, "ADDED")
            return copy.deepcopy(obj)

    def replace(
        self, plural: str, namespace: str, name: str, body: dict, status: bool = False, validate: bool = True
    ) -> dict:
        kind = RESOURCES[plural][0]
        if validate:
            self._check(body, kind)
        with self.lock:
            current = self.objects.get((plural, namespace, name))
            if current is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            given = body.get("metadata", {}).get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                )
            if body.get("metadata", {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            obj = copy.deepcopy(body)
            for k in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
                if k in current["metadata"]:
                    obj.setdefault("metadata", {})[k] = current["metadata"][k]
                else:
                    obj.setdefault("metadata", {}).pop(k, None)
            obj["apiVersion"], obj["kind"] = current["apiVersion"], current["kind"]
            if status:  # the status subresource changes the status alone
                obj = {**copy.deepcopy(current), "status": obj.get("status", {})}
            elif "status" in current:
                obj["status"] = current["status"]
            if plural == "pods" and not status and _pod_spec_changed(current, obj):
                raise ApiError(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields other than '
                    "`spec.containers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations`",
                )
            _defaults(plural, obj)
            self._put(plural, namespace, obj, "MODIFIED")
            return copy.deepcopy(obj)

    def patch(self, plural: str, namespace: str, name: str, content_type: str, patch, status: bool = False) -> dict:
        current = self.get(plural, namespace, name)
        if current is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        try:
            if content_type.startswith("application/json-patch+json"):
                patched = jsonpatch.JsonPatch(patch).apply(current)
            elif content_type.startswith("application/merge-patch+json"):
                patched = _merge(current, patch, strategic=False)
            elif content_type.startswith("application/strategic-merge-patch+json"):
                patched = _merge(current, patch, strategic=True)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
                )
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
            ) from None
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.replace(plural, namespace, name, patched, status=status)

    def delete(self, plural: str, namespace: str, name: str, grace: int | None = None) -> dict:
        """A pod on a node is deleted gracefully, as the real server does: it gets a
        deletionTimestamp and goes once the kubelet stopped its containers (or `grace` is 0)."""
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            if (
                plural == "pods"
                and grace != 0
                and obj["spec"].get("nodeName")
                and obj.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ):
                if "deletionTimestamp" not in obj["metadata"]:
                    obj["metadata"]["deletionTimestamp"] = _now()
                    spec_grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
                    obj["metadata"]["deletionGracePeriodSeconds"] = spec_grace if grace is None else grace
                    self._put(plural, namespace, obj, "MODIFIED")
                return copy.deepcopy(obj)
            del self.objects[(plural, namespace, name)]
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, "DELETED", plural, copy.deepcopy(obj)))
            self.lock.notify_all()
            self._collect(obj["metadata"]["uid"])
            return obj

    def _collect(self, uid: str) -> None:
        """Garbage collection: objects all of whose owners are gone go too."""
        alive = {o["metadata"]["uid"] for o in self.objects.values()}
        for (plural, ns, name), o in list(self.objects.items()):
            owners = [r["uid"] for r in o["metadata"].get("ownerReferences") or []]
            if uid in owners and not any(u in alive for u in owners):
                self.delete(plural, ns, name)

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410 Gone."""
        with self.lock:
            self.compacted = self.rv
            self.events.clear()

    def _put(self, plural: str, ns: str, obj: dict, event: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(plural, ns, obj["metadata"]["name"])] = obj
        self.events.append((self.rv, event, plural, copy.deepcopy(obj)))
        self.lock.notify_all()

    def _check(self, body: dict, kind: str) -> None:
        if not isinstance(body, dict) or body.get("kind", kind) != kind:
            raise ApiError(400, "BadRequest", f"the body is not a {kind}")
        sent = copy.deepcopy(body)
        sent.setdefault("apiVersion", next(v for k, v, _ in RESOURCES.values() if k == kind))
        sent.setdefault("kind", kind)
        wrong = problem(sent, self.version)
        if wrong:
            raise ApiError(422, "Invalid", f'{kind} "{body.get("metadata", {}).get("name", "")}" is invalid: {wrong}')
        for v in (body.get("metadata", {}).get("labels") or {}).values():
            if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.fullmatch(v):
                raise ApiError(
                    422,
                    "Invalid",
                    f"metadata.labels: Invalid value: {v!r}: a valid label must be 63 characters or less",
                )

    def watch_from(self, plural: str, namespace: str | None, since: int, labels: str, fields: str, deadline: float):
        """Events after resourceVersion `since`, as they come, until the deadline."""
        if since and since < self.compacted:
            yield {
                "type": "ERROR",
                "object": _status(410, "Expired", f"too old resource version: {since} ({self.compacted})"),
            }
            return
        seen = since
        while time.monotonic() < deadline and not getattr(self, "closed", False):
            with self.lock:
                batch = [e for e in self.events if e[0] > seen]
                if not batch:
                    self.lock.wait(min(0.2, max(deadline - time.monotonic(), 0)))
                    continue
            for rv, kind, p, obj in batch:
                seen = rv
                if (
                    p == plural
                    and (namespace is None or obj["metadata"].get("namespace") == namespace)
                    and _labels_match(obj, labels)
                    and _fields_match(obj, fields)
                ):
                    yield {"type": kind, "object": obj}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        fake = self.fake
        if fake.down:  # an unreachable cluster: the connection drops
            self.close_connection = True
            self.connection.close()
            return
        url = urlsplit(self.path)
        fake.requests.append((self.command, url.path))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if url.path == "/version":
                return self._send(
                    200, {"major": "1", "minor": fake.version.split(".")[1], "gitVersion": f"v{fake.version}.0"}
                )
            m = _PATH.fullmatch(url.path)
            if m is None or m["plural"] not in RESOURCES:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({url.path})")
            plural, ns, name, sub = m["plural"], m["ns"] or "", m["name"], m["sub"]
            verb = {
                "GET": "watch" if query.get("watch") in ("true", "1") else "get" if name else "list",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }[self.command]
            if (verb, plural) in fake.forbidden or (verb, "*") in fake.forbidden:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{plural} is forbidden: User "system:serviceaccount:{ns or "default"}:pfsd" '
                    f'cannot {verb} resource "{plural}" in API group "{m["group"] or ""}"'
                    + (f' in the namespace "{ns}"' if ns else ""),
                )
            body = json.loads(raw) if raw else None
            if verb == "watch":
                return self._watch(plural, m["ns"], query)
            if verb == "list":
                items = fake.list(plural, m["ns"], query.get("labelSelector", ""), query.get("fieldSelector", ""))
                kind, api_version, _ = RESOURCES[plural]
                return self._send(
                    200,
                    {
                        "apiVersion": api_version,
                        "kind": f"{kind}List",
                        "metadata": {"resourceVersion": str(fake.rv)},
                        "items": items,
                    },
                )
            if verb == "create":
                return self._send(201, fake.create(plural, ns, _secret_data(plural, body)))
            if verb == "get":
                if sub == "log":
                    if fake.get(plural, ns, name) is None:
                        raise ApiError(404, "NotFound", f'pods "{name}" not found')
                    return self._send(200, fake.logs.get((ns, name, query.get("container", "")), ""))
                if sub == "portforward":
                    if fake.get(plural, ns, name) is None:
                        raise ApiError(404, "NotFound", f'pods "{name}" not found')
                    port = int(query.get("ports", "0"))
                    return portforward(self, fake.forwards.get((ns, name, port)), port, name)
                obj = fake.get(plural, ns, name)
                if obj is None:
                    raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
                return self._send(200, obj)
            if verb == "update":
                return self._send(
                    200, fake.replace(plural, ns, name, _secret_data(plural, body), status=sub == "status")
                )
            if verb == "patch":
                return self._send(
                    200,
                    fake.patch(plural, ns, name, self.headers.get("Content-Type", ""), body, status=sub == "status"),
                )
            if verb == "delete":
                grace = query.get("gracePeriodSeconds", (body or {}).get("gracePeriodSeconds"))
                return self._send(200, fake.delete(plural, ns, name, None if grace is None else int(grace)))
        except ApiError as e:
            self._send(e.code, _status(e.code, e.reason, e.message))
        except (ValueError, TypeError) as e:
            self._send(400, _status(400, "BadRequest", f"the request body is not valid: {e}"))

    def _watch(self, plural: str, ns: str | None, query: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        since = int(query.get("resourceVersion") or 0) or self.fake.rv
        try:
            for event in self.fake.watch_from(
                plural, ns, since, query.get("labelSelector", ""), query.get("fieldSelector", ""), deadline
            ):
                line = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(kind: str, name: str) -> None:
    limit = 63 if kind in ("Service", "Namespace") else 253
    if len(name) > limit or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ApiError(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
            "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        )


def _defaults(plural: str, obj: dict) -> None:
    """What the API server fills in."""
    if plural == "pods":
        obj.setdefault("status", {"phase": "Pending", "conditions": []})
    if plural == "services":
        serial = int(obj["metadata"].get("resourceVersion", 0))
        obj["spec"].setdefault("clusterIP", f"10.96.0.{serial % 250 + 2}")
        obj["spec"].setdefault("type", "ClusterIP")


def _secret_data(plural: str, body):
    """stringData is write-only: the server folds it into data."""
    if plural != "secrets" or not isinstance(body, dict) or "stringData" not in body:
        return body
    body = dict(body)
    data = dict(body.get("data") or {})
    for k, v in body.pop("stringData").items():
        data[k] = base64.b64encode(v.encode()).decode()
    body["data"] = data
    return body


def _pod_spec_changed(old: dict, new: dict) -> bool:
    """A pod's spec is immutable but for images, tolerations and the deadline."""

    def strip(spec):
        s = copy.deepcopy(spec or {})
        for c in s.get("containers", []) + s.get("initContainers", []):
            c.pop("image", None)
        s.pop("tolerations", None)
        s.pop("activeDeadlineSeconds", None)
        s.pop("nodeName", None)  # set by the binding
        return s

    return strip(old.get("spec")) != strip(new.get("spec"))


def _merge(target, patch, strategic: bool):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif (
            strategic
            and isinstance(v, list)
            and isinstance(out.get(k), list)
            and all(isinstance(i, dict) and "name" in i for i in v + out[k])
        ):
            merged = {i["name"]: i for i in out[k]}
            for item in v:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                else:
                    merged[item["name"]] = _merge(merged.get(item["name"], {}), item, True)
            out[k] = list(merged.values())
        else:
            out[k] = _merge(out.get(k), v, strategic)
    return out


def _labels_match(obj: dict, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in _split_terms(selector):
        m = re.fullmatch(r"\s*(!?)([^\s!=]+)\s*(?:(==|=|!=)\s*(\S*)|\s+(in|notin)\s*\(([^)]*)\))?\s*", term)
        if m is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        neg, key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif setop:
            ok = (labels.get(key) in {v.strip() for v in values.split(",")}) == (setop == "in")
        else:
            ok = (key in labels) != bool(neg)
        if not ok:
            return False
    return True


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    return terms


def _fields_match(obj: dict, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        m = re.fullmatch(r"([a-zA-Z.]+)(==|=|!=)(.*)", term)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        if path not in ("metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"):
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        cur = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur or "") == value) != (op != "!="):
            return False
    return True
