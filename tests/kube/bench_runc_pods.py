"""Worker pods against local workers, side by side (as root; needs what test_runc_pods.py needs):

    .venv/bin/python tests/kube/bench_runc_pods.py [--runs 3] [--datums 1000]

The same daemon and data, once with the local executor (worker processes here) and once with the
Kubernetes executor against the fake API server and runckubelet.py (runc pods of a busybox rootfs,
the worker sidecar running each datum through the launcher). Figures are medians over the runs,
with their range, and the ratio pods / local:
    first datum   create-pipeline over one file until its job succeeds (a pod: the runc
                  containers, the sidecar's start and FUSE mount, the launcher's connection)
    per datum     (the time for N trivial datums (`true`) - the time for one) / (N - 1), one worker
It lives with the tests because the fake API server and the runc kubelet are test fixtures.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from fakeapi import FakeApi  # noqa: E402
from runckubelet import RuncKubelet, build_images, missing  # noqa: E402

from helpers import Daemon  # noqa: E402
from pfsfuse.api.types import Put  # noqa: E402
from pfsfuse.metadata.records import CommitRef  # noqa: E402
from pfsfuse.scheduler import spec as specs  # noqa: E402
from pfsfuse.scheduler.api import RemotePipelines  # noqa: E402


def _pipeline(name: str, repo: str) -> specs.PipelineSpec:
    raw = {
        "pipeline": {"name": name},
        "transform": {"image": "busybox", "cmd": ["true"]},
        "input": {"atom": {"repo": repo, "glob": "/*"}},
        "parallelism_spec": {"constant": 1},
    }
    return specs.parse(json.dumps(raw))


def measure(daemon: Daemon, runs: int, datums: int) -> dict[str, list[float]]:
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    out: dict[str, list[float]] = {"first datum (s)": [], "per datum (ms)": []}
    try:
        client.create_repo("one")
        one = client.write_files("one", "master", [Put("f", stream=io.BytesIO(b"x"))]).commit
        client.create_repo("many")
        puts = [Put(f"f{i:05}", stream=io.BytesIO(b"x")) for i in range(datums)]
        many = client.write_files("many", "master", puts).commit
        for run in range(runs):
            t1 = _job(pps, _pipeline(f"one{run}", "one"), CommitRef("one", one))
            tn = _job(pps, _pipeline(f"many{run}", "many"), CommitRef("many", many))
            out["first datum (s)"].append(t1)
            out["per datum (ms)"].append((tn - t1) / (datums - 1) * 1000)
    finally:
        pps.close()
        client.close()
    return out


def _job(pps: RemotePipelines, spec: specs.PipelineSpec, commit: CommitRef) -> float:
    started = time.monotonic()
    pps.create_pipeline(spec)
    [job] = pps.flush_job([commit], [spec.name])
    took = time.monotonic() - started
    if job.state != "success":
        raise SystemExit(f"{spec.name}: the job ended {job.state}")
    pps.delete_pipeline(spec.name)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--datums", type=int, default=1000)
    args = ap.parse_args()
    why = missing()
    if why:
        raise SystemExit(f"cannot run pods with runc: {why}")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="pfs-bench-", dir="/tmp") as tmp, ExitStack() as stack:
        work = Path(tmp)
        images = build_images(work / "images")
        for executor in ("local", "kubernetes"):
            home = work / executor / "home"
            daemon = Daemon(home, ["--executor", executor])
            if executor == "kubernetes":
                api = stack.enter_context(FakeApi())
                daemon.env = {
                    **daemon.env,
                    "KUBECONFIG": api.kubeconfig(work / "kubeconfig"),
                    "PFS_KUBE_NAMESPACE": "default",
                }
                run = {"PFS_ADDRESS": f"unix:{home}/pfs.sock"}
                stack.enter_context(RuncKubelet(api, work / "pods", run, images))
            daemon.env.pop("KUBERNETES_SERVICE_HOST", None)
            daemon.start()
            try:
                figures[executor] = measure(daemon, args.runs, args.datums)
            finally:
                daemon.stop()
    print(f"{'figure':18} {'local':>22} {'pods':>22} {'pods/local':>10}   ({args.runs} runs, {args.datums} datums)")
    for name in figures["local"]:
        local, pods = figures["local"][name], figures["kubernetes"][name]
        ml, mp = statistics.median(local), statistics.median(pods)
        print(f"{name:18} {_cell(local):>22} {_cell(pods):>22} {mp / ml:>9.2f}x")


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
