"""The worker (`python -m pfsfuse.scheduler.worker PIPELINE WORKER`): pulls datums from the daemon,
shows each one's inputs at /pfs/<input> and a fresh /pfs/out, runs the user's command, and writes
/pfs/out into the job's meta commit under the datum's key, in one atomic write. A batch's outputs
are saved and reported in the background while the next batch runs. The command's output goes to
the daemon as it comes (complete lines, every LIVE_EVERY seconds) so that `get-logs` shows a
running datum's log; it is kept with the datum's result when it ends.

As root the worker runs in its own mount namespace, where /pfs is a FUSE file system this process
serves (`pfsfuse.mount.view`): the datum's inputs, read-only and fetched a chunk at a time as they
are read, and /pfs/out, passed through to a directory of the worker's; a command writing elsewhere
under /pfs gets EROFS. An input that is one small file (SMALL) is fetched before the command runs,
with the rest of its batch's. Without FUSE (or with $PFS_WORKER_FUSE=0) the worker copies each
datum's inputs to a directory it binds at /pfs instead (nothing is read-only there); without a
private mount namespace (a chroot) every datum fails saying so. The command runs on this host (the
spec's image is recorded, not used): paths outside /pfs are the host's. Without root it cannot
give /pfs a private view: it uses its scratch directory instead and says so, and $PFS_ROOT tells
the command where that is (paths in the environment point there too); inputs are fetched before
the command runs, and nothing is read-only there.
`empty_files` gives empty files and `lazy` named pipes that fetch a file only when opened.
Symlinks and hard links in /pfs/out to inputs become references to the input's data.
As a worker pod's sidecar ($PFS_LAUNCHER_SOCKET set) /pfs is the emptyDir the user's container
shares and each command runs there, through the launcher (`pfsfuse.scheduler.kube.podworker`):
FUSE served on it, or (the copy mode) each datum's files copied into a directory of it.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pfsfuse.api.checkout import checkout
from pfsfuse.api.connect import connect
from pfsfuse.api.types import Copy, FileInfo, Mkdir, Put, Symlink, WriteOp
from pfsfuse.home import Home
from pfsfuse.metadata.errors import InvalidArgument, NotFound, PfsError
from pfsfuse.metadata.records import DirNode, FileNode, Node, SpecialNode, SymlinkNode
from pfsfuse.mount.view import PIPES, Shown
from pfsfuse.scheduler import identity, incremental
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines
from pfsfuse.scheduler.identity import RunAs
from pfsfuse.scheduler.kube import podworker
from pfsfuse.scheduler.layout import Layout
from pfsfuse.scheduler.pipes import PipeFeeder
from pfsfuse.scheduler.records import DatumInput, DatumResult, DatumTask, meta_repo

log = logging.getLogger("pfsfuse.worker")

LOG_TAIL = 64 << 10
SMALL = 64 << 10  # input files up to this size are fetched before the command, not read through FUSE
BATCH_SECONDS, MAX_BATCH = 0.2, 32  # how long a batch of datums runs, at most
LIVE_EVERY = 0.5  # seconds between live log updates; quicker datums send none
_INHERITED = {"LANG", "LANGUAGE", "TZ", "TERM"}  # and LC_*


class Worker:
    def __init__(self, pipeline: str, name: str, scratch: Path):
        self.pipeline = pipeline
        self.name = name
        self.scratch = scratch  # host paths: what the daemon sees
        self.layout = Layout(scratch)
        self.layout.setup()
        self.done = self.layout.done
        self.views, self.out, self.root = self.layout.views, self.layout.out, self.layout.root
        self.view = self.layout.view
        self.pod = self.layout.pod  # in a pod, commands run in the user's container, through the launcher
        self.client = connect(start=False)
        self.pps = RemotePipelines(os.environ["PFS_ADDRESS"], self.client.token)
        self.spec = self.pps.inspect_pipeline(pipeline).spec
        self.reporter = Reporter(pipeline, name)
        self.busy = False  # running a datum: a stop waits for it
        self.idle = threading.Event()  # waiting for datums (not busy)
        self.idle.set()
        self.batches = 0  # batches begun (counted after `idle` is cleared)
        self.stopping = False
        self.command: subprocess.Popen | None = None
        self._job = None
        self._env: dict[str, str] = {}
        self.run_as: RunAs | None = None  # whom commands run as (None: as this worker)
        self.refused = ""  # why no command of this spec may run here
        self.home: str | None = None  # the command's $HOME when it runs as another user
        if self.pod is not None:
            self.pod.watch(self.idle, lambda: self.batches)

    def run(self) -> None:
        batch, serial = 1, 0
        while not self._ending():
            try:
                tasks = self.pps.next_datums(self.pipeline, self.name, batch, 5.0)
            except NotFound:
                return  # the pipeline is gone
            if not tasks:
                continue
            if tasks[0].job != self._job:
                self.spec = self.pps.inspect_pipeline(self.pipeline).spec  # maybe updated
                self._job = tasks[0].job
                self._run_as()
                self._env = self._base_env()
            started = time.monotonic()
            self._fetch_small(tasks)
            serial += 1
            done = self.done / str(serial)
            results: list[DatumResult] = []
            ops: dict[str, list[WriteOp]] = {}
            self.busy = True
            self.idle.clear()
            self.batches += 1
            try:
                for t in tasks:
                    if self._ending():
                        break  # the datums not run go back to the queue untried once this worker ends
                    result, datum_ops = self.datum(t, done)
                    results.append(result)
                    if result.ok:
                        ops.setdefault(t.meta_commit, []).extend(datum_ops)
                self.reporter.send(ops, results, done)
            finally:
                self.busy = False
                self.idle.set()
            # Quick datums are fetched (and saved) many at a time; slow ones one by one, for balance.
            each = (time.monotonic() - started) / len(tasks)
            batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(each, 1e-6))))

    def _ending(self) -> bool:
        """Whether to take no more datums: this worker is asked to stop, or (in a pod) Kubernetes
        is stopping the pod, or its launcher is gone."""
        if self.pod is not None and self.pod.terminating():
            self.stopping = True
        return self.stopping

    def close(self) -> None:
        self.reporter.close()
        if self.pod is not None:
            self.pod.close()
        self.layout.close()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def _run_as(self) -> None:
        """Whom the spec's commands run as, with /pfs/out and a home directory theirs."""
        if podworker.in_pod():  # the user's container runs them, as its numeric ids say
            ids = podworker.owner(self.spec.transform.user)
            self.layout.own(None if ids is None else RunAs(*ids, (), ""))
            return
        try:
            self.run_as, self.refused = identity.resolve(self.spec.transform.user), ""
        except InvalidArgument as e:
            self.run_as, self.refused = None, str(e)
        self.layout.own(self.run_as)
        if self.run_as is not None and not identity.can_run(self.run_as, sys.executable):
            log.warning(
                "commands run as uid %d cannot run this installation's Python (%s): "
                "a command's python3 is another one on PATH, without pfsfuse's packages",
                self.run_as.uid,
                os.path.realpath(sys.executable),
            )
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None
        if self.run_as is not None:
            # Not under the scratch directory, which only the worker may enter.
            self.home = tempfile.mkdtemp(prefix="pfs-home-")
            os.chown(self.home, self.run_as.uid, self.run_as.gid)

    def _small(self, inp: DatumInput) -> bool:
        """Whether to fetch this input before the command runs rather than as it is read: a file
        so small that reading it through FUSE costs more, whose chunks this worker may read."""
        node = inp.node
        return (
            self.view is not None
            and not (inp.lazy or inp.empty_files)
            and isinstance(node, FileNode)
            and node.chunks is not None
            and node.size <= SMALL
            and not inp.framed
            and self.client.chunk_store is not None
        )

    def _fetch_small(self, tasks: list[DatumTask]) -> None:
        """Fetch the batch's small input files into the view's cache, where their chunks are
        asked for in one request."""
        chunks = list(
            {
                c.hash: c
                for t in tasks
                for i in t.visible
                if self._small(i) and isinstance(i.node, FileNode)
                for c in i.node.chunks or ()
            }.values()
        )
        if not chunks:
            return
        assert self.view is not None  # inputs are small only with a view
        try:
            self.view.trees.fetch(chunks)
        except (PfsError, OSError) as e:
            log.warning("cannot fetch the small inputs (%s): they are read as the command reads them", e)

    # -- one datum

    def datum(self, t: DatumTask, done: Path) -> tuple[DatumResult, list[WriteOp]]:
        started = time.time()
        if self.layout.unavailable or self.refused:
            why = self.layout.unavailable or self.refused
            return DatumResult(t.job, t.key, False, why, started, started), []
        feeder = PipeFeeder(self._fetcher, str(self.layout.tmp / "pipes"))
        downloaded, linked = 0, {}
        fetched = self.view.fetched if self.view is not None else 0
        try:
            if self.view is not None:
                downloaded = self._show(t, feeder)
                sources = {}
            else:
                _empty(self.views, keep="out")
                sources, downloaded = self._inputs(t, feeder)
            if t.previous:
                downloaded += self._prefill(t)
            feeder.start()
            ok, reason, output, first_line = self._run(t)
            if self.layout.out_replaced():
                ok, reason = False, "the command replaced /pfs/out, which must stay a directory"
        except (PfsError, OSError) as e:
            self.layout.out_replaced()
            _empty(self.out)
            return DatumResult(t.job, t.key, False, f"cannot prepare the datum: {e}", started, time.time()), []
        finally:
            feeder.stop()
            downloaded += feeder.fed
            if self.view is not None:
                assert self.layout.served is not None  # it serves the view
                linked = self.layout.served.call(self.view.done)
                downloaded += self.view.fetched - fetched
        if not ok:
            _empty(self.out)
            return DatumResult(t.job, t.key, False, reason, started, time.time(), downloaded, 0, output, first_line), []
        out = done / t.key
        self.layout.take_out(out)
        ops, uploaded = self._outputs(t, out, {**sources, **linked})
        return DatumResult(t.job, t.key, True, "", started, time.time(), downloaded, uploaded, output, first_line), ops

    def _show(self, t: DatumTask, feeder: PipeFeeder) -> int:
        """Show the datum's inputs in the view; returns the bytes of its small inputs (fetched
        with the batch's)."""
        shown: list[Shown] = []
        pipes: list[tuple[str, str, str]] = []
        small = 0
        for inp in t.visible:
            how = "lazy" if inp.lazy else "empty" if inp.empty_files else "entry"
            shown.append(Shown(inp.name, inp.repo, inp.commit, inp.path, how))
            if inp.lazy:
                for path in self._files(inp):
                    own = f"{self.root}/{PIPES}/{len(pipes)}"
                    pipes.append((inp.repo, inp.commit, path))
                    feeder.add(str(self.root / inp.name / path), (inp.repo, inp.commit, path), own)
            elif self._small(inp):
                small += inp.node.size
        assert self.view is not None and self.layout.served is not None  # _show runs with a view
        self.layout.served.wait(self.view.show, shown, pipes)
        return small

    def _files(self, inp: DatumInput) -> list[str]:
        """The paths of an input's files."""
        if not isinstance(inp.node, DirNode):
            return [inp.path] if isinstance(inp.node, FileNode) else []
        return [f.path for f in self.client.walk_file(inp.repo, inp.commit, inp.path) if f.type == "file"]

    def _inputs(self, t: DatumTask, feeder: PipeFeeder):
        """Lay out the datum's inputs under /pfs without root; returns {(dev, ino): source} of
        input files and the bytes fetched."""
        sources: dict[tuple[int, int], tuple[str, str, str]] = {}
        fetched = 0
        for inp in t.visible:
            base = self.views / inp.name
            target = base / inp.path if inp.path else base
            target.parent.mkdir(parents=True, exist_ok=True)
            entries: list[tuple[str, Node | FileInfo]] = [(inp.path, inp.node)]
            if isinstance(inp.node, DirNode) and not (inp.lazy or inp.empty_files):
                # A whole directory: read plans in batches, files written in parallel.
                for got, copy in checkout(self.client, inp.repo, inp.commit, inp.path, str(target)):
                    st = os.lstat(copy)
                    sources[(st.st_dev, st.st_ino)] = (inp.repo, inp.commit, got.path)
                    fetched += st.st_size
                continue
            if isinstance(inp.node, DirNode):
                entries = [(f.path, f) for f in self.client.walk_file(inp.repo, inp.commit, inp.path)]
            for path, entry in entries:
                local = base / path if path else base
                kind = (
                    entry.type if not isinstance(entry, (FileNode, DirNode, SymlinkNode, SpecialNode)) else _kind(entry)
                )
                if kind == "dir":
                    local.mkdir(parents=True, exist_ok=True)
                elif isinstance(entry, (SymlinkNode, FileInfo)) and kind == "symlink":
                    os.symlink(entry.target, local)
                elif kind != "file":
                    continue  # a FIFO, socket or device node: nothing to read
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
            local = self.out / f.path[len(prefix) + 1 :]
            if f.type == "dir":
                local.mkdir(parents=True, exist_ok=True)
            elif f.type == "symlink":
                os.symlink(f.target, local)
            else:
                with open(local, "wb") as out:
                    for piece in self.client.get_file(repo, t.previous, f.path):
                        out.write(piece)
                        fetched += len(piece)
            self.layout.give(local)
        return fetched

    def _base_env(self) -> dict[str, str]:
        """A command's environment: the documented variables and `transform.env`, with the
        locale and PATH, and nothing else of the worker's (never the daemon's token, PFS_HOME or
        object-store credentials)."""
        # Commands find this installation's python3 (and its packages) first on PATH.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        if self.pod is not None:
            return self.pod.env(self.spec.transform.env, self.root)
        kept = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("LC_")}
        home = self.home or str(self.scratch)
        return {**kept, "PATH": path, "HOME": home, **self.spec.transform.env, "PFS_ROOT": str(self.root)}

    def _run(self, t: DatumTask) -> tuple[bool, str, str, int]:
        """Run the command; returns whether it succeeded, why not, the tail of its output and the
        number of the tail's first line."""
        tf = self.spec.transform
        env = {**self._env, "PACH_JOB_ID": t.job, "PACH_OUTPUT_COMMIT_ID": t.output_commit}
        for inp in t.inputs:
            env[inp.name] = str(self.root / inp.name / inp.path) if inp.path else str(self.root / inp.name)
            env[f"{inp.name}_COMMIT"] = inp.commit
        stdin = "".join(line if line.endswith("\n") else line + "\n" for line in tf.stdin).encode()
        timeout = specs.duration(self.spec.datum_timeout) if self.spec.datum_timeout else None
        if self.pod is not None:
            live = LiveLog(self.pps, self.pipeline, self.name, t)
            ok, reason, output = self.pod.run(
                tf.cmd, env, tf.user, tf.working_dir, stdin, timeout, tf.accept_return_code, live.send, LIVE_EVERY
            )
            if reason == "timeout":
                reason = f"the command ran longer than datum_timeout {self.spec.datum_timeout}"
            self.stopping = self.stopping or self.pod.gone
            return (ok, reason, *_tail(output))
        try:
            proc = self.command = subprocess.Popen(
                tf.cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=tf.working_dir or self.home,  # not the daemon's, which the user may not enter
                env=env,
                start_new_session=True,
                **_identity(self.run_as),
            )
        except (OSError, ValueError) as e:
            return False, f"cannot run {tf.cmd[0]}: {e}", "", 0
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            output, in_time = _exchange(proc, stdin, deadline, LiveLog(self.pps, self.pipeline, self.name, t))
            if in_time:
                proc.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            in_time = False
        finally:
            self.command = None
        if not in_time:
            assert proc.stdin is not None and proc.stdout is not None  # both are pipes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.stdin.close()
            if not proc.stdout.closed:
                output += proc.stdout.read()
                proc.stdout.close()
            proc.wait()
            text, first = _tail(output)
            return False, f"the command ran longer than datum_timeout {self.spec.datum_timeout}", text, first
        text, first = _tail(output)
        if proc.returncode != 0 and proc.returncode not in tf.accept_return_code:
            how = f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
            hint = "; only /pfs/out is writable under /pfs" if "Read-only file system" in text else ""
            return False, f"the command failed ({how}){hint}", text, first
        return True, "", text, first

    def _outputs(self, t: DatumTask, out: Path, sources) -> tuple[list[WriteOp], int]:
        """Ops that store /pfs/out under the datum's key: links to inputs become references."""
        prefix = f"{t.key}/out"
        ops: list[WriteOp] = [Mkdir(prefix)]
        if t.fingerprint:
            ops.append(Put(f"{t.key}/fingerprint", stream=io.BytesIO(t.fingerprint.encode())))
            ops.append(incremental.record(t.key, t.inputs))
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
                    # A pod's emptyDir is not the daemon's to read, even beside it on one host.
                    data = (
                        {"stream": podworker.OpenedLater(local, str(out))} if self.layout.shared else {"local": local}
                    )
                    ops.append(Put(dest, executable=bool(st.st_mode & 0o111), **data))
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


