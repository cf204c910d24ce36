"""The worker (`python -m pfsfuse.scheduler.worker PIPELINE WORKER`): pulls datums from the daemon,
shows each one's inputs at /pfs/<input> and a fresh /pfs/out, runs the user's command, and writes
/pfs/out into the job's meta commit under the datum's key, in one atomic write.

As root the worker runs in its own mount namespace, where /pfs is its private scratch directory;
the command runs on this host (the spec's image is recorded, not used). Without root it cannot
give /pfs a private view: it uses its scratch directory instead and says so, and $PFS_ROOT tells
the command where that is (paths in the environment point there too).

As root, the worker also mounts the store read-only inside its namespace (a FUSE mount that dies
with it) and binds each datum's input paths from there: files are fetched as they are read, a
chunk at a time with read-ahead. Otherwise inputs are files fetched before the command runs.
`empty_files` gives empty files and `lazy` named pipes that fetch a file only when opened.
Symlinks in /pfs/out to inputs become references to the input's data, as do hard links to
inputs fetched up front (a hard link cannot cross into the FUSE mount: EXDEV).
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pfsfuse.api.connect import connect
from pfsfuse.api.types import Copy, Mkdir, Put, Symlink, WriteOp
from pfsfuse.home import Home
from pfsfuse.metadata.errors import NotFound, PfsError
from pfsfuse.metadata.records import DirNode, FileNode, SymlinkNode
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines
from pfsfuse.scheduler.pipes import PipeFeeder
from pfsfuse.scheduler.records import DatumResult, DatumTask, meta_repo

log = logging.getLogger("pfsfuse.worker")

LOG_TAIL = 64 << 10
_MS_REC, _MS_PRIVATE, _MS_BIND = 16384, 1 << 18, 4096
_CLONE_NEWNS = 0x00020000
_MNT_DETACH = 2
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _bind(source: Path | None, target: Path, flags: int = _MS_BIND) -> None:
    if _LIBC.mount(None if source is None else bytes(source), bytes(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount {source} at {target}: {os.strerror(err)}")


def private_pfs(scratch: Path) -> Path:
    """Mount `scratch` at /pfs in a mount namespace of our own; returns where the views live."""
    view = scratch / "pfs"
    view.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        log.warning("not root: no private /pfs; the command sees its data under %s ($PFS_ROOT)", view)
        return view
    if _LIBC.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    _bind(None, Path("/"), _MS_REC | _MS_PRIVATE)  # nothing we mount leaks to the host
    os.makedirs("/pfs", exist_ok=True)
    _bind(view, Path("/pfs"))
    return Path("/pfs")


def mount_store(scratch: Path) -> Path | None:
    """As root, in our namespace: the store mounted read-only, for inputs read on demand."""
    if os.geteuid() != 0:
        return None
    from pfsfuse.mount import main as mounting  # FUSE and trio: only this path needs them

    store = scratch / "store"
    store.mkdir()
    try:
        mounting.mount_background(str(store), [str(store), "--read-only"], die_with_parent=True)
    except PfsError as e:
        log.warning("cannot mount the store (%s): inputs are fetched before each datum", e)
        return None
    return store


def unmount_store(store: Path | None) -> None:
    if store is not None:
        from pfsfuse.mount import main as mounting

        try:
            mounting.unmount(str(store))
        except PfsError as e:
            log.warning("%s", e)


class Worker:
    def __init__(self, pipeline: str, name: str, scratch: Path):
        self.pipeline = pipeline
        self.name = name
        self.scratch = scratch  # host paths: what the daemon sees
        self.views = scratch / "pfs"  # the datum's /pfs, as a host path
        self.done = scratch / "done"  # outputs waiting to be written
        self.root = private_pfs(scratch)  # /pfs, as the command sees it
        self.store = mount_store(scratch)  # the store, read-only, or None: fetch inputs up front
        self.binds: list[Path] = []  # the current datum's inputs bound from the store
        self.fetched_before = 0  # the store mount's fetched bytes when the datum started
        self.client = connect(start=False)
        self.pps = RemotePipelines(os.environ["PFS_ADDRESS"])
        self.spec = self.pps.inspect_pipeline(pipeline).spec
        self.busy = False  # running a datum: a stop waits for it
        self.stopping = False
        self.command: subprocess.Popen | None = None

    def run(self) -> None:
        batch = 1
        while not self.stopping:
            try:
                tasks = self.pps.next_datums(self.pipeline, self.name, batch, 5.0)
            except NotFound:
                return  # the pipeline is gone
            if not tasks:
                continue
            if tasks[0].job != getattr(self, "_job", None):
                self.spec = self.pps.inspect_pipeline(self.pipeline).spec  # maybe updated
                self._job = tasks[0].job
            started = time.monotonic()
            results, ops = [], {}
            self.busy = True
            try:
                for t in tasks:
                    result, datum_ops = self.datum(t)
                    results.append(result)
                    if result.ok:
                        ops.setdefault(t.meta_commit, []).extend(datum_ops)
                results = self._write(ops, results)
                self.pps.datum_done(self.pipeline, self.name, results)
            finally:
                self.busy = False
                shutil.rmtree(self.done, ignore_errors=True)
            # Quick datums are fetched several at a time; slow ones one by one, for balance.
            batch = 8 if (time.monotonic() - started) / len(tasks) < 0.5 else 1

    def _write(self, ops: dict[str, list[WriteOp]], results: list[DatumResult]) -> list[DatumResult]:
        """Each datum's output lands with its key in one atomic write; if that fails, they fail."""
        for commit, batch in ops.items():
            try:
                self.client.write_files(meta_repo(self.pipeline), commit, batch)
            except PfsError as e:
                results = [r if not r.ok else _failed(r, f"cannot save the output: {e}") for r in results]
        return results

    # -- one datum

    def datum(self, t: DatumTask) -> tuple[DatumResult, list[WriteOp]]:
        started = time.time()
        feeder = PipeFeeder(self._fetcher, str(self.scratch / "pipes"))
        downloaded = 0
        try:
            _empty(self.views)  # emptied, not replaced: /pfs is bound to this very directory
            sources, downloaded = self._inputs(t, feeder)
            (self.views / "out").mkdir()
            if t.previous:
                downloaded += self._prefill(t)
            feeder.start()
            ok, reason, output = self._run(t)
        except (PfsError, OSError) as e:
            return DatumResult(t.job, t.key, False, f"cannot prepare the datum: {e}", started, time.time()), []
        finally:
            feeder.stop()
            downloaded += feeder.fed + self._unbind()
        if not ok:
            return DatumResult(t.job, t.key, False, reason, started, time.time(), downloaded, 0, output), []
        out = self.done / t.key
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.views / "out", out)
        ops, uploaded = self._outputs(t, out, sources)
        return DatumResult(t.job, t.key, True, "", started, time.time(), downloaded, uploaded, output), ops

    def _inputs(self, t: DatumTask, feeder: PipeFeeder):
        """Lay out the datum's inputs under /pfs; returns {(dev, ino): source} of input files and
        the bytes fetched."""
        sources: dict[tuple[int, int], tuple[str, str, str]] = {}
        fetched = 0
        for inp in t.inputs:
            base = self.views / inp.name
            target = base / inp.path if inp.path else base
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.store is not None and not (inp.lazy or inp.empty_files or isinstance(inp.node, SymlinkNode)):
                if isinstance(inp.node, DirNode):
                    target.mkdir(exist_ok=True)
                else:
                    target.touch()
                # Onto the path under /pfs: a mount under the scratch directory would not show there.
                seen = self.root / inp.name / inp.path if inp.path else self.root / inp.name
                if not self.binds:  # the first of the datum: the mount's count so far
                    self.fetched_before = self._store_fetched()
                _bind(self.store / inp.repo / inp.commit / inp.path, seen)
                self.binds.append(seen)
                continue
            entries = [(inp.path, inp.node)]
            if isinstance(inp.node, DirNode):
                entries = [(f.path, f) for f in self.client.walk_file(inp.repo, inp.commit, inp.path)]
            for path, entry in entries:
                local = base / path if path else base
                kind = entry.type if not isinstance(entry, (FileNode, DirNode, SymlinkNode)) else _kind(entry)
                if kind == "dir":
                    local.mkdir(parents=True, exist_ok=True)
                elif kind == "symlink":
                    os.symlink(entry.target, local)
                elif inp.lazy:
                    feeder.add(str(local), (inp.repo, inp.commit, path))
                else:
                    with open(local, "wb") as f:
                        if not inp.empty_files:
                            for piece in self.client.get_file(inp.repo, inp.commit, path):
                                f.write(piece)
                                fetched += len(piece)
                if kind != "dir" and kind != "symlink":
                    st = os.lstat(local)
                    sources[(st.st_dev, st.st_ino)] = (inp.repo, inp.commit, path)
        return sources, fetched

    def _unbind(self) -> int:
        """Detach the datum's bound inputs; returns the bytes the store mount fetched for them."""
        if not self.binds:
            return 0
        for target in reversed(self.binds):
            _LIBC.umount2(bytes(target), _MNT_DETACH)
        self.binds.clear()
        return self._store_fetched() - self.fetched_before

    def _store_fetched(self) -> int:
        return int(os.getxattr(self.store, "user.pfs.fetched")) if self.store is not None else 0

    def _fetcher(self):
        client = connect(start=False)  # in a forked pipe server, a connection of its own
        return lambda src: client.get_file(*src)

    def _prefill(self, t: DatumTask) -> int:
        """incremental: /pfs/out starts with the datum's previous output."""
        fetched = 0
        repo, prefix = meta_repo(self.pipeline), f"{t.key}/out"
        try:
            files = self.client.walk_file(repo, t.previous, prefix)
        except NotFound:
            return 0
        for f in files[1:]:
            local = self.views / "out" / f.path[len(prefix) + 1 :]
            if f.type == "dir":
                local.mkdir(parents=True, exist_ok=True)
            elif f.type == "symlink":
                os.symlink(f.target, local)
            else:
                with open(local, "wb") as out:
                    for piece in self.client.get_file(repo, t.previous, f.path):
                        out.write(piece)
                        fetched += len(piece)
        return fetched

    def _run(self, t: DatumTask) -> tuple[bool, str, str]:
        tf = self.spec.transform
        # Commands find this installation's python3 (and its packages) first on PATH.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        env = {**os.environ, "PATH": path, **tf.env, "PACH_JOB_ID": t.job,
               "PACH_OUTPUT_COMMIT_ID": t.output_commit, "PFS_ROOT": str(self.root)}
        for inp in t.inputs:
            env[inp.name] = str(self.root / inp.name / inp.path) if inp.path else str(self.root / inp.name)
            env[f"{inp.name}_COMMIT"] = inp.commit
        stdin = "".join(line if line.endswith("\n") else line + "\n" for line in tf.stdin).encode()
        timeout = specs.duration(self.spec.datum_timeout) if self.spec.datum_timeout else None
        try:
            proc = self.command = subprocess.Popen(
                tf.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=tf.working_dir or None, env=env, start_new_session=True, user=tf.user or None,
            )
        except (OSError, ValueError) as e:
            return False, f"cannot run {tf.cmd[0]}: {e}", ""
        try:
            output, _ = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return False, f"the command ran longer than datum_timeout {self.spec.datum_timeout}", _text(output)
        finally:
            self.command = None
        text = _text(output)
        if proc.returncode != 0 and proc.returncode not in tf.accept_return_code:
            how = f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
            return False, f"the command failed ({how})", text
        return True, "", text

    def _outputs(self, t: DatumTask, out: Path, sources) -> tuple[list[WriteOp], int]:
        """Ops that store /pfs/out under the datum's key: links to inputs become references."""
        prefix = f"{t.key}/out"
        ops: list[WriteOp] = [Mkdir(prefix)]
        if t.fingerprint:
            ops.append(Put(f"{t.key}/fingerprint", stream=io.BytesIO(t.fingerprint.encode())))
        inputs = {i.name: i for i in t.inputs}
        uploaded = 0
        for dirpath, dirnames, filenames in os.walk(out):
            rel_dir = os.path.relpath(dirpath, out)
            rel_dir = "" if rel_dir == "." else rel_dir
            if not dirnames and not filenames and rel_dir:
                ops.append(Mkdir(f"{prefix}/{rel_dir}"))
            for name in [*filenames, *[d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]]:
                local = os.path.join(dirpath, name)
                rel = f"{rel_dir}/{name}" if rel_dir else name
                dest = f"{prefix}/{rel}"
                st = os.lstat(local)
                if os.path.islink(local):
                    source = self._link_source(os.readlink(local), "/".join(["out", rel]), inputs)
                    ops.append(Copy(dest, *source) if source else Symlink(dest, os.readlink(local)))
                elif (st.st_dev, st.st_ino) in sources:  # a hard link to an input
                    ops.append(Copy(dest, *sources[(st.st_dev, st.st_ino)]))
                else:
                    ops.append(Put(dest, local=local))
                    uploaded += st.st_size
        return ops, uploaded

    def _link_source(self, target: str, link: str, inputs) -> tuple[str, str, str] | None:
        """(repo, commit, path) when a symlink in /pfs/out points into an input."""
        root = str(self.root)
        if not target.startswith("/"):
            target = os.path.join(root, os.path.dirname(link), target)
        target = os.path.normpath(target)
        if not target.startswith(root + "/"):
            return None
        name, _, path = target[len(root) + 1 :].partition("/")
        inp = inputs.get(name)
        if inp is None or name == "out":
            return None
        return inp.repo, inp.commit, path


def _empty(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _kind(node) -> str:
    return "dir" if isinstance(node, DirNode) else "symlink" if isinstance(node, SymlinkNode) else "file"


def _text(output: bytes | None) -> str:
    return (output or b"")[-LOG_TAIL:].decode(errors="replace")


def _failed(r: DatumResult, reason: str) -> DatumResult:
    import msgspec

    return msgspec.structs.replace(r, ok=False, reason=reason)


def main() -> None:
    pipeline, name = sys.argv[1], sys.argv[2]
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a worker ends with its daemon
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    scratch = Home().path / "workers" / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        worker = Worker(pipeline, name, scratch)
    except (PfsError, OSError) as e:
        log.error("cannot start: %s", e)
        sys.exit(1)

    def stop(*_):
        # Waiting for work: go now. Running a datum: end its command, report it, then go.
        worker.stopping = True
        if worker.command is not None:
            os.killpg(worker.command.pid, signal.SIGTERM)
        elif not worker.busy:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        worker.run()
    except PfsError as e:
        log.error("%s", e)
        sys.exit(1)
    finally:
        worker._unbind()
        unmount_store(worker.store)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
