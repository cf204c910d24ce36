"""A light client for the local daemon's unix socket, with the standard library only.

The common read-only verbs of the CLI spend more time loading a full client (msgspec, h11, the
records' Structs) than talking to the daemon. This one speaks the same API (`/rpc/<method>` with
JSON arguments, `/get` streamed) over HTTP/1.1 on a plain socket, and gives the records as the
daemon sent them, read by attribute like the Structs of `pfsfuse.api.types` and
`pfsfuse.metadata.records` (the fields the daemon leaves out at their defaults filled in). It
reads no chunks itself: a file's bytes come through the daemon.

Only the calls of the read-only verbs are here; the full client (`RemoteClient`) does the rest.
"""

from __future__ import annotations

# The C parts of socket and json, without their Python layers: socket.py makes its enums at
# import, the json package imports re and enum for its pure-Python fallback; together they were a
# third of a light verb's time.
import _json
import _socket
import io
from collections.abc import Iterator

from pfsfuse.metadata.errors import KINDS, PfsError, Unavailable

_PIECE = 1 << 20


class _Decoding:
    """What json's C scanner reads of a JSONDecoder: json.loads's defaults."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int, parse_constant = float, int, float
    memo: dict = {}


# (typeshed types the context as a make_scanner; CPython reads these attributes of any object)
_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]


def loads(data: bytes):
    """json.loads of an answer's body."""
    text = data.decode()
    try:
        value, end = _scan(text, 0)
        if not text[end:].strip():
            return value
    except (StopIteration, SystemError):  # (without json.decoder loaded, _json cannot word its error)
        pass
    import json  # only for what the scanner alone refuses: json.loads takes it, or says what is wrong

    return json.loads(text)


def dumps(args: dict) -> bytes:
    """A call's arguments (strings, numbers, booleans; None left out) as a JSON object."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return _json.encode_basestring_ascii(v)
        raise TypeError(f"the light client does not send {type(v).__name__}")

    pairs = (f"{_json.encode_basestring_ascii(k)}:{value(v)}" for k, v in args.items() if v is not None)
    return ("{" + ",".join(pairs) + "}").encode()


def query(params: dict[str, str]) -> str:
    """A URL's query string (urllib.parse.urlencode's, whose module costs a quarter of get-file's
    start-up): each byte not unreserved (RFC 3986) percent-encoded."""
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params.items())


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


class Record:
    """A record as the daemon sent it (JSON), read by attribute."""

    DEFAULTS: dict[str, object] = {}  # the Struct's defaults, which the daemon leaves out

    def __init__(self, data: dict):
        self._data = data

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name] if name in self._data else self.DEFAULTS[name]
        except KeyError:
            raise AttributeError(name) from None

    def builtins(self) -> dict:
        """What `--json` prints (as `msgspec.to_builtins` gives it for the Struct)."""
        return dict(self._data)


class RepoInfo(Record):
    DEFAULTS = {"description": "", "size": 0, "branches": []}


class Branch(Record):
    DEFAULTS = {"head": None, "provenance": []}


class CommitRef(Record):
    pass


class Commit(Record):
    DEFAULTS = {
        "parent": None,
        "children": [],
        "branch": None,
        "finished": None,
        "description": "",
        # EMPTY_DIR: a DirNode is an array ["d", size, count, root, header, footer, stat, subdirs]
        "tree": ["d", 0, 0, None, None, None, None, 0],
        "provenance": [],
    }

    @property
    def provenance(self) -> list[CommitRef]:
        return [CommitRef(p) for p in self._data.get("provenance", [])]

    @property
    def size(self) -> int:
        tree = self.tree
        return tree[1] if len(tree) > 1 else 0

    @property
    def root(self) -> bytes | None:
        """The hash of the commit tree's top page (None for an empty tree)."""
        import base64  # for --json only

        tree = self.tree
        return base64.b64decode(tree[3]) if len(tree) > 3 and tree[3] is not None else None


class FileInfo(Record):
    DEFAULTS = {
        "size": 0,
        "hash": "",
        "children": 0,
        "target": "",
        "executable": False,
        "commit": "",
        "rdev": 0,
        "mode": None,
        "uid": None,
        "gid": None,
        "mtime": None,
        "ctime": None,
        "atime": None,
        "link": None,
        "nlink": None,
        "xattrs": None,
    }

    @property
    def xattrs(self) -> dict[str, bytes] | None:
        values = self._data.get("xattrs")
        if values is None:
            return None
        import binascii  # (JSON carries bytes as base64)

        return {name: binascii.a2b_base64(v) for name, v in values.items()}

    def builtins(self) -> dict:
        d = dict(self._data)
        if (values := self.xattrs) is not None:
            d["xattrs"] = {name: v.hex() for name, v in values.items()}  # as `--json` shows bytes
        return d