class Reporter:
    """Saves each batch's outputs (each datum's with its key, in one atomic write) and reports the
    results, in a thread of its own so that the next batch runs meanwhile. One batch waits at most:
    `send` blocks while another is being saved."""

    def __init__(self, pipeline: str, worker: str):
        self.pipeline, self.worker = pipeline, worker
        self.client = connect(start=False)  # connections of its own: they are not shared
        self.pps = RemotePipelines(os.environ["PFS_ADDRESS"], self.client.token)
        self._batches: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="pfs-reporter")
        self._thread.start()

    def send(self, ops: dict[str, list[WriteOp]], results: list[DatumResult], done: Path) -> None:
        self._batches.put((ops, results, done))

    def close(self) -> None:
        """Once every batch sent is reported."""
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()

    def _loop(self) -> None:
        while (batch := self._batches.get()) is not None:
            ops, results, done = batch
            try:
                for commit, commit_ops in ops.items():
                    try:
                        self.client.write_files(meta_repo(self.pipeline), commit, commit_ops)
                    except (PfsError, OSError) as e:
                        results = [r if not r.ok else _failed(r, f"cannot save the output: {e}") for r in results]
                self.pps.datum_done(self.pipeline, self.worker, results)
            except PfsError as e:
                log.error("cannot report datums: %s", e)  # the daemon gives them to another worker
            finally:
                shutil.rmtree(done, ignore_errors=True)


