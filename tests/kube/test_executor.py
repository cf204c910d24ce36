"""The Kubernetes executor, in a real daemon, against the fake API server and the kubelet
simulator: pipelines run in worker pods, pods are scaled, replaced, rolled, removed and adopted,
and what goes wrong with them is the pipeline's state, in one line."""

from __future__ import annotations

import io
import signal

import pytest

from helpers import wait_for
from pfsfuse.api.types import Put
from pfsfuse.metadata.records import CommitRef
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines


def spec(name, image="busybox", stdin=("cp -r /pfs/in/* /pfs/out/",), **extra) -> specs.PipelineSpec:
    raw = {
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh"], "stdin": list(stdin), "image": image},
        "input": {"atom": {"repo": "in", "glob": "/*"}},
        **extra,
    }
    import json

    return specs.parse(json.dumps(raw))


@pytest.fixture
def pfs(request):
    cluster = request.getfixturevalue(request.param if hasattr(request, "param") else "cluster")
    client = cluster.daemon.client()
    pps = RemotePipelines(f"unix:{cluster.daemon.home}/pfs.sock")
    client.create_repo("in")
    try:
        yield cluster, client, pps
    finally:
        pps.close()
        client.close()


def put(client, files: dict[str, bytes]) -> str:
    return client.write_files("in", "master", [Put(p, stream=io.BytesIO(d)) for p, d in files.items()]).commit


def test_a_pipeline_runs_in_worker_pods(pfs):
    cluster, client, pps = pfs
    c = put(client, {f"f{i}": b"%d" % i for i in range(6)})
    pps.create_pipeline(spec("copy", parallelism_spec={"constant": 2}))
    [job] = pps.flush_job([CommitRef("in", c)])
    assert job.state == "success" and job.processed == 6, [d.log for d in pps.list_datum(job.id)]
    assert sorted(f.path for f in client.list_file("copy", "master")) == [f"f{i}" for i in range(6)]
    [cm] = cluster.api.list("configmaps", "default", "pfs.io/pipeline=copy")
    pods = cluster.pods("copy")
    assert 1 <= len(pods) <= 2
    for pod in pods:
        assert pod["metadata"]["ownerReferences"][0]["uid"] == cm["metadata"]["uid"]
        assert pod["metadata"]["labels"]["pfs.io/version"] == "1"
        assert pod["spec"]["containers"][0]["image"] == "busybox"


def test_a_deleted_pod_is_replaced_and_its_datum_retried(pfs, tmp_path):
    cluster, client, pps = pfs
    go, began = tmp_path / "go", tmp_path / "began"
    c = put(client, {"a": b"1"})
    pps.create_pipeline(
        spec("victim", stdin=[f"touch {began}; while [ ! -e {go} ]; do sleep 0.05; done; cp /pfs/in/* /pfs/out/"])
    )
    wait_for(began.exists, what="the datum's command to start")
    [pod] = cluster.pods("victim")
    cluster.api.delete("pods", "default", pod["metadata"]["name"])  # as `kubectl delete pod` does
    wait_for(
        lambda: [p for p in cluster.pods("victim") if p["metadata"]["name"] != pod["metadata"]["name"]],
        what="a new worker pod",
    )
    go.touch()
    [job] = pps.flush_job([CommitRef("in", c)])
    assert job.state == "success"
    assert b"".join(client.get_file("victim", "master", "a")) == b"1"
    [datum] = pps.list_datum(job.id)
    assert datum.tries == 2


def test_a_lost_node_moves_the_work(pfs, tmp_path):
    cluster, client, pps = pfs
    go, began = tmp_path / "go", tmp_path / "began"
    c = put(client, {"a": b"1"})
    pps.create_pipeline(
        spec("roam", stdin=[f"touch {began}; while [ ! -e {go} ]; do sleep 0.05; done; cp /pfs/in/* /pfs/out/"])
    )
    wait_for(began.exists, what="the datum's command to start")
    [pod] = cluster.pods("roam")
    began.unlink()
    cluster.kubelet.lose_node(pod["spec"]["nodeName"])
    wait_for(began.exists, what="the datum to start again elsewhere")
    go.touch()
    [job] = pps.flush_job([CommitRef("in", c)])
    assert job.state == "success"
    [now] = cluster.pods("roam")
    assert now["spec"]["nodeName"] != pod["spec"]["nodeName"]


def test_update_rolls_the_pods_and_stop_and_delete_remove_them(pfs):
    cluster, client, pps = pfs
    c = put(client, {"a": b"1"})
    pps.create_pipeline(spec("roll"))
    pps.flush_job([CommitRef("in", c)])
    wait_for(lambda: len(cluster.pods("roll")) == 1, what="one worker pod")
    pps.create_pipeline(spec("roll", stdin=["echo v2 > /pfs/out/v"]), update=True)
    wait_for(
        lambda: [p["metadata"]["labels"]["pfs.io/version"] for p in cluster.pods("roll")] == ["2"],
        what="the pods of version 1 to go and one of version 2 to come",
    )
    [cm] = cluster.api.list("configmaps", "default", "pfs.io/pipeline=roll")
    assert cm["metadata"]["labels"]["pfs.io/version"] == "2" and "v2" in cm["data"]["spec.json"]
    pps.stop_pipeline("roll")
    wait_for(lambda: not cluster.pods("roll"), what="stop-pipeline to remove the pods")
    assert pps.inspect_pipeline("roll").state == "paused"
    pps.start_pipeline("roll")
    pps.delete_pipeline("roll")
    wait_for(
        lambda: not cluster.api.list("configmaps", "default", "pfs.io/pipeline=roll") and not cluster.pods("roll"),
        what="delete-pipeline to remove the ConfigMap and the pods",
    )


