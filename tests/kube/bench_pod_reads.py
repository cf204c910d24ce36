"""The aggregate read rate of worker pods reading straight from the object store, against reading
through pfsd (as root; needs what test_runc_pods.py needs):

    .venv/bin/python tests/kube/bench_pod_reads.py [--runs 3] [--pods 4] [--mib 64] [--fuse-mode privileged]

pfsd listens on TCP over a store in moto's S3, with the Kubernetes executor against the fake API
server and runckubelet.py (runc pods of a busybox rootfs). A repo holds one file of MIB random MiB
per pod; a pipeline with that parallelism gives each pod one file to read (`cat | wc -c` in the
user's container, through the pod's /pfs). Direct: the worker sidecars have the storage Secret
(`PFS_STORE_DIR`, as `pfs deploy` mounts it) and read the chunks from moto themselves; through
pfsd: the same pods without it, so pfsd reads and sends every byte. Each run reads new random
data (no cache, pfsd's or a pod's, has seen it), alternating which way goes first. Printed,
medians over the runs with their range, and the ratio direct / through pfsd:
    aggregate MB/s   the bytes read by all pods / (the last datum's end - the first one's start)
    per pod MB/s     each datum's bytes / its time (its inputs shown, its command run)
    pfsd served MB   what pfsd's /traffic counter says it sent, all pods together
It lives with the tests because the fake API server and the runc kubelet are test fixtures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from fakeapi import FakeApi  # noqa: E402
from runckubelet import RuncKubelet, build_images, missing  # noqa: E402

from helpers import BUCKET, Daemon, Emulator, free_port, wait_for  # noqa: E402
from pfsfuse.api.types import Put  # noqa: E402
from pfsfuse.metadata.records import CommitRef  # noqa: E402
from pfsfuse.scheduler import spec as specs  # noqa: E402
from pfsfuse.scheduler.api import RemotePipelines  # noqa: E402

WAYS = ("direct", "through pfsd")
MB = 1e6


def _pipeline(name: str, pods: int) -> specs.PipelineSpec:
    raw = {
        "pipeline": {"name": name},
        "transform": {"image": "busybox", "cmd": ["sh", "-c", 'cat /pfs/big/* | wc -c > "/pfs/out/$(ls /pfs/big)"']},
        "input": {"atom": {"repo": "big", "glob": "/*"}},
        "parallelism_spec": {"constant": pods},
    }
    return specs.parse(json.dumps(raw))


def _secret(name: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "data": encoded}


def measure(daemon: Daemon, api: FakeApi, kubelet: RuncKubelet, args, tcp: str) -> dict[str, dict[str, list[float]]]:
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    out = {way: {"aggregate MB/s": [], "per pod MB/s": [], "pfsd served MB": []} for way in WAYS}
    size = args.mib << 20
    try:
        client.create_repo("big")
        for run in range(args.runs):
            for way in WAYS if run % 2 == 0 else reversed(WAYS):
                # Fresh data each time: no cache (pfsd's, the pods') has seen it.
                puts = [Put(f"share{i}", stream=_Limited(open("/dev/urandom", "rb"), size)) for i in range(args.pods)]
                commit = client.write_files("big", "master", puts).commit
                # The sidecars' environment: TCP to pfsd, and the storage Secret or not.
                kubelet.run = {"PFS_ADDRESS": tcp, **({} if way == "direct" else {"PFS_STORE_DIR": ""})}
                name = f"read{run}{'d' if way == 'direct' else 'p'}"
                before = client.traffic().served
                pps.create_pipeline(_pipeline(name, args.pods))
                [job] = pps.flush_job([CommitRef("big", commit)], [name])
                served = client.traffic().served - before
                datums = pps.list_datum(job.id)
                if job.state != "success":
                    raise SystemExit(f"{name}: the job ended {job.state}: {[d.reason for d in datums]}")
                for d in datums:
                    [share] = [os.path.basename(i.path) for i in d.inputs]
                    read = int(b"".join(client.get_file(name, "master", share)))
                    if read != size:
                        raise SystemExit(f"{name}: a pod read {read} bytes of {share}, not {size}")
                span = max(d.finished for d in datums) - min(d.started for d in datums)
                out[way]["aggregate MB/s"].append(size * len(datums) / span / MB)
                out[way]["per pod MB/s"].append(statistics.median(size / (d.finished - d.started) / MB for d in datums))
                out[way]["pfsd served MB"].append(served / MB)
                pps.delete_pipeline(name)
                wait_for(lambda: not api.list("pods", "default"), timeout=120, what="the worker pods to go")
    finally:
        pps.close()
        client.close()
    return out


class _Limited:
    """The first `size` bytes of a stream."""

    def __init__(self, stream, size: int):
        self.stream, self.left = stream, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        if not data:
            self.stream.close()
        return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64, help="MiB each pod reads")
    ap.add_argument("--fuse-mode", default="privileged", choices=("privileged", "copy"))
    args = ap.parse_args()
    why = missing()
    if why:
        raise SystemExit(f"cannot run pods with runc: {why}")
    os.environ |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    os.environ.pop("AWS_PROFILE", None)
    with tempfile.TemporaryDirectory(prefix="pfs-bench-", dir="/tmp") as tmp, ExitStack() as stack:
        work = Path(tmp)
        import boto3

        moto = Emulator.moto(work).start()
        stack.callback(moto.stop)
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        images = build_images(work / "images")
        home, port = work / "home", free_port()
        storage = f"s3://{BUCKET}/bench?endpoint={moto.url}&region=us-east-1"
        listen = ["--listen", f"127.0.0.1:{port}", "--insecure"]
        daemon = Daemon(home, ["--executor", "kubernetes", "--storage", storage, *listen])
        api = stack.enter_context(FakeApi())
        daemon.env = {
            **daemon.env,
            "KUBECONFIG": api.kubeconfig(work / "kubeconfig"),
            "PFS_KUBE_NAMESPACE": "default",
            "PFS_KUBE_FUSE_MODE": args.fuse_mode,
        }
        daemon.env.pop("KUBERNETES_SERVICE_HOST", None)
        kubelet = stack.enter_context(RuncKubelet(api, work / "pods", {}, images))
        daemon.start()
        try:
            # As `pfs deploy` makes it: store.json and the credentials, for the sidecar alone.
            store = {"store.json": (home / "store.json").read_text(), "AWS_ENDPOINT_URL": moto.url}
            store |= dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "testing")
            api.create("secrets", "default", _secret("pfs-storage", store))
            figures = measure(daemon, api, kubelet, args, f"127.0.0.1:{port}")
        finally:
            try:
                daemon.stop()
            finally:
                daemon.kill()
    print(
        f"{'figure':16} {'direct':>24} {'through pfsd':>24} {'ratio':>7}   "
        f"({args.runs} runs, {args.pods} pods x {args.mib} MiB, fuse mode {args.fuse_mode})"
    )
    for name in figures["direct"]:
        direct, proxied = figures["direct"][name], figures["through pfsd"][name]
        md, mp = statistics.median(direct), statistics.median(proxied)
        ratio = f"{md / mp:>6.2f}x" if mp else "     -"
        print(f"{name:16} {_cell(direct):>24} {_cell(proxied):>24} {ratio}")


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


if __name__ == "__main__":
    main()