class JobInfo(Record):
    DEFAULTS = {
        "pipeline_version": 1,
        "inputs": [],
        "output_commit": "",
        "meta_commit": "",
        "deltas": [],
        "finished": None,
        "state": "starting",
        "reason": "",
        "restarts": 0,
        "total": 0,
        "processed": 0,
        "skipped": 0,
        "failed": 0,
        "downloaded": 0,
        "uploaded": 0,
    }


class WhoAmI(Record):
    pass


class AtomInput(Record):
    DEFAULTS = {"name": "", "branch": "master", "lazy": False, "empty_files": False}


class CronInput(Record):
    DEFAULTS = {"repo": "", "start": ""}


class Input(Record):
    DEFAULTS = dict.fromkeys(["atom", "pfs", "cross", "union", "cron", "git"])

    def __getattr__(self, name: str):
        value = super().__getattr__(name)
        if value is None or name == "git":
            return value
        if name in ("cross", "union"):
            return [Input(i) for i in value]
        return CronInput(value) if name == "cron" else AtomInput(value)


class PipelineSpec(Record):
    DEFAULTS = {"output_branch": "master"}  # (only what the table reads; --spec prints the JSON)

    @property
    def input(self) -> Input:
        return Input(self._data["input"])


class PipelineInfo(Record):
    DEFAULTS = {"version": 1, "state": "running", "reason": "", "last_inputs": [], "executor": ""}

    @property
    def spec(self) -> PipelineSpec:
        return PipelineSpec(self._data["spec"])


