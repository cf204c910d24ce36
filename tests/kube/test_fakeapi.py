"""The fake API server behaves as the real one where pfs depends on it, seen through the real
`kubernetes` client: if it did not, the executor's and deploy's tests would prove nothing."""

from __future__ import annotations

import json

import pytest
from fakeapi import ApiError, FakeApi
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "w-", "labels": {"app": "a", "tier": "x"}},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
}


@pytest.fixture
def core():
    with FakeApi() as api:
        c = client.ApiClient(client.Configuration(host=api.url))
        try:
            yield api, client.CoreV1Api(c)
        finally:
            c.close()


def status_of(e: ApiException) -> tuple[int, str]:
    return e.status, json.loads(e.body)["message"]


def test_server_set_fields_and_generate_name(core):
    api, v1 = core
    a = v1.create_namespaced_pod("default", POD)
    b = v1.create_namespaced_pod("default", POD)
    assert a.metadata.name.startswith("w-") and a.metadata.name != b.metadata.name
    assert a.metadata.uid and a.metadata.resource_version and a.metadata.creation_timestamp is not None
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert a.status.phase == "Pending"


def test_errors(core):
    api, v1 = core
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_pod("nope", "default")
    assert status_of(e.value) == (404, 'pods "nope" not found')
    v1.create_namespaced_config_map("default", {"metadata": {"name": "x"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    assert e.value.status == 422 and "RFC 1123" in status_of(e.value)[1]
    cm = v1.read_namespaced_config_map("x", "default")
    stale = {"metadata": {"name": "x", "resourceVersion": str(int(cm.metadata.resource_version) - 1)}, "data": {}}
    with pytest.raises(ApiException) as e:
        v1.replace_namespaced_config_map("x", "default", stale)
    assert e.value.status == 409 and "has been modified" in status_of(e.value)[1]


def test_strict_validation_refuses_unknown_fields(core):
    """(The typed client refuses such a body itself: the server is asked directly.)"""
    api, v1 = core
    with pytest.raises(ApiError) as e:
        api.create(
            "configmaps", "default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}, "dta": {}}
        )
    assert e.value.code == 422 and "'dta' was unexpected" in e.value.message


def test_selectors(core):
    api, v1 = core
    for labels in ({"app": "a", "tier": "x"}, {"app": "b"}, {"app": "a", "tier": "y"}):
        v1.create_namespaced_pod("default", {**POD, "metadata": {"generateName": "w-", "labels": labels}})

    def names(sel="", fields=""):
        return len(v1.list_namespaced_pod("default", label_selector=sel, field_selector=fields).items)

    assert names("app=a") == 2 and names("app!=a") == 1 and names("tier") == 2 and names("!tier") == 1
    assert names("tier in (x, z)") == 1 and names("app=a,tier notin (x)") == 1
    assert names(fields="status.phase=Pending") == 3 and names(fields="status.phase=Running") == 0


def test_patches_and_status(core):
    api, v1 = core
    v1.create_namespaced_config_map("default", {"metadata": {"name": "p", "labels": {"a": "1"}}, "data": {"k": "v"}})
    v1.patch_namespaced_config_map("p", "default", {"data": {"k2": "v2"}})  # strategic merge
    v1.patch_namespaced_config_map("p", "default", [{"op": "remove", "path": "/data/k"}])  # JSON patch
    v1.patch_namespaced_config_map(
        "p", "default", {"metadata": {"labels": {"a": None}}}, _content_type="application/merge-patch+json"
    )
    cm = v1.read_namespaced_config_map("p", "default")
    assert cm.data == {"k2": "v2"} and not cm.metadata.labels
    pod = v1.create_namespaced_pod("default", POD)
    v1.patch_namespaced_pod_status(pod.metadata.name, "default", {"status": {"phase": "Running"}})
    assert v1.read_namespaced_pod(pod.metadata.name, "default").status.phase == "Running"
    with pytest.raises(ApiException) as e:  # a pod's spec is immutable
        v1.patch_namespaced_pod(pod.metadata.name, "default", {"spec": {"restartPolicy": "Always"}})
    assert e.value.status == 422
    api.logs[("default", pod.metadata.name, "c")] = "line 1\nline 2\n"
    assert v1.read_namespaced_pod_log(pod.metadata.name, "default", container="c") == "line 1\nline 2\n"


def test_watch_from_a_resource_version_and_410(core):
    api, v1 = core
    first = v1.create_namespaced_config_map("default", {"metadata": {"name": "w1"}})
    v1.create_namespaced_config_map("default", {"metadata": {"name": "w2"}})
    v1.delete_namespaced_config_map("w1", "default")
    seen = []
    w = watch.Watch()
    for ev in w.stream(
        v1.list_namespaced_config_map, "default", resource_version=first.metadata.resource_version, timeout_seconds=2
    ):
        seen.append((ev["type"], ev["raw_object"]["metadata"]["name"]))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "w2"), ("DELETED", "w1")]
    api.compact()
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(
            v1.list_namespaced_config_map,
            "default",
            resource_version=first.metadata.resource_version,
            timeout_seconds=2,
        ):
            pass
    assert e.value.status == 410


def test_owner_references_are_garbage_collected_and_pods_end_gracefully(core):
    api, v1 = core
    owner = v1.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
    pod = v1.create_namespaced_pod("default", {**POD, "metadata": {"name": "owned", "ownerReferences": ref}})
    api.replace(
        "pods", "default", "owned", {**api.get("pods", "default", "owned"), "spec": {**POD["spec"], "nodeName": "n"}}
    )
    v1.delete_namespaced_config_map("owner", "default")
    terminating = v1.read_namespaced_pod(pod.metadata.name, "default")
    assert terminating.metadata.deletion_timestamp is not None  # a pod on a node ends gracefully
    v1.delete_namespaced_pod("owned", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_pod("owned", "default")
    assert e.value.status == 404


def test_rbac_refusals_and_an_unreachable_server(core):
    api, v1 = core
    api.forbid("list", "pods")
    with pytest.raises(ApiException) as e:
        v1.list_namespaced_pod("default")
    assert e.value.status == 403 and 'cannot list resource "pods"' in status_of(e.value)[1]
    api.down = True
    with pytest.raises(HTTPError):
        v1.read_namespaced_config_map("x", "default", _request_timeout=5)