class LiveLog:
    """A running command's output, sent to the daemon as complete lines while it runs."""

    def __init__(self, pps: RemotePipelines, pipeline: str, worker: str, t: DatumTask):
        self.pps, self.pipeline, self.worker, self.t = pps, pipeline, worker, t
        self.sent = 0  # bytes of output sent (up to the end of a line)
        self.lines = 0  # lines before that point

    def send(self, output: bytes | bytearray) -> None:
        end = output.rfind(b"\n") + 1
        if end <= self.sent:
            return
        new = output[self.sent : end]
        first = self.lines
        if len(new) > LOG_TAIL:  # bounded: the tail only, from a line's start
            skip = new.find(b"\n", len(new) - LOG_TAIL) + 1
            first += new.count(b"\n", 0, skip)
            new = new[skip:]
        self.lines += output.count(b"\n", self.sent, end)
        self.sent = end
        try:
            self.pps.datum_log(
                self.pipeline, self.worker, self.t.job, self.t.key, self.t.try_, first, new.decode(errors="replace")
            )
        except PfsError as e:
            log.warning("cannot send a live log: %s", e)  # the whole log goes with the result


def _exchange(proc: subprocess.Popen, stdin: bytes, deadline: float | None, live: LiveLog) -> tuple[bytes, bool]:
    """Like `communicate`, and the output so far goes to `live` every LIVE_EVERY seconds; returns
    the output and whether that was before the deadline. (communicate with a timeout would wait
    for the exit with sleeps.)"""
    assert proc.stdin is not None and proc.stdout is not None  # both are pipes
    out, out_fd = bytearray(), proc.stdout.fileno()
    poller = select.poll()
    streams = {out_fd: proc.stdout}
    poller.register(proc.stdout, select.POLLIN)
    todo = memoryview(stdin)
    if todo:
        os.set_blocking(proc.stdin.fileno(), False)
        streams[proc.stdin.fileno()] = proc.stdin
        poller.register(proc.stdin, select.POLLOUT)
    else:
        proc.stdin.close()
    update = time.monotonic() + LIVE_EVERY
    while streams:
        until = update if deadline is None else min(update, deadline)
        for fd, _ in poller.poll(max(until - time.monotonic(), 0) * 1000):
            piece: bytes | memoryview
            if fd == out_fd:
                piece = os.read(fd, 1 << 16)
                out += piece
            else:
                try:
                    todo = todo[os.write(fd, todo[: select.PIPE_BUF]) :]
                except BrokenPipeError:
                    todo = todo[:0]  # the command does not read it all: as communicate, fine
                piece = todo
            if not piece:
                poller.unregister(fd)
                streams.pop(fd).close()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return bytes(out), False
        if now >= update:
            live.send(out)
            update = now + LIVE_EVERY
    return bytes(out), True