class _SocketIO(io.RawIOBase):
    """A connected socket as a raw stream, for io.BufferedReader (socket.makefile's, in short)."""

    def __init__(self, sock: _socket.socket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._sock.recv_into(b)


class _Answer:
    """An HTTP/1.1 answer: its status and headers, then its body as it arrives."""

    def __init__(self, reader: io.BufferedReader):
        self._reader = reader
        while True:
            status_line = reader.readline(65537)
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ConnectionError(f"not an HTTP answer: {status_line[:80]!r}")
            self.status = int(parts[1])
            self.headers: dict[bytes, bytes] = {}
            while (line := reader.readline(65537)) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                self.headers[name.strip().lower()] = value.strip()
            if not 100 <= self.status < 200:  # an informational answer: the real one follows
                break
        self.keep_alive = self.headers.get(b"connection", b"").lower() != b"close"
        length = self.headers.get(b"content-length")
        self._chunked = self.headers.get(b"transfer-encoding", b"").lower() == b"chunked"
        self._left = int(length) if length is not None and not self._chunked else None
        self.done = False

    def pieces(self) -> Iterator[bytes]:
        read = self._reader.read
        if self._chunked:
            while True:
                size = int(self._reader.readline(65537).split(b";")[0], 16)
                if size == 0:
                    while self._reader.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                while size:
                    piece = read(min(size, _PIECE))
                    if not piece:
                        raise ConnectionError("the answer was cut short")
                    size -= len(piece)
                    yield piece
                read(2)  # the chunk's CRLF
        elif self._left is not None:
            while self._left:
                piece = read(min(self._left, _PIECE))
                if not piece:
                    raise ConnectionError("the answer was cut short")
                self._left -= len(piece)
                yield piece
        else:  # to the end of the connection
            self.keep_alive = False
            while piece := read(_PIECE):
                yield piece
        self.done = True

    def read(self) -> bytes:
        return b"".join(self.pieces())


class LiteClient:
    def __init__(self, address: str, token: str | None = None):
        """`address` is `unix:/path/to/pfs.sock`; `token` identifies the caller to a daemon with
        auth activated."""
        if not address.startswith("unix:"):
            raise ValueError(f"the light client speaks to a unix socket only, not {address!r}")
        self.address = address
        self.token = token
        self._sock: _socket.socket | None = None
        self._reader: io.BufferedReader | None = None

    def connect(self) -> None:
        """Open the connection (OSError if the daemon is not there)."""
        self.close()
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.address[5:])
        except OSError:
            sock.close()
            raise
        self._sock, self._reader = sock, io.BufferedReader(_SocketIO(sock))

    def close(self) -> None:
        if self._sock is not None:
            assert self._reader is not None
            self._reader.close()
            self._sock.close()
            self._sock = self._reader = None

    def _send(self, method: str, target: str, body: bytes | None) -> _Answer:
        head = [f"{method} {target} HTTP/1.1", "Host: pfs"]
        if self.token:
            head.append(f"Authorization: Bearer {self.token}")
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
        # A kept-alive connection the daemon closed meanwhile is opened again, once (every call
        # here only reads, so sending it twice is harmless).
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self.connect()
                assert self._sock is not None and self._reader is not None
                self._sock.sendall(request)
                return _Answer(self._reader)
            except (ConnectionError, TimeoutError) as e:
                self.close()
                if attempt:
                    raise Unavailable(f"lost the pfs daemon at {self.address}: {e}") from None
            except OSError as e:
                self.close()
                raise Unavailable(f"cannot reach the pfs daemon at {self.address}: {e}") from None
        raise AssertionError("unreachable")

    def _body(self, answer: _Answer) -> bytes:
        try:
            data = answer.read()
        except (OSError, ValueError) as e:
            self.close()
            raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None
        if not answer.keep_alive:
            self.close()
        if answer.status != 200:
            _raise_error(answer.status, data)
        return data

    def _post(self, path: str, args: dict):
        return loads(self._body(self._send("POST", path, dumps(args))))

    def _rpc(self, method: str, **args):
        return self._post(f"/rpc/{method}", args)

    # -- the calls of the read-only verbs, as `pfsfuse.api.client.Client` has them ---------------

    def list_repo(self) -> list[RepoInfo]:
        return [RepoInfo(r) for r in self._rpc("list_repo")]

    def inspect_repo(self, name: str) -> RepoInfo:
        return RepoInfo(self._rpc("inspect_repo", name=name))

    def list_branch(self, repo: str) -> list[Branch]:
        return [Branch(b) for b in self._rpc("list_branch", repo=repo)]

    def list_commit(
        self, repo: str, ref: str | None = None, number: int | None = None, since: str | None = None
    ) -> list[Commit]:
        return [Commit(c) for c in self._rpc("list_commit", repo=repo, ref=ref, number=number, since=since)]

    def inspect_commit(self, repo: str, ref: str) -> Commit:
        return Commit(self._rpc("inspect_commit", repo=repo, ref=ref))

    def list_file(
        self,
        repo: str,
        ref: str,
        path: str = "",
        start_after: str | None = None,
        limit: int | None = None,
        history: int = 0,
    ) -> list[FileInfo]:
        args = {"repo": repo, "ref": ref, "path": path, "start_after": start_after, "limit": limit, "history": history}
        return [FileInfo(f) for f in self._rpc("list_file", **args)]

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        return FileInfo(self._rpc("inspect_file", repo=repo, ref=ref, path=path))

    def open_file(self, repo: str, ref: str, path: str) -> tuple[int | None, Iterator[bytes]]:
        """The size of a file (None for a glob's files, whose size is not known up front) and
        its bytes as they arrive; the daemon's error raised now, before any byte. Close the
        client if the bytes are not read."""
        params = {"repo": repo, "ref": ref, **({"path": path} if path else {})}
        answer = self._send("GET", f"/get?{query(params)}", None)
        if answer.status != 200:
            self._body(answer)
        length = answer.headers.get(b"content-length")
        return (int(length) if length is not None else None), self._pieces(answer)

    def _pieces(self, answer: _Answer) -> Iterator[bytes]:
        try:
            yield from answer.pieces()
        except (OSError, ValueError) as e:
            raise Unavailable(f"the pfs daemon at {self.address} stopped answering: {e}") from None
        finally:
            if not (answer.done and answer.keep_alive):
                self.close()

    def version(self) -> str:
        return self._rpc("version")

    # -- and of the auth API (`pfsfuse.api.auth.AuthAPI`) --------------------------------------

    def who_am_i(self) -> WhoAmI:
        return WhoAmI(self._post("/auth/who_am_i", {}))

    # -- and of the pipelines' API (`pfsfuse.scheduler.api.Pipelines`) -------------------------

    def list_pipeline(self) -> list[PipelineInfo]:
        return [PipelineInfo(p) for p in self._post("/pps/list_pipeline", {})]

    def list_job(self, pipeline: str | None = None, input_commit: None = None) -> list[JobInfo]:
        if input_commit is not None:
            raise ValueError("the light client lists jobs by pipeline only")
        return [JobInfo(j) for j in self._post("/pps/list_job", {"pipeline": pipeline})]


def _raise_error(status: int, body: bytes):
    """The daemon's error, as `pfsfuse.api.wire.raise_error` raises it."""
    try:
        err = loads(body)
        kind, message = err["kind"], err["message"]
        if not isinstance(kind, str) or not isinstance(message, str):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        raise PfsError(f"daemon answered HTTP {status}: {body[:200].decode(errors='replace')}") from None
    raise KINDS.get(kind, PfsError)(message)
