"""The S3 gateway: a Starlette app that serves repos as buckets through the public SDK.

Bucket `BRANCH.REPO` is a branch (Pachyderm's naming): reads see its head, and a write is one
commit, or lands in the branch's open commit. Bucket `COMMITID.REPO` is that commit, read-only.
Every response that read or wrote data names its commit in `x-pfs-commit`. Path-style addressing
(`http://host:port/BUCKET/KEY`); every call goes through the daemon, with the daemon's checks.
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import contextvars
import datetime
import threading
import xml.etree.ElementTree as ET
from email.utils import formatdate
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pfsfuse.api.types import Copy, Delete, FileInfo, Mkdir, Put
from pfsfuse.metadata import names
from pfsfuse.metadata import refs as ref_syntax
from pfsfuse.metadata.errors import InvalidArgument, NotFound, PfsError
from pfsfuse.metadata.records import Commit, Xattrs
from pfsfuse.s3gateway import bodies, metadata, sigv4
from pfsfuse.s3gateway.errors import S3Error, from_pfs
from pfsfuse.s3gateway.multipart import Uploads
from pfsfuse.sdk import Client

_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_KEYS = 1000


async def _run(fn, *args):
    return await anyio.to_thread.run_sync(lambda: fn(*args))


def _xml(tag: str, inner: str, status: int = 200, headers: dict | None = None) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag} xmlns="{_NS}">{inner}</{tag}>'
    return Response(body, status_code=status, media_type="application/xml", headers=headers)


def _el(tag: str, value) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _iso(ts: float) -> str:
    # Milliseconds, as S3 gives: `aws s3 sync` re-sends a file modified in the same second as
    # the commit if they were cut off.
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _commit_time(c: Commit | None) -> float:
    return 0.0 if c is None else (c.finished or c.started)


class _Bucket:
    """A bucket name resolved: repo, ref, whether it takes writes, and the commit it reads."""

    def __init__(self, name: str, repo: str, ref: str, commit: Commit | None):
        self.name, self.repo, self.ref, self.commit = name, repo, ref, commit
        self.writable = not ref_syntax.is_commit_id(ref)

    @property
    def commit_id(self) -> str:
        return self.commit.id if self.commit is not None else ""

    def headers(self) -> dict[str, str]:
        return {"x-pfs-commit": self.commit_id} if self.commit is not None else {}


class Gateway:
    def __init__(self, client: Client, auth: sigv4.Authenticator | None = None):
        self.client = client
        self.auth = auth or sigv4.AcceptAny()
        self.uploads = Uploads()
        self._listings: collections.OrderedDict[tuple, list[tuple[str, FileInfo | None]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.uploads.close()

    # -- names, commits, ETags ------------------------------------------------------------------

    def _split_bucket(self, name: str) -> tuple[str, str]:
        ref, dot, repo = name.partition(".")
        if not dot:
            raise S3Error(404, "NoSuchBucket", f"buckets are named BRANCH.REPO or COMMIT.REPO, not {name!r}", name)
        try:
            names.repo_name(repo)
            ref_syntax.parse(ref)
        except InvalidArgument as e:
            raise S3Error(400, "InvalidBucketName", str(e), name) from None
        return repo, ref

    def bucket(self, name: str) -> _Bucket:
        """Resolve a bucket to the commit it reads now: None for a branch without commits, or
        not made yet (the first write to it makes it, as in Pachyderm)."""
        repo, ref = self._split_bucket(name)
        try:
            return _Bucket(name, repo, ref, self.client.inspect_commit((repo, ref)))
        except NotFound:
            if not ref_syntax.is_commit_id(ref):
                try:
                    self.client.inspect_repo(repo)
                    return _Bucket(name, repo, ref, None)
                except NotFound:
                    pass
            raise S3Error(404, "NoSuchBucket", f"no bucket {name}: no such repo or commit", name) from None

    def writable(self, name: str, check_repo: bool = False) -> tuple[str, str]:
        """(repo, branch) of a bucket that takes writes. A branch need not exist yet: the first
        write makes it, as in Pachyderm; with `check_repo`, the repo must."""
        repo, ref = self._split_bucket(name)
        if ref_syntax.is_commit_id(ref):
            raise S3Error(403, "AccessDenied", f"{name} is a commit: only BRANCH.REPO buckets take writes", name)
        if check_repo:
            try:
                self.client.inspect_repo(repo)
            except NotFound:
                raise S3Error(404, "NoSuchBucket", f"no bucket {name}: no repo {repo}", name) from None
        return repo, ref

    def key(self, key: str) -> str:
        try:
            path = names.path(key)
        except InvalidArgument as e:
            raise from_pfs(e, key) from None
        if not path:
            raise S3Error(400, "InvalidArgument", "an object key must not be empty", key)
        return path

    def etags(self, repo: str, infos: list[FileInfo]) -> dict[str, str]:
        """Each object's ETag by content hash: what an S3 client was told when it wrote the
        bytes (kept by the daemon, so the same through any gateway, after any restart), else
        the content hash marked as a one-part multipart ETag (which S3 clients do not check
        against an MD5)."""
        hashes = sorted({i.hash for i in infos if i.type == "file"})
        known = dict(zip(hashes, self.client.api.etags(repo, hashes), strict=True)) if hashes else {}
        return {h: f'"{known.get(h) or h + "-1"}"' for h in hashes}

    def etag(self, repo: str, info: FileInfo) -> str:
        return self.etags(repo, [info])[info.hash]

    def listing(self, b: _Bucket, prefix: str, delimiter: str) -> list[tuple[str, FileInfo | None]]:
        """`_listing`, kept for finished commits: paging through a big listing reads the tree once
        and finds each page's start by bisection."""
        key = (b.repo, b.commit_id, prefix, delimiter)
        with self._lock:
            hit = self._listings.get(key)
        if hit is not None:
            return hit
        items = self._listing(b, prefix, delimiter)
        if b.commit is not None and b.commit.finished is not None:
            with self._lock:
                self._listings[key] = items
                while len(self._listings) > 8:
                    self._listings.popitem(last=False)
        return items

    # -- the service, buckets -------------------------------------------------------------------

    def list_buckets(self) -> Response:
        items = "".join(
            f"<Bucket>{_el('Name', f'{branch}.{r.name}')}{_el('CreationDate', _iso(r.created))}</Bucket>"
            for r in self.client.list_repo()
            for branch in sorted(r.branches)
        )
        owner = "<Owner><ID>pfs</ID><DisplayName>pfs</DisplayName></Owner>"
        return _xml("ListAllMyBucketsResult", f"{owner}<Buckets>{items}</Buckets>")

    def create_bucket(self, name: str) -> Response:
        repo, ref = self.writable(name)
        try:
            self.client.inspect_branch(repo, ref)
            raise S3Error(409, "BucketAlreadyOwnedByYou", f"{name} exists", name)
        except NotFound:
            pass
        try:
            self.client.inspect_repo(repo)
        except NotFound:
            self.client.create_repo(repo)
        self.client.create_branch(repo, ref)
        return Response(b"", headers={"location": f"/{name}"})

    def list_objects(self, name: str, q, v2: bool) -> Response:
        b = self.bucket(name)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        url = q.get("encoding-type") == "url"
        try:
            max_keys = min(int(q.get("max-keys", _MAX_KEYS)), _MAX_KEYS)
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys must be an integer") from None
        if max_keys < 0:
            raise S3Error(400, "InvalidArgument", "max-keys must not be negative")
        if v2:
            token = q.get("continuation-token")
            after = _untoken(token) if token else q.get("start-after", "")
        else:
            after = q.get("marker", "")
        items = self.listing(b, prefix, delimiter)
        first = bisect.bisect_right(items, after, key=lambda it: it[0]) if after else 0
        page, truncated = items[first : first + max_keys], len(items) > first + max_keys
        enc = (lambda s: quote(s, safe="/")) if url else (lambda s: s)
        parts = [
            _el("Name", name),
            _el("Prefix", enc(prefix)),
            _el("MaxKeys", max_keys),
            _el("IsTruncated", "true" if truncated else "false"),
        ]
        if delimiter:
            parts.append(_el("Delimiter", enc(delimiter)))
        if url:
            parts.append(_el("EncodingType", "url"))
        if v2:
            parts.append(_el("KeyCount", len(page)))
            if q.get("continuation-token"):
                parts.append(_el("ContinuationToken", q["continuation-token"]))
            if q.get("start-after"):
                parts.append(_el("StartAfter", enc(q["start-after"])))
            if truncated:
                parts.append(_el("NextContinuationToken", _token(page[-1][0])))
        else:
            parts.append(_el("Marker", enc(after)))
            if truncated:
                parts.append(_el("NextMarker", enc(page[-1][0])))
        modified = _iso(_commit_time(b.commit))
        tags = self.etags(b.repo, [info for _, info in page if info is not None])
        for key, info in page:
            if info is None:
                parts.append(f"<CommonPrefixes>{_el('Prefix', enc(key))}</CommonPrefixes>")
            else:
                parts.append(
                    f"<Contents>{_el('Key', enc(key))}{_el('LastModified', modified)}"
                    f"{_el('ETag', tags[info.hash])}{_el('Size', info.size)}"
                    f"<StorageClass>STANDARD</StorageClass></Contents>"
                )
        return _xml("ListBucketResult", "".join(parts), headers=b.headers())

    def _listing(self, b: _Bucket, prefix: str, delimiter: str) -> list[tuple[str, FileInfo | None]]:
        """(key, info) of the objects and (prefix, None) of the common prefixes, in key order."""
        if b.commit is None:
            return []
        directory = prefix.rpartition("/")[0]
        try:
            if directory:
                names.path(directory)
            if delimiter == "/":
                infos = list(self.client.list_file((b.repo, b.commit_id), directory))
            else:
                infos = list(self.client.walk_file((b.repo, b.commit_id), directory))
        except (NotFound, InvalidArgument):
            return []
        out: dict[str, FileInfo | None] = {}
        for info in infos:
            if info.type == "dir":
                # S3 has no directories: one shows only as a common prefix (an empty one, made
                # by a `dir/` folder marker, too).
                key = info.path + "/"
                if delimiter == "/" and info.path and key.startswith(prefix):
                    out[key] = None
                continue
            key = info.path
            if not key.startswith(prefix):
                continue
            if delimiter and delimiter != "/":
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    out[key[: cut + len(delimiter)]] = None
                    continue
            out[key] = info
        return sorted(out.items())

    # -- objects --------------------------------------------------------------------------------

    def object_info(self, b: _Bucket, key: str) -> FileInfo:
        if b.commit is None:
            raise S3Error(404, "NoSuchKey", f"{b.name} has no commits yet", key)
        path = self.key(key)
        try:
            info = self.client.inspect_file((b.repo, b.commit_id), path)
        except NotFound:
            raise S3Error(404, "NoSuchKey", f"no object {key} in {b.name}", key) from None
        if info.type == "dir":
            raise S3Error(404, "NoSuchKey", f"{key} is a directory in {b.name}", key)
        return info

    def object_headers(self, b: _Bucket, info: FileInfo) -> dict[str, str]:
        return {
            **b.headers(),
            "etag": self.etag(b.repo, info),
            "last-modified": formatdate(_commit_time(b.commit), usegmt=True),
            "accept-ranges": "bytes",
            **metadata.to_headers(info.xattrs),
        }

    def put(self, name: str, key: str, body: bodies.Body, meta: Xattrs) -> dict[str, str]:
        repo, ref = self.writable(name)
        path = self.key(key)
        if key.endswith("/") and body.size == 0:  # a folder marker
            result = self.client.write((repo, ref), [Mkdir(path)])
            return {"etag": f'"{body.md5.hex()}"', "x-pfs-commit": result.commit}
        result = self.client.write((repo, ref), [Put(path, stream=body.file, etag=body.md5.hex(), xattrs=meta)])
        return {"etag": f'"{body.md5.hex()}"', "x-pfs-commit": result.commit}

    def copy(self, name: str, key: str, source: str, meta: Xattrs | None) -> Response:
        """CopyObject; `meta` replaces the source's user metadata (None copies it)."""
        repo, ref = self.writable(name)
        path = self.key(key)
        src_bucket, _, src_key = unquote(source.split("?", 1)[0]).lstrip("/").partition("/")
        src = self.bucket(src_bucket)
        info = self.object_info(src, src_key)
        result = self.client.write((repo, ref), [Copy(path, src.repo, src.commit_id, info.path, xattrs=meta)])
        inner = _el("ETag", self.etag(src.repo, info)) + _el("LastModified", _iso(_commit_time(src.commit)))
        return _xml(
            "CopyObjectResult",
            inner,
            headers={"x-pfs-commit": result.commit, "x-amz-copy-source-version-id": src.commit_id},
        )

    def delete(self, name: str, key: str) -> Response:
        repo, ref = self.writable(name, check_repo=True)
        result = self.client.write((repo, ref), [Delete(self.key(key), missing_ok=True)])
        return Response(status_code=204, headers={"x-pfs-commit": result.commit})

    def delete_many(self, name: str, xml: bytes) -> Response:
        repo, ref = self.writable(name, check_repo=True)
        root = _parse_xml(xml)
        quiet = (_find(root, "Quiet") or "").lower() == "true"
        keys = [_find(o, "Key") or "" for o in root if _local(o.tag) == "Object"]
        if len(keys) > 1000:
            raise S3Error(400, "MalformedXML", "at most 1000 keys per DeleteObjects")
        good, errors = [], []
        for key in keys:
            try:
                good.append((key, self.key(key)))
            except S3Error as e:
                errors.append(f"<Error>{_el('Key', key)}{_el('Code', e.code)}{_el('Message', e.message)}</Error>")
        headers = {}
        if good:  # one commit for all of them
            result = self.client.write((repo, ref), [Delete(p, missing_ok=True) for _, p in good])
            headers["x-pfs-commit"] = result.commit
        deleted = "" if quiet else "".join(f"<Deleted>{_el('Key', k)}</Deleted>" for k, _ in good)
        return _xml("DeleteResult", deleted + "".join(errors), headers=headers)

    # -- multipart uploads ----------------------------------------------------------------------

    def start_upload(self, name: str, key: str, meta: Xattrs) -> Response:
        self.writable(name, check_repo=True)
        self.key(key)
        upload_id = self.uploads.create(name, key, meta)
        inner = _el("Bucket", name) + _el("Key", key) + _el("UploadId", upload_id)
        return _xml("InitiateMultipartUploadResult", inner)

    def complete_upload(self, name: str, key: str, upload_id: str, xml: bytes) -> Response:
        repo, ref = self.writable(name)
        up = self.uploads.get(upload_id, name, key)
        root = _parse_xml(xml)
        try:
            wanted = [
                (int(_find(p, "PartNumber") or ""), _find(p, "ETag") or "") for p in root if _local(p.tag) == "Part"
            ]
        except ValueError:
            raise S3Error(400, "MalformedXML", "a part number is not an integer") from None
        stream, etag = self.uploads.assemble(up, wanted)
        try:
            path = self.key(key)
            result = self.client.write((repo, ref), [Put(path, stream=stream, etag=etag, xattrs=up.xattrs)])
        finally:
            stream.close()
        self.uploads.drop(upload_id)
        inner = _el("Location", f"/{name}/{key}") + _el("Bucket", name) + _el("Key", key) + _el("ETag", f'"{etag}"')
        return _xml("CompleteMultipartUploadResult", inner, headers={"x-pfs-commit": result.commit})

    def list_uploads(self, name: str) -> Response:
        self.writable(name, check_repo=True)
        items = "".join(f"<Upload>{_el('Key', k)}{_el('UploadId', i)}</Upload>" for k, i in self.uploads.listing(name))
        return _xml("ListMultipartUploadsResult", _el("Bucket", name) + items)


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise S3Error(400, "InvalidArgument", "invalid continuation token") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _find(el, name: str) -> str | None:
    for child in el:
        if _local(child.tag) == name:
            return child.text
    return None