def test_standby_pipelines_have_no_pods_between_jobs(pfs):
    cluster, client, pps = pfs
    pps.create_pipeline(spec("lazy", standby=True))
    assert not cluster.pods("lazy")
    c = put(client, {"a": b"1"})
    [job] = pps.flush_job([CommitRef("in", c)])
    assert job.state == "success"
    wait_for(
        lambda: not cluster.pods("lazy") and pps.inspect_pipeline("lazy").state == "standby",
        what="the standby pipeline to give its pods back",
    )


@pytest.mark.parametrize("pfs", ["idle_cluster"], indirect=True)
@pytest.mark.parametrize(
    "image, extra, reason",
    [
        ("pull-error", {}, "image pull failed: pull-error: "),
        ("oom", {}, "OOM-killed: container user went over its memory limit"),
        ("evicted", {}, "evicted: The node was low on resource: memory."),
        ("crashloop", {}, "crash loop: container pfs-worker keeps failing (Error)"),
        ("busybox", {"scheduling_spec": {"node_selector": {"gpu": "a100"}}}, "unschedulable: 0/1 nodes are available"),
    ],
)
def test_pod_failures_are_pipeline_state_in_one_line(pfs, image, extra, reason):
    cluster, client, pps = pfs
    pps.create_pipeline(spec("sick", image=image, **extra))
    put(client, {"a": b"1"})
    wait_for(lambda: pps.inspect_pipeline("sick").state == "crashing", what="the pipeline to say its workers fail")
    p = pps.inspect_pipeline("sick")
    assert p.reason.startswith(reason) and "\n" not in p.reason, p.reason
    assert f"State: crashing ({reason}" in cluster.daemon.pfs("inspect-pipeline", "sick").stdout.decode()
    assert "crashing" in cluster.daemon.pfs("list-pipeline").stdout.decode()
    if image in ("oom", "evicted"):  # failed pods are replaced (after a backoff), not piled up
        assert len(cluster.pods("sick")) <= 2


@pytest.mark.parametrize("pfs", ["idle_cluster"], indirect=True)
def test_forbidden_and_unreachable_are_pipeline_state(pfs):
    cluster, client, pps = pfs
    cluster.api.forbid("create", "pods")
    pps.create_pipeline(spec("denied"))
    wait_for(lambda: pps.inspect_pipeline("denied").state == "crashing", what="the refusal to show")
    assert pps.inspect_pipeline("denied").reason.startswith(
        'forbidden by RBAC: pods is forbidden: User "system:serviceaccount'
    )
    cluster.api.forbidden.clear()
    wait_for(
        lambda: cluster.pods("denied") and pps.inspect_pipeline("denied").state == "running",
        timeout=60,
        what="the pod once it is allowed",
    )
    cluster.api.down = True
    pps.create_pipeline(spec("cut"))
    wait_for(
        lambda: pps.inspect_pipeline("cut").state == "crashing", timeout=60, what="the unreachable cluster to show"
    )
    assert "unreachable" in pps.inspect_pipeline("cut").reason


@pytest.mark.parametrize("pfs", ["idle_cluster"], indirect=True)
def test_a_bad_pod_patch_is_refused_at_create_pipeline(pfs):
    cluster, client, pps = pfs
    import json

    from pfsfuse.metadata.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="pod_patch does not apply"):
        pps.create_pipeline(spec("patchy", pod_patch=json.dumps([{"op": "remove", "path": "/nope"}])))
    assert [r.name for r in client.list_repo()] == ["in"]  # nothing half-made


@pytest.mark.parametrize("pfs", ["idle_cluster"], indirect=True)
def test_a_restarted_daemon_adopts_its_pods_and_removes_orphans(pfs):
    cluster, client, pps = pfs
    pps.create_pipeline(spec("kept", parallelism_spec={"constant": 3}))
    put(client, {f"f{i}": b"x" for i in range(3)})
    wait_for(lambda: len(cluster.pods("kept")) == 3, what="three worker pods")
    before = sorted(p["metadata"]["name"] for p in cluster.pods("kept"))
    # A pipeline deleted while no daemon ran: its ConfigMap and pod are left behind.
    cluster.api.create(
        "configmaps",
        "default",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "pfs-pipeline-gone",
                "labels": {
                    "app.kubernetes.io/managed-by": "pfsd",
                    "app.kubernetes.io/component": "pipeline",
                    "pfs.io/pipeline": "gone",
                },
            },
        },
    )
    assert cluster.daemon.stop(signal.SIGTERM) == 0
    assert sorted(p["metadata"]["name"] for p in cluster.pods("kept")) == before  # pods outlive the daemon
    cluster.daemon.start()
    wait_for(
        lambda: not cluster.api.list("configmaps", "default", "pfs.io/pipeline=gone"),
        timeout=60,
        what="the orphaned pipeline's ConfigMap to be removed",
    )
    assert sorted(p["metadata"]["name"] for p in cluster.pods("kept")) == before  # adopted: none added or removed


def test_serve_without_a_cluster_says_so_in_one_line(tmp_home):
    import os
    import subprocess

    from helpers import PFS

    env = {**os.environ, "PFS_HOME": str(tmp_home / "home"), "KUBECONFIG": str(tmp_home / "none")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    r = subprocess.run([PFS, "serve", "--executor", "kubernetes"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "no Kubernetes cluster configured" in r.stderr and "Traceback" not in r.stderr
