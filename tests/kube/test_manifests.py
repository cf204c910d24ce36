"""The ConfigMap and worker pod a pipeline becomes on Kubernetes: valid for the API server of
every supported version (strict schemas: no unknown field), and safe in what schemas miss."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from kubecheck import VERSIONS, validate

from helpers import PFS
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.kube import manifests
from pfsfuse.scheduler.kube.settings import FUSE_MODES, Settings, dns_name

FULL = {
    "pipeline": {"name": "edge_Detect"},
    "transform": {
        "cmd": ["python3", "/edges.py"],
        "image": "pachyderm/opencv",
        "env": {"MODE": "fast"},
        "secrets": [{"name": "s3-creds", "mount_path": "/secrets"}, {"name": "api", "env_var": "API_KEY", "key": "k"}],
        "image_pull_secrets": ["registry-login"],
        "working_dir": "/work",
    },
    "input": {"atom": {"repo": "images", "glob": "/*"}},
    "parallelism_spec": {"constant": 4},
    "resource_requests": {"cpu": 0.5, "memory": "1G", "gpu": 1, "disk": "10Gi"},
    "resource_limits": {"memory": "2Gi", "cpu": 2},
    "scheduling_spec": {"node_selector": {"disk": "ssd"}, "priority_class_name": "batch-high"},
    "pod_spec": json.dumps(
        {
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "user", "tty": False}],
        }
    ),
    "pod_patch": json.dumps([{"op": "add", "path": "/nodeSelector/zone", "value": "a"}]),
}


def spec(**changes) -> specs.PipelineSpec:
    raw = {**json.loads(json.dumps(FULL)), **changes}
    return specs.parse(json.dumps(raw))


def pod_of(s: specs.PipelineSpec, mode: str = "privileged") -> dict:
    return manifests.worker_pod(
        s, 3, "ab12cd34", Settings(fuse_mode=mode), owner_uid="0b6f7c61-6a4e-4f4b-9d55-9b0e7a7e2f10"
    )


def container(pod: dict, name: str) -> dict:
    spec = pod["spec"]
    return next(c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name)


@pytest.mark.parametrize("mode", FUSE_MODES)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_strictly(mode, version):
    settings = Settings(fuse_mode=mode, image_pull_secret="ours", namespace="pfs")
    for s in (
        spec(),
        specs.parse(
            json.dumps(
                {
                    "pipeline": {"name": "min"},
                    "transform": {"cmd": ["sh"], "image": "busybox"},
                    "input": {"atom": {"repo": "r", "glob": "/"}},
                }
            )
        ),
    ):
        for obj in manifests.dry_run(s, settings):
            validate(obj, version)
        assert manifests.problems(manifests.worker_pod(s, 1, "x", settings), settings) == []


def test_the_pod_carries_the_spec():
    pod = pod_of(spec())
    meta, ps = pod["metadata"], pod["spec"]
    assert meta["labels"]["pfs.io/pipeline"] == "edge_Detect"
    assert meta["labels"]["pfs.io/version"] == "3" and meta["labels"]["pfs.io/worker"] == "ab12cd34"
    assert meta["name"] == f"pfs-{dns_name('edge_Detect')}-v3-ab12cd34" and meta["name"] == meta["name"].lower()
    assert meta["ownerReferences"][0]["kind"] == "ConfigMap"
    assert meta["ownerReferences"][0]["name"] == manifests.config_map_name("edge_Detect")
    assert ps["restartPolicy"] == "Never"
    assert [c["name"] for c in ps["initContainers"]] == ["pfs-launcher", "pfs-worker"]
    assert ps["initContainers"][1]["restartPolicy"] == "Always"
    user = container(pod, "user")
    assert user["image"] == "pachyderm/opencv" and user["command"] == ["/pfs-bin/launcher"]
    assert user["workingDir"] == "/work" and user["tty"] is False  # pod_spec merged into the user container
    env = {e["name"]: e for e in user["env"]}
    assert env["MODE"]["value"] == "fast"
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "api", "key": "k"}
    assert {"name": "secret-0", "mountPath": "/secrets", "readOnly": True} in user["volumeMounts"]
    assert user["resources"] == {
        "requests": {"cpu": "500m", "memory": "1G", "ephemeral-storage": "10Gi"},
        "limits": {"cpu": "2000m", "memory": "2Gi", "nvidia.com/gpu": "1"},
    }
    assert ps["imagePullSecrets"] == [{"name": "registry-login"}]
    assert ps["nodeSelector"] == {"disk": "ssd", "zone": "a"}  # pod_patch applied after
    assert ps["priorityClassName"] == "batch-high"
    assert ps["tolerations"][0]["key"] == "gpu"
    assert ps["automountServiceAccountToken"] is False


def test_fuse_modes():
    priv = pod_of(spec(), "privileged")
    assert container(priv, "pfs-worker")["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert {"name": "pfs", "mountPath": "/pfs", "mountPropagation": "Bidirectional"} in container(priv, "pfs-worker")[
        "volumeMounts"
    ]
    assert {"name": "pfs", "mountPath": "/pfs", "mountPropagation": "HostToContainer"} in container(priv, "user")[
        "volumeMounts"
    ]
    plugin = pod_of(spec(), "device-plugin")
    assert container(plugin, "user")["resources"]["limits"]["smarter-devices/fuse"] == "1"
    assert container(plugin, "user")["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]
    assert "privileged" not in container(plugin, "pfs-worker")["securityContext"]
    assert "startupProbe" not in container(plugin, "pfs-worker")  # the launcher mounts /pfs later
    copy = pod_of(spec(), "copy")
    for c in ("pfs-worker", "user"):
        assert all("mountPropagation" not in m for m in container(copy, c)["volumeMounts"])
        assert not container(copy, c)["securityContext"].get("privileged")
        assert "smarter-devices/fuse" not in container(copy, c).get("resources", {}).get("limits", {})
    # The user's /pfs is a directory of the emptyDir the sidecar mounts whole (its own files beside).
    assert {"name": "pfs", "mountPath": "/pfs", "subPath": "datum"} in container(copy, "user")["volumeMounts"]
    assert {"name": "pfs", "mountPath": "/pfs"} in container(copy, "pfs-worker")["volumeMounts"]
    assert container(copy, "pfs-worker")["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_store_credentials_and_token_only_in_the_sidecar(mode):
    pod = pod_of(spec(), mode)
    settings = Settings()
    store_volumes = {
        v["name"] for v in pod["spec"]["volumes"] if v.get("secret", {}).get("secretName") == settings.storage_secret
    }
    assert store_volumes == {"pfs-store"}
    for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e}
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        if c["name"] == "pfs-worker":
            assert {settings.storage_secret, settings.auth_secret} <= refs and "pfs-store" in mounts
            assert any(e["name"] == "PFS_AUTH_TOKEN" for e in c["env"])
        else:
            assert not refs & {settings.storage_secret, settings.auth_secret}, c["name"]
            assert "pfs-store" not in mounts and "envFrom" not in c


@pytest.mark.parametrize("mode", FUSE_MODES)
def test_volumes_match_mounts(mode):
    pod = pod_of(spec(), mode)
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert len(volumes) == len(set(volumes))
    mounted = {
        m["name"] for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]] for m in c["volumeMounts"]
    }
    assert mounted == set(volumes)


@pytest.mark.parametrize(
    "patch, why",
    [
        ([{"op": "replace", "path": "/restartPolicy", "value": "Always"}], "restartPolicy must stay Never"),
        (
            [{"op": "add", "path": "/containers/0/volumeMounts/-", "value": {"name": "pfs-store", "mountPath": "/x"}}],
            "mounts the store's Secret",
        ),
        (
            [{"op": "add", "path": "/containers/0/volumeMounts/-", "value": {"name": "nope", "mountPath": "/x"}}],
            "which the pod does not have",
        ),
        (
            [{"op": "add", "path": "/containers/0/envFrom", "value": [{"secretRef": {"name": "pfs-storage"}}]}],
            "takes its environment from Secret pfs-storage",
        ),
        (
            [{"op": "replace", "path": "/containers/0/volumeMounts/2/mountPropagation", "value": "Bidirectional"}],
            "Bidirectional propagation but is not privileged",
        ),
        ([{"op": "remove", "path": "/initContainers/1/restartPolicy"}], "must keep restartPolicy Always"),
    ],
)
def test_an_unsafe_pod_patch_is_refused(patch, why):
    with pytest.raises(InvalidArgument, match=why):
        pod_of(spec(pod_patch=json.dumps(patch), pod_spec=""))


@pytest.mark.parametrize(
    "changes, why",
    [
        (
            {"pod_patch": json.dumps([{"op": "replace", "path": "/nosuch/field", "value": 1}])},
            "pod_patch does not apply",
        ),
        (
            {"pod_patch": json.dumps([{"op": "test", "path": "/restartPolicy", "value": "Always"}])},
            "pod_patch does not apply",
        ),
        ({"pod_patch": "{not json"}, "pod_patch is not JSON"),
        ({"pod_patch": json.dumps({"op": "add"})}, "must be a JSON patch"),
        ({"pod_spec": "[1]"}, "pod_spec must be a JSON object"),
        ({"resource_requests": {"memory": "lots"}}, "is not a quantity"),
        ({"transform": {"cmd": ["sh"]}}, "transform.image"),
        ({"transform": {"cmd": ["sh"], "image": "x", "secrets": [{"name": "s", "mount_path": "/pfs"}]}}, "mount_path"),
        ({"transform": {"cmd": ["sh"], "image": "x", "secrets": [{"name": "s", "env_var": "A"}]}}, "the key to read"),
        ({"transform": {"cmd": ["sh"], "image": "x", "env": {"A B": "1"}}}, "not a variable name"),
    ],
)
def test_bad_specs_get_one_clear_error(changes, why):
    with pytest.raises(InvalidArgument, match=why) as e:
        pod_of(spec(**changes))
    assert "\n" not in str(e.value)


def test_settings_round_trip_through_the_environment():
    s = Settings(namespace="data", fuse_mode="copy", image="reg.example/pfsfuse:1", cache_size="5Gi")
    assert Settings.from_env(s.env()) == s
    with pytest.raises(InvalidArgument, match="fuse mode"):
        Settings(fuse_mode="magic")
    with pytest.raises(InvalidArgument, match="namespace"):
        Settings(namespace="Not_A_Label")


def test_distinct_pipeline_names_get_distinct_object_names():
    assert dns_name("edges") == "edges"
    assert len({dns_name(n) for n in ("a_b", "a-b", "A-b", "a_B")}) == 4


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_create_pipeline_dry_run_prints_objects_and_creates_nothing(tmp_path, fmt):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(FULL))
    # No daemon: PFS_ADDRESS points nowhere, so any attempt to create would fail.
    env = {
        "PATH": "/usr/bin:/bin",
        "PFS_HOME": str(tmp_path / "home"),
        "PFS_ADDRESS": f"unix:{tmp_path}/none.sock",
        "PFS_KUBE_NAMESPACE": "review",
        "PFS_KUBE_FUSE_MODE": "copy",
    }
    r = subprocess.run(
        [PFS, "create-pipeline", "-f", str(path), "--dry-run", "-o", fmt],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    objects = json.loads(r.stdout)["items"] if fmt == "json" else list(yaml.safe_load_all(r.stdout))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Pod"]
    assert all(o["metadata"]["namespace"] == "review" for o in objects)
    assert objects[1]["metadata"]["annotations"]["pfs.io/fuse-mode"] == "copy"
    assert json.loads(objects[0]["data"]["spec.json"])["pipeline"]["name"] == "edge_Detect"
    for o in objects:
        validate(o, VERSIONS[-1])
    assert not (tmp_path / "home").exists()


def test_create_pipeline_dry_run_reports_a_patch_that_does_not_apply(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**FULL, "pod_patch": json.dumps([{"op": "remove", "path": "/hostAliases"}])}))
    r = subprocess.run(
        [PFS, "create-pipeline", "-f", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PFS_ADDRESS": f"unix:{tmp_path}/none.sock"},
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("Error: pod_patch does not apply to the worker pod's spec")
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_grace_period_lets_a_datum_finish():
    """A stopping pod's datum runs to its end (and its output is saved) within the grace period."""
    grace = [pod_of(spec(datum_timeout=t))["spec"]["terminationGracePeriodSeconds"] for t in ("", "90s", "48h")]
    assert grace == [300, 120, 3600]  # none: 5 minutes; the timeout and 30 s; at most an hour