def _parse_xml(data: bytes):
    if len(data) > 2 << 20:
        raise S3Error(400, "MalformedXML", "the XML body is too large")
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        raise S3Error(400, "MalformedXML", "the XML body is not well formed") from None


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a `bytes=` range, None for the whole object."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    first, dash, last = spec.partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None  # not a single byte range: S3 ignores it and sends the whole object
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size
        else:
            start = int(first)
            end = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return None
    if start >= size or end <= start:
        raise S3Error(416, "InvalidRange", f"the range {header} is outside the object's {size} bytes")
    return start, end


# Sub-resources this gateway does not serve: a clear NotImplemented rather than a wrong answer.
_UNSUPPORTED = {
    "acl",
    "policy",
    "cors",
    "tagging",
    "lifecycle",
    "website",
    "replication",
    "encryption",
    "object-lock",
    "retention",
    "legal-hold",
    "notification",
    "logging",
    "torrent",
    "restore",
    "select",
    "attributes",
    "versions",
    "accelerate",
    "analytics",
    "inventory",
    "metrics",
    "ownershipControls",
    "publicAccessBlock",
}


# The token of the request being served: the daemon's client of the gateway sends it.
_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("s3_caller", default=None)


def caller_token() -> str | None:
    return _caller.get()


def make_app(client: Client, auth: sigv4.Authenticator | None = None) -> Starlette:
    """The gateway for the daemon `client` talks to; `auth` checks signatures (default: any
    credentials, as when the daemon's auth is not activated)."""
    gw = Gateway(client, auth)

    async def handle(request: Request) -> Response:
        bucket = request.path_params.get("bucket", "")
        key = request.path_params.get("key", "")
        head = request.method == "HEAD"
        try:
            raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?")[0]
            query = request.scope.get("query_string", b"").decode("latin-1")
            signed = sigv4.check(gw.auth, request.method, raw_path, query, request.headers)
            # The daemon then checks the caller's token on every call, as for any client.
            _caller.set(sigv4.access_key(query, request.headers) if gw.auth.active else None)
            unsupported = _UNSUPPORTED & set(request.query_params)
            if unsupported:
                raise S3Error(501, "NotImplemented", f"?{sorted(unsupported)[0]} is not supported by this gateway")
            return await _route(request, bucket, key, signed)
        except S3Error as e:
            e.resource = e.resource or f"/{bucket}/{key}".rstrip("/")
            return Response(status_code=e.status) if head else e.response()
        except PfsError as e:
            err = from_pfs(e, f"/{bucket}/{key}", "NoSuchKey" if key else "NoSuchBucket")
            return Response(status_code=err.status) if head else err.response()

    async def _route(request: Request, bucket: str, key: str, signed: sigv4.Signed | None) -> Response:
        m, q = request.method, request.query_params
        if not bucket:
            if m == "GET":
                return await _run(gw.list_buckets)
        elif not key:
            if m == "HEAD":
                b = await _run(gw.bucket, bucket)
                return Response(headers=b.headers())
            if m == "GET" and "location" in q:
                await _run(gw.bucket, bucket)
                return _xml("LocationConstraint", "")
            if m == "GET" and "versioning" in q:
                await _run(gw.bucket, bucket)
                return _xml("VersioningConfiguration", "")
            if m == "GET" and "uploads" in q:
                return await _run(gw.list_uploads, bucket)
            if m == "GET":
                return await _run(gw.list_objects, bucket, q, q.get("list-type") == "2")
            if m == "PUT":
                await request.body()
                return await _run(gw.create_bucket, bucket)
            if m == "POST" and "delete" in q:
                body = await bodies.receive(request, signed)
                try:
                    return await _run(gw.delete_many, bucket, body.file.read())
                finally:
                    body.close()
        else:
            if m in ("GET", "HEAD") and "uploadId" not in q:
                return await _get(request, bucket, key, m == "HEAD")
            if m == "PUT" and "uploadId" in q:
                up = gw.uploads.get(q["uploadId"], bucket, key)
                try:
                    number = int(q.get("partNumber", ""))
                except ValueError:
                    raise S3Error(400, "InvalidArgument", "partNumber must be an integer") from None
                body = await bodies.receive(request, signed)
                try:
                    etag = await _run(gw.uploads.put_part, up, number, body.file, body.md5, body.size)
                finally:
                    body.close()
                return Response(headers={"etag": f'"{etag}"'})
            if m == "PUT" and "x-amz-copy-source" in request.headers:
                await request.body()
                directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
                if directive not in ("COPY", "REPLACE"):
                    raise S3Error(400, "InvalidArgument", f"unknown metadata directive {directive!r}")
                meta = metadata.from_headers(request.headers) if directive == "REPLACE" else None
                return await _run(gw.copy, bucket, key, request.headers["x-amz-copy-source"], meta)
            if m == "PUT":
                gw.writable(bucket)
                body = await bodies.receive(request, signed)
                try:
                    return Response(
                        headers=await _run(gw.put, bucket, key, body, metadata.from_headers(request.headers))
                    )
                finally:
                    body.close()
            if m == "POST" and "uploads" in q:
                return await _run(gw.start_upload, bucket, key, metadata.from_headers(request.headers))
            if m == "POST" and "uploadId" in q:
                body = await bodies.receive(request, signed)
                try:
                    return await _run(gw.complete_upload, bucket, key, q["uploadId"], body.file.read())
                finally:
                    body.close()
            if m == "DELETE" and "uploadId" in q:
                gw.uploads.get(q["uploadId"], bucket, key)
                gw.uploads.drop(q["uploadId"])
                return Response(status_code=204)
            if m == "DELETE":
                return await _run(gw.delete, bucket, key)
        raise S3Error(501, "NotImplemented", f"{m} {request.url.path} is not supported by this gateway")

    async def _get(request: Request, bucket: str, key: str, head: bool) -> Response:
        b = await _run(gw.bucket, bucket)
        info = await _run(gw.object_info, b, key)
        headers = await _run(gw.object_headers, b, info)  # asks the daemon (see below)
        span = _range(request.headers.get("range", ""), info.size)
        start, end = span or (0, info.size)
        headers["content-length"] = str(end - start)
        status = 200
        if span is not None:
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
        if head:
            return Response(status_code=status, headers=headers, media_type="application/octet-stream")
        # In a thread: it may ask the daemon now, and in `pfs serve --s3` this loop is the daemon's.
        pieces = await _run(gw.client.api.get_file, b.repo, b.commit_id, info.path, start, end - start)
        return StreamingResponse(pieces, status_code=status, headers=headers, media_type="application/octet-stream")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            gw.close()  # parts of unfinished uploads go with the gateway

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
    app = Starlette(
        routes=[
            Route("/", handle, methods=methods),
            Route("/{bucket}", handle, methods=methods),
            Route("/{bucket}/", handle, methods=methods),
            Route("/{bucket}/{key:path}", handle, methods=methods),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app
