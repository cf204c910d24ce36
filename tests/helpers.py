"""Helpers shared by the tests (importable as `helpers`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pfsfuse.api.remote import RemoteClient
from pfsfuse.home import Home
from pfsfuse.metadata.errors import Unavailable

PFS = str(Path(sys.executable).parent / "pfs")


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, proc=None, what="condition"):
    """Poll `condition` until it holds; fail at the deadline or as soon as `proc` dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def read_line(stream, timeout: float = 30.0) -> bytes:
    """One line from a subprocess pipe, failing at the deadline instead of hanging."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no complete line within {timeout} s (got {buf!r})")
        piece = os.read(fd, 1)
        if not piece:
            raise AssertionError(f"stream ended before a complete line (got {buf!r})")
        buf += piece
    return buf


def rows(output: str) -> list[list[str]]:
    """A table's rows (header dropped), split on runs of two or more spaces."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


class Daemon:
    def __init__(self, home: Path, extra_args=()):
        self.home = home
        # An explicit address: a client must never start a daemon of its own behind a test's back.
        self.env = {**os.environ, "PFS_HOME": str(home), "PFS_ADDRESS": f"unix:{home}/pfs.sock"}
        self.log = home.parent / (home.name + ".log")
        self.args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([PFS, "serve", *self.args], env=self.env, stdout=log, stderr=log)
        wait_for(self.answers, proc=self.proc, what="the daemon to answer")
        return self

    def client(self) -> RemoteClient:
        return RemoteClient(f"unix:{self.home}/pfs.sock", Home(self.home))

    def answers(self) -> bool:
        client = self.client()
        try:
            client.version()
            return True
        except Unavailable:
            return False
        finally:
            client.close()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the daemon did not stop within 20 s of SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pfs(self, *args: str, input: bytes | None = None, check: bool = True, cwd=None):
        """Run the real `pfs` command against this daemon."""
        r = subprocess.run([PFS, *args], env=self.env, input=input, capture_output=True, cwd=cwd, timeout=300)
        if check and r.returncode != 0:
            raise AssertionError(f"pfs {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
        return r


# -- FUSE mounts (`pfs mount`) --------------------------------------------------------------------

import shutil  # noqa: E402  (appended section: the mount helpers' own imports)
import threading  # noqa: E402


def fuse_unavailable() -> str | None:
    """Why real FUSE mounts cannot run on this machine, or None when they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    return None


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> set[str]:
    """Every mount point of this mount namespace, read from /proc/self/mountinfo.

    Unlike os.path.ismount, this never stats the mount point, so it is also right (and does not
    raise or hang) for a FUSE mount whose process died ("Transport endpoint is not connected").
    """
    with open("/proc/self/mountinfo") as f:
        return {_unescape_mountinfo(line.split()[4]) for line in f}


def is_mounted(path: str | Path) -> bool:
    return os.path.abspath(path) in mount_points()


def du_bytes(path: str | Path) -> int:
    """Apparent size of everything under `path` in bytes (`du -sb`)."""
    r = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return int(r.stdout.split()[0])


class _Pid:
    """A process we did not fork ourselves, with Popen's poll() so that wait_for can watch it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -1
        return self.returncode


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def fuse_processes(home: Path | None = None, mountpoint: str | None = None) -> list[int]:
    """Pids of the processes that hold /dev/fuse open and belong to `home` (PFS_HOME in their
    environment) or name `mountpoint` on their command line. Does not include this process."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if not any(os.readlink(fd.path) == "/dev/fuse" for fd in os.scandir(f"{entry.path}/fd")):
                continue
            with open(f"{entry.path}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            with open(f"{entry.path}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if (mountpoint is not None and any(a.rstrip("/") == mountpoint for a in argv)) or (
            home is not None and f"PFS_HOME={home}".encode() in environ
        ):
            found.append(int(entry.name))
    return found


class Mount:
    """`pfs mount DIR ARGS...` against `daemon`, as a context manager that always cleans up.

    Background mode (the default) runs `pfs mount` and requires it to exit 0 with DIR mounted, as
    the contract says it returns only once the mount is usable. `foreground=True` runs
    `pfs mount --foreground` as a child and polls the mount table, failing early if it exits.

    On exit it runs `pfs unmount DIR` (a failure of that fails the test), and whatever happens
    it then makes sure nothing is left: a lazy `fusermount3 -u -z` if DIR is still mounted and
    SIGKILL of the mount process it started if that is still alive.

    A watchdog guards against a hung mount: after `watchdog` seconds it kills the mount process
    (which aborts the FUSE connection, so that blocked system calls fail with ENOTCONN instead of
    hanging the test run) and the test fails saying so.
    """

    def __init__(
        self,
        daemon: Daemon,
        mountpoint: str | Path,
        *args: str,
        foreground: bool = False,
        timeout: float = 30.0,
        watchdog: float = 300.0,
    ):
        self.daemon = daemon
        self.dir = os.path.realpath(mountpoint)  # resolved now: never stat a possibly dead mount
        self.path = Path(self.dir)
        self.args = list(args)
        self.foreground = foreground
        self.timeout = timeout
        self.watchdog_seconds = watchdog
        self.proc: subprocess.Popen | None = None  # foreground mode: the mount process itself
        self.pid: int | None = None  # the mount process (found in /proc in background mode)
        self.result: subprocess.CompletedProcess | None = None  # background mode: `pfs mount`'s
        self.hung = False
        self._watchdog: threading.Timer | None = None
        self.log = daemon.home.parent / f"mount-{os.path.basename(self.dir)}.log"

    # -- starting -------------------------------------------------------------------------------

    def start(self) -> Mount:
        cmd = [PFS, "mount", self.dir, *self.args]
        if self.foreground:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([*cmd, "--foreground"], env=self.daemon.env, stdout=log, stderr=log)
            self.pid = self.proc.pid
            try:
                wait_for(
                    lambda: is_mounted(self.dir),
                    self.timeout,
                    proc=self.proc,
                    what=f"{self.dir} to be mounted (log: {self.log})",
                )
            except BaseException:
                self.cleanup()
                raise
        else:
            try:
                self.result = subprocess.run(cmd, env=self.daemon.env, capture_output=True, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.cleanup()
                raise AssertionError(f"pfs mount {self.dir} did not return within {self.timeout} s") from None
            if self.result.returncode != 0:
                self.cleanup()
                raise AssertionError(
                    f"pfs mount {' '.join(self.args)} exited {self.result.returncode}: "
                    f"{self.result.stderr.decode(errors='replace')}"
                )
            if not is_mounted(self.dir):
                self.cleanup()
                raise AssertionError(f"pfs mount exited 0 but {self.dir} is not mounted")
            self.pid = self.find_pid()
        self._watchdog = threading.Timer(self.watchdog_seconds, self._fire)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def find_pid(self) -> int | None:
        """The background mount process: holds /dev/fuse and belongs to our PFS_HOME or names DIR."""
        pids = fuse_processes(self.daemon.home, self.dir)
        named = fuse_processes(None, self.dir)
        if len(named) == 1:
            return named[0]
        return pids[0] if len(pids) == 1 else None

    def process(self):
        """The mount process with a Popen-like poll(), for wait_for(proc=...)."""
        if self.proc is not None:
            return self.proc
        return _Pid(self.pid) if self.pid is not None else None

    def alive(self) -> bool:
        p = self.process()
        return p is not None and p.poll() is None

    # -- stopping -------------------------------------------------------------------------------

    def _fire(self) -> None:
        self.hung = True
        self._kill()
        try:  # without a process to kill, abort the connection through fusectl where mounted
            dev = os.minor(os.stat(self.dir).st_dev)
            Path(f"/sys/fs/fuse/connections/{dev}/abort").write_text("1")
        except OSError:
            pass

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        elif self.pid is not None and _alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill9(self) -> None:
        """kill -9 of the mount process, waiting (with a deadline) until it is gone."""
        assert self.pid is not None, (
            "could not find the mount process: none holding /dev/fuse with our PFS_HOME in its "
            "environment or the mount point on its command line"
        )
        os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        else:
            wait_for(lambda: not _alive(self.pid), 10, what=f"mount process {self.pid} to die")

    def unmount(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        """`pfs unmount DIR` (or `pfs unmount EXTRA...` when given, e.g. "--all")."""
        args = list(extra) or [self.dir]
        r = subprocess.run([PFS, "unmount", *args], env=self.daemon.env, capture_output=True, timeout=60)
        if check:
            assert r.returncode == 0, (
                f"pfs unmount {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
            )
            assert not is_mounted(self.dir), f"{self.dir} is still mounted after pfs unmount"
        if self.proc is not None and self.proc.poll() is None and not is_mounted(self.dir):
            try:  # a foreground mount exits once unmounted
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                if check:
                    raise AssertionError("pfs mount --foreground did not exit within 20 s of its unmount") from None
        return r

    def cleanup(self) -> None:
        """Leave nothing behind, quietly: unmount lazily and kill the process we started."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if is_mounted(self.dir):
            subprocess.run(["fusermount3", "-u", "-z", self.dir], capture_output=True, timeout=30)
        if is_mounted(self.dir):
            subprocess.run(["umount", "-l", self.dir], capture_output=True, timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)  # give it a chance to exit on its own once unmounted
            except subprocess.TimeoutExpired:
                pass
        self._kill()

    def __enter__(self) -> Mount:
        if self.pid is None and self.result is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.hung:
                raise AssertionError(f"the mount hung: the watchdog killed it after {self.watchdog_seconds} s")
            if is_mounted(self.dir):
                # After a failure, still try the normal way out (quietly): it lets the mount finish
                # its commits and exit by itself before cleanup() forces anything.
                self.unmount(check=exc_type is None)
        finally:
            self.cleanup()


# -- object-store emulators and fault injection (the object-store tests) ---------------------------

REPO = Path(__file__).resolve().parent.parent
BUCKET = "pfs-test"  # the bucket (Azure container) each emulator fixture makes
AZURITE = REPO / ".emulators" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = (  # Azurite's well-known development account key
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


class Emulator:
    """An object-store emulator in its own process group on 127.0.0.1:port; `stop` ends the group."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path):
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.proc: subprocess.Popen | None = None

    @classmethod
    def moto(cls, workdir: Path) -> Emulator:
        port = free_port()
        argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        return cls("moto", argv, port, workdir / "moto.log")

    @classmethod
    def gcs(cls, workdir: Path, bucket: str) -> Emulator:
        port = free_port()
        argv = [
            str(Path(sys.executable).parent / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            bucket,
            "-q",
        ]
        return cls("gcp-storage-emulator", argv, port, workdir / "gcs.log")

    @classmethod
    def azurite(cls, workdir: Path) -> Emulator:
        if not AZURITE.exists():
            raise AssertionError(f"{AZURITE} is missing: run packaging/test-setup.sh to install Azurite")
        port = free_port()
        argv = [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]
        return cls("azurite", argv, port, workdir / "azurite.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()  # any status: the server is up
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def start(self) -> Emulator:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.log.parent,
                start_new_session=True,
            )
        try:
            wait_for(self.answers, timeout=60, proc=self.proc, what=f"{self.name} on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (host:port) that makes a fraction of the
    requests fail the ways networks and cloud stores do:

    - "error": a 503 answer without forwarding the request;
    - "reset": the connection closed before an answer (the request forwarded or not);
    - "hang": no answer for `hang` seconds (longer than the client's read timeout), then closed;
    - "truncate": the answer's headers, then half its body, then the connection closed;
    - "stall": half the body, then nothing for `hang` seconds.

    `rates` maps each fault to its probability per request. `faults` counts the faults made.
    Setting `garble` to N flips a byte in the bodies of the next N GET answers that have one.
    """

    def __init__(self, upstream: str, rates: dict[str, float], hang: float = 2.0, seed: int = 0):
        import http.server
        import random
        import threading

        self.upstream = upstream
        self.rates = rates
        self.hang = hang
        self.faults: dict[str, int] = {}
        self.requests = 0
        self.garble = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()  # wakes hung requests at exit
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_any(self):
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def _pick(self) -> str | None:
        with self._lock:
            self.requests += 1
            x = self._rng.random()
            for fault, rate in self.rates.items():
                if x < rate:
                    self.faults[fault] = self.faults.get(fault, 0) + 1
                    return fault
                x -= rate
        return None

    @staticmethod
    def _read_body(h) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(h.rfile.readline().split(b";")[0], 16):
                body += h.rfile.read(size)
                h.rfile.readline()
            h.rfile.readline()
            return body
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _handle(self, h) -> None:
        import http.client

        body = self._read_body(h)
        fault = self._pick()
        if fault == "error":
            h.send_response(503, "Service Unavailable")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault == "hang" and self._closing.wait(self.hang):
            h.close_connection = True
            return
        if fault in ("hang", "reset") and self._rng.random() < 0.5:
            h.close_connection = True
            return
        host, port = self.upstream.rsplit(":", 1)
        upstream = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() != "transfer-encoding"}
            headers["Content-Length"] = str(len(body))
            upstream.request(h.command, h.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        if fault in ("hang", "reset"):  # the request was carried out; its answer is lost
            h.close_connection = True
            return
        h.send_response(response.status, response.reason)
        for k, v in response.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                h.send_header(k, v)
        # HEAD answers keep the object's length; others announce the body sent
        length = response.getheader("Content-Length") if h.command == "HEAD" else str(len(data))
        h.send_header("Content-Length", length or "0")
        h.end_headers()
        if h.command == "HEAD":
            return
        if fault in ("truncate", "stall") and len(data) > 1:
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            if fault == "stall":
                self._closing.wait(self.hang)
            h.close_connection = True
            return
        with self._lock:
            garble = self.garble > 0 and h.command == "GET" and bool(data)
            self.garble -= garble
        if garble:
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0xFF
            data = bytes(flipped)
        h.wfile.write(data)


def write_chunks(chunks, data: bytes, target: int = 1 << 20) -> list:
    """Cuts `data` into the chunks of a ChunkStore and packs them (packs of about `target` bytes):
    the file's (hash, size, location) list, as the file engine keeps it."""
    pieces = [bytes(p) for p in chunks.chunker.cut_buf(data)]
    locs = {}
    with chunks.writer(target) as writer:
        for piece in pieces:
            locs.update(writer.add(chunks.hash(piece), piece))
        locs.update(writer.flush())
    return [(chunks.hash(p), len(p), locs[chunks.hash(p)]) for p in pieces]


def self_signed(where) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pfs test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)