def _empty(directory: Path, keep: str = "") -> None:
    for entry in os.scandir(directory):
        if entry.name == keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _kind(node) -> str:
    if isinstance(node, SpecialNode):
        return node.kind
    return "dir" if isinstance(node, DirNode) else "symlink" if isinstance(node, SymlinkNode) else "file"


def _tail(output: bytes | None) -> tuple[str, int]:
    """The output's last LOG_TAIL bytes, from a line's start, and the number of that line."""
    output = output or b""
    start = 0
    if len(output) > LOG_TAIL:
        start = output.find(b"\n", len(output) - LOG_TAIL) + 1 or len(output) - LOG_TAIL
    return output[start:].decode(errors="replace"), output.count(b"\n", 0, start)


def _failed(r: DatumResult, reason: str) -> DatumResult:
    import msgspec

    return msgspec.structs.replace(r, ok=False, reason=reason)


def _identity(run_as: RunAs | None) -> dict:
    """Popen's arguments that run the command as `run_as`."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}


def main() -> None:
    pipeline, name = sys.argv[1], sys.argv[2]
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a worker ends with its daemon
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")
    # The datum's files are readable by the user the command runs as (the scratch directory, in
    # the daemon's PFS_HOME, is not: its files are reached through /pfs only).
    os.umask(0o022)
    scratch = Home().path / "workers" / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        worker = Worker(pipeline, name, scratch)
    except (PfsError, OSError) as e:
        log.error("cannot start: %s", e)
        sys.exit(1)

    def stop(*_):
        # Waiting for work: go now. Running a datum: end its command, report it, then go. (In a
        # pod the command runs on: the pod's grace period is for it to finish.)
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
        worker.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
