"""Where a worker shows the command its datum: /pfs in a mount namespace of the worker's own,
served by FUSE or a bind-mounted directory of copies, a pod's shared emptyDir, or (without root)
a scratch directory; and /pfs/out on disk, where the outputs are taken from."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
from pathlib import Path

from pfsfuse.api.connect import connect
from pfsfuse.metadata.errors import PfsError
from pfsfuse.mount.view import DatumView, Served
from pfsfuse.scheduler.identity import RunAs
from pfsfuse.scheduler.kube import podworker

log = logging.getLogger("pfsfuse.worker")

_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_CLONE_NEWNS = 0x00020000
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_MNT_DETACH = 2


def _detach_fuse_mounts() -> None:
    """Drop this private namespace's copies of the FUSE file systems mounted on the host (a
    laptop's branch mounts): a copy held here would keep `pfs unmount` of the original busy for
    as long as the worker runs, and the command has no business in them."""
    with open("/proc/self/mountinfo") as f:
        fuse = [
            fields[4] for fields in (line.split() for line in f) if fields[fields.index("-") + 1].startswith("fuse")
        ]
    for target in reversed(fuse):  # the deepest first
        path = target.encode().decode("unicode_escape").encode("latin-1")  # mountinfo escapes " \t\n\\"
        if _LIBC.umount2(path, _MNT_DETACH) != 0:
            log.warning("cannot detach the mount %s from the worker's namespace: %s", target, _os_error("umount2"))


class Layout:
    """Where the command's /pfs is (`root`), and /pfs/out on disk (`out`), where the daemon reads
    the outputs from.

    As root, in a mount namespace of our own: /pfs is a `DatumView` served by this process
    (`view`), which `show`s each datum's inputs; without FUSE there (or with $PFS_WORKER_FUSE=0),
    /pfs is the scratch directory `views`, bind-mounted, where the worker copies each datum's
    inputs. As root without a private mount namespace (in a chroot, / is not a mount point) the
    command cannot see its data at /pfs: every datum fails saying why (`unavailable`). Without
    root: `views` itself, which $PFS_ROOT names."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.tmp = scratch / "tmp"  # the views and the links lazy pipes are opened by: one file system
        self.views = self.tmp / "pfs"
        self.out = scratch / "out"
        self.root = self.views
        self.private = os.geteuid() == 0
        self.view: DatumView | None = None
        self.served: Served | None = None
        self.unavailable = ""  # why the command cannot see its data at /pfs, if it cannot
        self.owner: tuple[int, int] | None = None  # the uid and gid /pfs/out belongs to
        self.pod: podworker.PodCommands | None = None  # in a pod: where commands run
        self.done = scratch / "done"  # outputs waiting to be saved, a directory per batch
        self.shared = False  # copy mode in a pod: the user's container writes /pfs/out as any user

    def setup(self) -> None:
        self.tmp.mkdir()
        if podworker.in_pod():  # /pfs is the emptyDir the user's container shares: no namespace
            self.private = False
            copy = podworker.fuse_mode() == "copy"
            self.pod = podworker.PodCommands.start(self._share if copy else self._serve)
            return
        if self.private:
            try:
                self._private_namespace()
            except OSError as e:
                self._cannot_show(e.strerror or str(e))
        if self.private and os.environ.get("PFS_WORKER_FUSE", "1") != "0":
            try:
                self._serve()
                return
            except (PfsError, OSError, RuntimeError) as e:  # pyfuse3 says RuntimeError
                log.warning("cannot serve /pfs (%s): copying each datum's files there instead", e)
        self.views.mkdir()
        self.out = self.views / "out"
        self.out.mkdir()
        if self.private:
            try:
                self._bind_views()
            except OSError as e:
                self._cannot_show(e.strerror or str(e))
        elif not self.unavailable:
            log.warning("no private /pfs; the command sees its data under %s ($PFS_ROOT)", self.views)

    def _cannot_show(self, why: str) -> None:
        self.unavailable = f"the worker cannot show the datum at /pfs: {why}"
        log.error("%s", self.unavailable)
        self.private = False

    def _private_namespace(self) -> None:
        if _LIBC.unshare(_CLONE_NEWNS) != 0:
            raise _os_error("unshare(CLONE_NEWNS) failed")
        if _LIBC.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:  # nothing we mount leaks out
            chroot = " (/ is not a mount point: a chroot?)" if ctypes.get_errno() == errno.EINVAL else ""
            raise _os_error(f"cannot make / a private mount{chroot}")
        _detach_fuse_mounts()

    def _serve(self, fuse_fd: int | None = None) -> None:
        """/pfs, in our mount namespace, is a view this process serves (`fuse_fd`: the one the
        pod's launcher mounted)."""
        self.out.mkdir()
        os.makedirs("/pfs", exist_ok=True)
        self.view = DatumView(connect(start=False), "/pfs", str(self.out), str(self.tmp))
        self.served = Served(self.view, fuse_fd=fuse_fd)
        self.root = Path("/pfs")

    def _share(self, _fd: int | None = None) -> None:
        """A pod's copy mode: this sidecar's /pfs is the whole emptyDir, the command's /pfs a
        directory of it (`podworker.lay_out`); finished outputs and the links to the pipes are
        beside that: on the same file system, out of the command's sight."""
        share = Path("/pfs")
        self.tmp, self.done, self.views = share, share / "done", podworker.lay_out(share)
        self.out, self.root, self.shared = self.views / "out", Path("/pfs"), True

    def _bind_views(self) -> None:
        """/pfs, in our mount namespace, is the directory where datums are copied."""
        os.makedirs("/pfs", exist_ok=True)
        if _LIBC.mount(str(self.views).encode(), b"/pfs", None, _MS_BIND, None) != 0:
            raise _os_error(f"cannot bind {self.views} to /pfs")
        self.root = Path("/pfs")

    def own(self, run_as: RunAs | None) -> None:
        """Give /pfs/out, now and from now on, to whom the command runs as, so that it can write
        there; None gives it back to the worker."""
        self.owner = None if run_as is None else (run_as.uid, run_as.gid)
        if self.shared:  # the sidecar may not chown: /pfs/out is open to all (`give`)
            return
        ids = self.owner or (os.geteuid(), os.getegid())
        os.chown(self.out, *ids)
        if self.view is not None:  # the inputs are the command's too (read-only): it may hard-link them
            self.view.attrs.uid, self.view.attrs.gid = ids

    def give(self, path: Path) -> None:
        """An entry the worker made in /pfs/out (a previous output) belongs to the owner too."""
        if self.shared:
            podworker.open_to_all(path)
        elif self.owner is not None:
            os.chown(path, *self.owner, follow_symlinks=False)

    def take_out(self, dest: Path) -> None:
        """Move what the command wrote to /pfs/out to `dest`, if anything: the directory is
        renamed (an output may have many entries) and a fresh one takes its place."""
        with os.scandir(self.out) as entries:
            if next(entries, None) is None:
                return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.out, dest)
        self.out.mkdir()
        self.give(self.out)
        if not stat.S_ISDIR(os.lstat(dest).st_mode):  # swapped in since `out_replaced`: not followed
            log.warning("a process of the command replaced /pfs/out: its output is dropped")
            os.unlink(dest)

    def out_replaced(self) -> bool:
        """Whether the command put something else at /pfs/out (`podworker.replace_out`)."""
        return self.shared and podworker.replace_out(self.out)

    def close(self) -> None:
        if self.served is not None:
            self.served.close()


def _os_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")
