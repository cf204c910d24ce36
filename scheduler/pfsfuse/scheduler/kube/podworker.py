"""The worker as a worker pod's sidecar: it serves /pfs on the emptyDir it shares with the user's
container (no private mount namespace: the user's container must see the mount), writes the ready
mark the sidecar's startup probe waits for, and runs each datum's command in the user's container
through the static launcher (`Launcher`), over the unix socket in the shared emptyDir /run/pfs.

The manifests (`manifests._sidecar`) set $PFS_LAUNCHER_SOCKET in the sidecar: that is what puts
the worker in pod mode. $PFS_FUSE_MODE says how /pfs is served (`settings.FUSE_MODES`); in the
copy mode there is no mount: the worker copies each datum's files into the emptyDir
(`open_to_all` lets the user's command write /pfs/out as whatever user it runs as).

Kubernetes stops a pod with SIGTERM to the user container first: the launcher tells the worker
(`terminating`), which finishes the running datum, takes no more and ends.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import shutil
import signal
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument, Unavailable
from pfsfuse.scheduler.kube.launcher import Launcher
from pfsfuse.scheduler.kube.settings import COPY_DIR, FUSE_MODES

log = logging.getLogger("pfsfuse.worker")

# A POSIX ACL's entries, as the system.posix_acl_* attributes hold them (linux/posix_acl_xattr.h)
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_ANY = 0xFFFFFFFF
SOCKET_ENV, MODE_ENV = "PFS_LAUNCHER_SOCKET", "PFS_FUSE_MODE"
CONNECT_SECONDS = 600.0  # the user's image may take this long to pull and start
# The command's PATH: the image's own is unknown to us (the launcher's environment is replaced by
# the one sent), so the usual one, as container runtimes default to.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INHERITED = ("LANG", "LANGUAGE", "TZ", "TERM")
_ID = re.compile(r"(\d+)(?::(\d+))?")


def in_pod() -> bool:
    """Whether this worker is a worker pod's sidecar."""
    return bool(os.environ.get(SOCKET_ENV))


def fuse_mode() -> str:
    """How this pod serves /pfs."""
    mode = os.environ.get(MODE_ENV) or "privileged"
    if mode not in FUSE_MODES:
        raise InvalidArgument(f"${MODE_ENV} is {mode!r}, not one of {', '.join(FUSE_MODES)}")
    return mode


def user_ids(user: str) -> tuple[int, int]:
    """transform.user as the launcher takes it: "UID" or "UID:GID" (the user's image's
    /etc/passwd is not ours to read, so names cannot be looked up); "" runs as the image says."""
    if not user:
        return -1, -1
    m = _ID.fullmatch(user)
    if m is None:
        raise FailedPrecondition(
            f"transform.user {user!r}: in a worker pod, give a numeric UID or UID:GID "
            "(the user's image's user names cannot be looked up from the worker)"
        )
    uid = int(m.group(1))
    return uid, int(m.group(2)) if m.group(2) else uid


def owner(user: str) -> tuple[int, int] | None:
    """Who /pfs/out belongs to for transform.user: None for the image's user (or a name, which
    the command refuses)."""
    try:
        uid, gid = user_ids(user)
    except FailedPrecondition:
        return None
    return None if uid < 0 else (uid, gid)


