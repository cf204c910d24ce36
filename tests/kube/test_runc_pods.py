"""End to end, as root: `pfs serve --executor kubernetes` over a store in moto's S3, against the
fake API server, with a kubelet that runs the worker pods for real (runckubelet.py): runc
containers from a busybox rootfs without Python run the beginner tutorial's pipelines (in shell:
busybox cannot run OpenCV) through the static launcher, reading /pfs from the worker sidecar's FUSE
file system through mount propagation."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeApi
from runckubelet import RuncKubelet, build_images, missing

from helpers import BUCKET, Daemon, wait_for
from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import NotFound
from pfsfuse.metadata.records import CommitRef
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.fuse]

IMAGES = {"liberty.png": b"the statue of liberty\n", "kitten.png": b"a small kitten sat\n", "sf.png": b"fog\n"}
# The tutorial's edges (OpenCV) and montage (ImageMagick), as a busybox image can run them.
EDGES = {
    "pipeline": {"name": "edges"},
    "transform": {
        "image": "pachyderm/opencv",
        "cmd": ["sh"],
        "stdin": [
            'for f in /pfs/images/*; do tr a-z A-Z < "$f" > /pfs/out/"$(basename "$f")"; echo "edged $f"; done',
            "test ! -e /usr/bin/python3 && echo no python here",
        ],
    },
    "input": {"atom": {"repo": "images", "glob": "/*"}},
}
# Each datum's command writes its bounding capabilities (CapBnd) to /pfs/out/caps/NAME.
CAPS = (
    "mkdir -p /pfs/out/caps; "
    'for f in /pfs/images/*; do grep CapBnd /proc/self/status > /pfs/out/caps/"$(basename "$f")"; done'
)
MONTAGE = {
    "pipeline": {"name": "montage"},
    "transform": {
        "image": "v4tech/imagemagick",
        "cmd": ["sh"],
        "stdin": [
            "find /pfs/images /pfs/edges -type f | sort | xargs cat > /pfs/out/montage",
            "cat /pfs/images/* /pfs/edges/* | wc -w > /pfs/out/words",
        ],
    },
    "input": {"cross": [{"atom": {"repo": "images", "glob": "/"}}, {"atom": {"repo": "edges", "glob": "/"}}]},
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    why = missing()
    if why:
        pytest.skip(f"cannot run pods with runc: {why}")
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def cluster(request, images, tmp_home: Path, moto) -> Iterator[tuple[FakeApi, Daemon]]:
    fuse_mode = getattr(request, "param", "privileged")
    with FakeApi() as api:
        home = tmp_home / "home"
        storage = f"s3://{BUCKET}/t-{home.name}-{id(api):x}/objects?endpoint={moto.url}"
        daemon = Daemon(home, ["--executor", "kubernetes", "--storage", storage])
        daemon.env = {
            **daemon.env,
            "KUBECONFIG": api.kubeconfig(tmp_home / "kubeconfig"),
            "PFS_KUBE_NAMESPACE": "default",
            "PFS_KUBE_FUSE_MODE": fuse_mode,
        }
        daemon.env.pop("KUBERNETES_SERVICE_HOST", None)
        run = {"PFS_ADDRESS": f"unix:{home}/pfs.sock"}
        with RuncKubelet(api, tmp_home / "pods", run, images):
            try:
                daemon.start()
                # As `pfs deploy` makes it: store.json and the credentials, for the sidecar alone.
                store = {"store.json": (home / "store.json").read_text(), "AWS_ENDPOINT_URL": moto.url}
                store |= dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "testing")
                api.create("secrets", "default", _secret("pfs-storage", store))
                yield api, daemon
            finally:
                try:
                    daemon.stop()
                finally:
                    daemon.kill()


def _secret(name: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": encoded}


def test_the_beginner_tutorial_runs_in_runc_pods(cluster):
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("images")
        c = client.write_files("images", "master", [Put(p, stream=io.BytesIO(d)) for p, d in IMAGES.items()]).commit
        pps.create_pipeline(specs.parse(json.dumps(EDGES)))
        pps.create_pipeline(specs.parse(json.dumps(MONTAGE)))
        jobs = pps.flush_job([CommitRef("images", c)])
        assert {j.pipeline for j in jobs} == {"edges", "montage"}
        assert all(j.state == "success" for j in jobs), [
            (d.reason, d.log) for j in jobs for d in pps.list_datum(j.id)
        ] + list(api.logs.values())
        for name, data in IMAGES.items():
            assert b"".join(client.get_file("edges", "master", name)) == data.upper()
        montage = b"".join(client.get_file("montage", "master", "montage"))
        # sorted paths: /pfs/edges/... before /pfs/images/...
        assert montage == b"".join(IMAGES[n].upper() for n in sorted(IMAGES)) + b"".join(
            IMAGES[n] for n in sorted(IMAGES)
        )
        words = sum(len(d.split()) for d in IMAGES.values()) * 2
        assert b"".join(client.get_file("montage", "master", "words")).strip() == str(words).encode()
        [edges] = [j for j in jobs if j.pipeline == "edges"]
        logs = [d.log for d in pps.list_datum(edges.id)]
        assert all("no python here" in log for log in logs), logs
        assert sorted(line for log in logs for line in log.splitlines() if line.startswith("edged")) == sorted(
            f"edged /pfs/images/{n}" for n in IMAGES
        )
        info = daemon.pfs("inspect-pipeline", "edges").stdout.decode()
        assert "kubernetes (namespace default, fuse mode privileged)" in info
        assert "pachyderm/opencv\n" in info and "not pulled" not in info
        # The pods ran the user's image with the launcher, beside the privileged worker sidecar.
        pods = api.list("pods", "default", "pfs.io/pipeline=edges")
        assert pods and pods[0]["spec"]["containers"][0]["command"] == ["/pfs-bin/launcher"]
        pps.delete_pipeline("montage")
        pps.delete_pipeline("edges")
        wait_for(lambda: not api.list("pods", "default"), what="the worker pods to go")
    finally:
        pps.close()
        client.close()


def test_user_timeout_and_failures_in_runc_pods(cluster):
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("in")
        c = client.write_files("in", "master", [Put("a", stream=io.BytesIO(b"x"))]).commit
        atom = {"atom": {"repo": "in", "glob": "/*"}}
        # transform.user as numeric ids: the command runs as them and owns /pfs/out.
        who = {
            "image": "busybox",
            "cmd": ["sh", "-c", "id -u > /pfs/out/uid; id -g > /pfs/out/gid"],
            "user": "1000:1001",
        }
        pps.create_pipeline(specs.parse(json.dumps({"pipeline": {"name": "who"}, "transform": who, "input": atom})))
        stuck = {"image": "busybox", "cmd": ["sh", "-c", "echo started; sleep 600"]}
        raw = {
            "pipeline": {"name": "stuck"},
            "transform": stuck,
            "input": atom,
            "datum_timeout": "2s",
            "datum_tries": 1,
        }
        pps.create_pipeline(specs.parse(json.dumps(raw)))
        named = {"image": "busybox", "cmd": ["true"], "user": "nobody"}
        raw = {"pipeline": {"name": "named"}, "transform": named, "input": atom, "datum_tries": 1}
        pps.create_pipeline(specs.parse(json.dumps(raw)))
        missing = {"image": "busybox", "cmd": ["python3", "-c", "print(1)"]}
        raw = {"pipeline": {"name": "nopy"}, "transform": missing, "input": atom, "datum_tries": 1}
        pps.create_pipeline(specs.parse(json.dumps(raw)))
        jobs = {j.pipeline: j for j in pps.flush_job([CommitRef("in", c)])}
        assert jobs["who"].state == "success", [d.reason for d in pps.list_datum(jobs["who"].id)]
        assert b"".join(client.get_file("who", "master", "uid")) == b"1000\n"
        assert b"".join(client.get_file("who", "master", "gid")) == b"1001\n"
        [d] = pps.list_datum(jobs["stuck"].id)
        assert jobs["stuck"].state == "failure" and "datum_timeout 2s" in d.reason and "started" in d.log
        [d] = pps.list_datum(jobs["named"].id)
        assert jobs["named"].state == "failure" and "numeric UID" in d.reason
        [d] = pps.list_datum(jobs["nopy"].id)
        assert jobs["nopy"].state == "failure" and "python3" in d.reason, d.reason
    finally:
        pps.close()
        client.close()


def test_live_logs_and_a_user_container_that_dies(cluster):
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("in")
        c = client.write_files("in", "master", [Put("a", stream=io.BytesIO(b"x"))]).commit
        tf = {"image": "busybox", "cmd": ["sh", "-c", "echo begun; sleep 4; echo ok > /pfs/out/x"]}
        raw = {"pipeline": {"name": "live"}, "transform": tf, "input": {"atom": {"repo": "in", "glob": "/*"}}}
        pps.create_pipeline(specs.parse(json.dumps(raw)))

        def begun() -> bool:
            return any(line.message == "begun" for line in pps.get_logs(pipeline="live"))

        # get-logs shows a running datum's output, as the launcher streams it.
        wait_for(begun, what="the running command's output in get-logs")
        [job] = pps.list_job("live")
        assert job.state in ("starting", "running")
        [pod] = api.list("pods", "default", "pfs.io/pipeline=live")
        first = pod["metadata"]["name"]
        # The user container dies mid-datum: the pod ends, another replaces it, the datum is retried.
        runc = daemon.home.parent / "pods" / "runc"
        subprocess.run(["runc", "--root", str(runc), "kill", f"{first}-user", "KILL"], check=True)
        [job] = pps.flush_job([CommitRef("in", c)])
        assert job.state == "success"
        assert b"".join(client.get_file("live", "master", "x")) == b"ok\n"
        [datum] = pps.list_datum(job.id)
        assert datum.tries == 2
        assert first not in [p["metadata"]["name"] for p in api.list("pods", "default", "pfs.io/pipeline=live")]
    finally:
        pps.close()
        client.close()


@pytest.mark.parametrize("cluster", ["device-plugin"], indirect=True)
def test_the_device_plugin_mode_passes_the_fuse_descriptor(cluster):
    """The launcher mounts /dev/fuse at /pfs in the user container and passes the descriptor to
    the sidecar, which has no capability at all and serves it; the commands run without
    CAP_SYS_ADMIN."""
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("images")
        c = client.write_files("images", "master", [Put(p, stream=io.BytesIO(d)) for p, d in IMAGES.items()]).commit
        edges = {**EDGES, "transform": {**EDGES["transform"], "stdin": [*EDGES["transform"]["stdin"], CAPS]}}
        pps.create_pipeline(specs.parse(json.dumps(edges)))
        [job] = pps.flush_job([CommitRef("images", c)])
        assert job.state == "success", [(d.reason, d.log) for d in pps.list_datum(job.id)] + list(api.logs.values())
        for name, data in IMAGES.items():
            assert b"".join(client.get_file("edges", "master", name)) == data.upper()
        caps = {int(b"".join(client.get_file("edges", "master", f"caps/{n}")).split()[1], 16) for n in IMAGES}
        assert caps and all(not cap & (1 << 21) for cap in caps), caps  # CAP_SYS_ADMIN is bit 21
        for pod in api.list("pods", "default", "pfs.io/pipeline=edges"):
            sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "pfs-worker")
            assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert "startupProbe" not in sidecar
        pps.delete_pipeline("edges")
    finally:
        pps.close()
        client.close()


@pytest.mark.parametrize("cluster", ["copy"], indirect=True)
def test_the_copy_mode_lays_out_each_datum_without_fuse(cluster):
    """No FUSE and no capability anywhere: the sidecar copies each datum's inputs into the
    emptyDir the user's container sees at /pfs (lazy ones as named pipes), and uploads /pfs/out,
    whoever the command wrote it as."""
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("images")
        c = client.write_files("images", "master", [Put(p, stream=io.BytesIO(d)) for p, d in IMAGES.items()]).commit
        pps.create_pipeline(specs.parse(json.dumps(EDGES)))
        pps.create_pipeline(specs.parse(json.dumps(MONTAGE)))
        # Another user's files in a directory of its own, a lazy input read through its pipes.
        mounts = "grep ' /pfs ' /proc/self/mounts > /pfs/out/mounts"
        lines = ["mkdir -p /pfs/out/d/e && cat /pfs/images/* > /pfs/out/d/e/all && id -u > /pfs/out/uid", CAPS, mounts]
        tf = {"image": "busybox", "cmd": ["sh"], "stdin": lines, "user": "1000:1001"}
        lazy = {"atom": {"repo": "images", "glob": "/", "lazy": True}}
        pps.create_pipeline(specs.parse(json.dumps({"pipeline": {"name": "who"}, "transform": tf, "input": lazy})))
        # /pfs/out swapped for a symlink into the sidecar's own files (its environment holds the
        # store's credentials): the datum fails, nothing is read through it.
        swap = {"image": "busybox", "cmd": ["sh", "-c", "rm -rf /pfs/out && ln -s /proc/self /pfs/out"]}
        raw = {"pipeline": {"name": "swap"}, "transform": swap, "input": lazy, "datum_tries": 1}
        pps.create_pipeline(specs.parse(json.dumps(raw)))
        # A FIFO left in /pfs/out is refused, not waited on.
        fifo = {"image": "busybox", "cmd": ["mkfifo", "/pfs/out/fifo"]}
        raw = {"pipeline": {"name": "fifo"}, "transform": fifo, "input": lazy, "datum_tries": 1}
        pps.create_pipeline(specs.parse(json.dumps(raw)))
        jobs = pps.flush_job([CommitRef("images", c)])
        assert {j.pipeline for j in jobs} == {"edges", "montage", "who", "swap", "fifo"}
        failing = {j.pipeline: j for j in jobs if j.pipeline in ("swap", "fifo")}
        for name, why in (("swap", "replaced /pfs/out"), ("fifo", "not a regular file")):
            [d] = pps.list_datum(failing[name].id)
            assert failing[name].state == "failure" and why in d.reason, d.reason
            with pytest.raises(NotFound):  # no output commit at all
                client.walk_file(name, "master")
        jobs = [j for j in jobs if j.pipeline not in failing]
        assert all(j.state == "success" for j in jobs), [
            (d.reason, d.log) for j in jobs for d in pps.list_datum(j.id)
        ] + list(api.logs.values())
        for name, data in IMAGES.items():
            assert b"".join(client.get_file("edges", "master", name)) == data.upper()
        montage = b"".join(client.get_file("montage", "master", "montage"))
        assert montage == b"".join(IMAGES[n].upper() for n in sorted(IMAGES)) + b"".join(
            IMAGES[n] for n in sorted(IMAGES)
        )
        assert b"".join(client.get_file("who", "master", "d/e/all")) == b"".join(IMAGES[n] for n in sorted(IMAGES))
        assert b"".join(client.get_file("who", "master", "uid")) == b"1000\n"
        shown = b"".join(client.get_file("who", "master", "mounts"))
        assert shown and b"fuse" not in shown, shown
        caps = {int(b"".join(client.get_file("who", "master", f"caps/{n}")).split()[1], 16) for n in IMAGES}
        assert caps and all(not cap & (1 << 21) for cap in caps), caps  # CAP_SYS_ADMIN is bit 21
        for pod in api.list("pods", "default", "pfs.io/pipeline=who"):
            sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "pfs-worker")
            assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert not sidecar["securityContext"].get("privileged")
            # The saved outputs are gone from the emptyDir, the other user's directories too.
            done = daemon.home.parent / "pods" / pod["metadata"]["name"] / "volumes" / "pfs" / "done"
            wait_for(lambda d=done: not any(d.rglob("*")), what="the saved outputs to be cleared")
        info = daemon.pfs("inspect-pipeline", "edges").stdout.decode()
        assert "fuse mode copy" in info
        for name in ("fifo", "swap", "who", "montage", "edges"):
            pps.delete_pipeline(name)
    finally:
        pps.close()
        client.close()


def test_a_stopping_pod_finishes_its_datum_first(cluster):
    """Kubernetes stops a pod (a drain, an eviction): SIGTERM to the user container, whose
    launcher tells the worker. The running datum finishes and its output is saved, the worker
    takes no more datums and ends well, and those it held go to the next pod untried."""
    api, daemon = cluster
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        client.create_repo("in")
        files = {n: n.encode() * 3 for n in ("a", "b", "c")}
        c = client.write_files("in", "master", [Put(p, stream=io.BytesIO(d)) for p, d in files.items()]).commit
        tf = {"image": "busybox", "cmd": ["sh", "-c", 'echo "begun $(ls /pfs/in)"; sleep 3; cp /pfs/in/* /pfs/out/']}
        raw = {
            "pipeline": {"name": "drain"},
            "transform": tf,
            "input": {"atom": {"repo": "in", "glob": "/*"}},
            "parallelism_spec": {"constant": 1},
            "datum_timeout": "30s",
            "datum_tries": 1,  # a datum given back as a failed try would fail the job
        }
        pps.create_pipeline(specs.parse(json.dumps(raw)))

        def begun() -> list:
            return [line for line in pps.get_logs(pipeline="drain") if line.message.startswith("begun")]

        wait_for(begun, what="a datum to begin")
        [first] = begun()
        [pod] = api.list("pods", "default", "pfs.io/pipeline=drain")
        assert pod["spec"]["terminationGracePeriodSeconds"] == 60  # datum_timeout and a margin
        stopped_at = time.time()
        api.delete("pods", "default", pod["metadata"]["name"])  # graceful, as a drain does
        [job] = pps.flush_job([CommitRef("in", c)])
        datums = pps.list_datum(job.id)
        assert job.state == "success", [(d.reason, d.log) for d in datums] + list(api.logs.values())
        for name, data in files.items():
            assert b"".join(client.get_file("drain", "master", name)) == data
        assert len(datums) == 3 and all(d.tries == 1 for d in datums), [(d.key, d.tries) for d in datums]
        # The datum running at the SIGTERM ran to its end in the first pod, and never again.
        [interrupted] = [d for d in datums if d.key == first.datum]
        assert interrupted.started < stopped_at < interrupted.finished
        later = [p["metadata"]["name"] for p in api.list("pods", "default", "pfs.io/pipeline=drain")]
        assert pod["metadata"]["name"] not in later
    finally:
        pps.close()
        client.close()