class PodCommands:
    """The user container's end: one launcher, connected once the pod's /pfs is ready."""

    def __init__(self, socket_path: str):
        self.launcher = Launcher(socket_path)
        self.ready = Path(socket_path).parent / "ready"
        self.gone = False  # the launcher went (the user container ended): the worker stops

    @classmethod
    def start(cls, serve: Callable[[int | None], None], connect_seconds: float = CONNECT_SECONDS) -> PodCommands:
        """Privileged: `serve(None)` mounts /pfs, then the ready mark lets the user container
        start, whose launcher then connects (copy: `serve(None)` makes the emptyDir's layout).
        Device-plugin: the launcher mounts /dev/fuse at /pfs
        and connects with its descriptor, which `serve` is given."""
        mode = fuse_mode()
        pod = cls(os.environ[SOCKET_ENV])
        try:
            if mode in ("privileged", "copy"):
                serve(None)
                pod.ready.touch()
            pod.launcher.wait(connect_seconds)
            if mode == "device-plugin":
                if pod.launcher.fuse_fd is None:
                    raise FailedPrecondition(
                        "the launcher passed no /dev/fuse descriptor: is $PFS_LAUNCHER_MOUNT set in the user container?"
                    )
                serve(pod.launcher.fuse_fd)
        except BaseException:
            pod.close()
            raise
        return pod

    def env(self, base: dict[str, str], root: Path) -> dict[str, str]:
        """The command's environment: `base` (the documented variables and transform.env) with
        the image's usual PATH and no path of the sidecar's."""
        kept = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("LC_")}
        return {**kept, "PATH": IMAGE_PATH, "HOME": "/", **base, "PFS_ROOT": str(root)}

    def run(
        self,
        cmd: list[str],
        env: dict[str, str],
        user: str,
        working_dir: str,
        stdin: bytes,
        timeout: float | None,
        accept: list[int],
        live: Callable[[bytes], None],
        live_every: float,
    ) -> tuple[bool, str, bytes]:
        """Run one datum's command in the user's container: whether it succeeded, why not, and
        its output. The output so far goes to `live` every `live_every` seconds."""
        try:
            uid, gid = user_ids(user)
        except FailedPrecondition as e:
            return False, str(e), b""
        out = bytearray()
        done = threading.Event()

        def ticks() -> None:  # the launcher's messages are waited for: the live log has a thread
            while not done.wait(live_every):
                live(bytes(out))

        ticker = threading.Thread(target=ticks, name="pfs-live-log", daemon=True)
        ticker.start()
        try:
            ended = self.launcher.run(
                cmd, env, cwd=working_dir, uid=uid, gid=gid, stdin=stdin, timeout=timeout, output=out.extend
            )
        except FailedPrecondition as e:
            return False, str(e), bytes(out)
        except Unavailable as e:
            self.gone = True
            return False, str(e), bytes(out)
        finally:
            done.set()
            ticker.join()
        if ended.status == "timeout":
            return False, "timeout", ended.output
        code = ended.code
        if code == 0 or (code is not None and code in accept):
            return True, "", ended.output
        how = f"exit status {code}" if code is not None else ended.status
        hint = "; only /pfs/out is writable under /pfs" if b"Read-only file system" in ended.output else ""
        return False, f"the command failed ({how}){hint}", ended.output

    def terminating(self) -> bool:
        """Whether the worker should take no more datums: Kubernetes is stopping the pod (the
        launcher got SIGTERM), or the launcher is gone."""
        if not self.gone:
            try:
                self.launcher.check()
            except (Unavailable, FailedPrecondition):
                self.gone = True
        return self.gone or self.launcher.terminating

    def watch(self, idle: threading.Event, batches: Callable[[], int]) -> None:
        """While the worker waits for datums (`idle`), the launcher's word that the pod is
        terminating (or its end) stops it at once, as SIGTERM does; while a datum runs, the worker
        reads that word itself and stops after it. Between commands the launcher says nothing
        else: the connection is readable then only for that (`batches()` counts the batches
        begun, so that a command's output is never taken for it)."""
        conn = self.launcher.fileno()

        def loop() -> None:
            while True:
                batch = batches()
                if not idle.is_set():
                    idle.wait()
                    continue
                if select.select([conn], [], [], 0.5)[0] and batches() == batch and idle.is_set():
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        threading.Thread(target=loop, name="pfs-launcher-watch", daemon=True).start()

    def close(self) -> None:
        """The launcher exits, which ends the user container and with it the pod."""
        self.launcher.close()
        try:
            self.ready.unlink()
        except FileNotFoundError:
            pass


def lay_out(share: Path) -> Path:
    """The copy mode's emptyDir (the sidecar's /pfs), emptied of what an earlier run of the
    sidecar in this pod left; returns the command's /pfs in it (COPY_DIR), with an empty /pfs/out
    open to all. COPY_DIR itself stays: the user container's /pfs is bound to it."""
    views = share / COPY_DIR
    leftovers = [*os.scandir(share), *(os.scandir(views) if views.is_dir() else ())]
    for entry in leftovers:
        if entry.path == str(views):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
    (views / "out").mkdir(parents=True, exist_ok=True)
    os.chmod(views, 0o755)
    open_to_all(views / "out")
    return views


def replace_out(out: Path) -> bool:
    """In the copy mode the command may put something else at /pfs/out (a symlink there would
    have the worker read or clear its own files): if it did, a fresh directory takes its place
    (and the datum fails)."""
    try:
        if stat.S_ISDIR(os.lstat(out).st_mode):
            return False
        os.unlink(out)
    except FileNotFoundError:
        pass
    out.mkdir()
    open_to_all(out)
    return True


class OpenedLater:
    """An output file opened at its first read and closed at its end: a batch's outputs may be
    many files, sent one after another. It must be a file under `root` once opened: a process
    the command left behind may have swapped a directory on its path for a symlink (to the
    store's credentials, say)."""

    def __init__(self, path: str, root: str):
        self.path, self.root = path, root
        self._file: io.BufferedReader | None = None

    def read(self, n: int = -1) -> bytes:
        if self._file is None:
            # Non-blocking: a FIFO the command left opens at once (and is refused).
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            if not os.path.realpath(f"/proc/self/fd/{fd}").startswith(self.root.rstrip("/") + "/"):
                os.close(fd)
                raise OSError(f"{self.path} is no longer a file of the output: replaced while it was saved")
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{self.path} is not a regular file (a FIFO, socket or device cannot be saved)")
            self._file = os.fdopen(fd, "rb")
        data = self._file.read(n)
        if not data:
            self._file.close()
        return data


def open_to_all(path: Path) -> None:
    """Let the command write `path`, whoever it runs as, and this worker clear what it leaves
    there: a directory is open to all, and whatever is made in it will be this worker's to
    remove too (a default ACL naming our uid; without ACLs, what another user makes in a
    directory of its own stays until the pod ends)."""
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, 0o666)
        return
    os.chmod(path, 0o777)
    entries = [(_ACL_USER_OBJ, 7, _ACL_ANY), (_ACL_USER, 7, os.geteuid()), (_ACL_GROUP_OBJ, 7, _ACL_ANY)]
    entries += [(_ACL_MASK, 7, _ACL_ANY), (_ACL_OTHER, 7, _ACL_ANY)]
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_default", acl)
    except OSError as e:
        log.debug("no default ACL on %s: %s", path, e)
