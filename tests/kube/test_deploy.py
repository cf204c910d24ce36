"""`pfs deploy --dry-run`: every object of every kind of deployment is valid for each supported
Kubernetes version, and holds what an operator relies on."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from kubecheck import VERSIONS, validate

from helpers import PFS

DEPLOYS = {
    "local": ["local"],
    "custom": ["custom", "--object-store", "s3", "data", "AKIA", "s3cret", "minio.example:9000", "--insecure"],
    "amazon": ["amazon", "data", "eu-west-1", "--credentials", "AKIA,s3cret"],
    "amazon-role": ["amazon", "data", "eu-west-1", "--iam-role", "arn:aws:iam::1:role/pfs"],
    "google": ["google", "data"],
    "microsoft": ["microsoft", "data", "account", "a2V5"],
}


def run(args: list[str], tmp_path, check=True) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "PFS_HOME": str(tmp_path / "home"),
        "PFS_ADDRESS": f"unix:{tmp_path}/none.sock",
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    r = subprocess.run([PFS, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def objects(args: list[str], tmp_path) -> dict[tuple[str, str], dict]:
    out = run(["deploy", *args, "--dry-run", "-o", "json"], tmp_path).stdout
    items = json.loads(out)["items"]
    return {(o["kind"], o["metadata"]["name"]): o for o in items}


@pytest.mark.parametrize("mode", ["privileged", "device-plugin", "copy"])
@pytest.mark.parametrize("kind", sorted(DEPLOYS))
def test_every_deployment_validates_strictly(kind, mode, tmp_path):
    objs = objects(
        [
            *DEPLOYS[kind],
            "--fuse-mode",
            mode,
            "--namespace",
            "data-team",
            "--registry",
            "reg.example/pfs",
            "--image-pull-secret",
            "pull",
        ],
        tmp_path,
    )
    for obj in objs.values():
        for version in VERSIONS:
            validate(obj, version)
    assert (
        ("DaemonSet", "fuse-device-plugin") in objs
        if mode == "device-plugin"
        else not any(k == "DaemonSet" for k, _ in objs)
    )
    sts = objs[("StatefulSet", "pfsd")]
    pod = sts["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PFS_KUBE_FUSE_MODE"]["value"] == mode
    assert env["PFS_KUBE_NAMESPACE"]["value"] == "data-team"
    assert env["PFS_KUBE_IMAGE"]["value"].startswith("reg.example/pfs/pfsfuse:")
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert all(o["metadata"].get("namespace", "data-team") == "data-team" for o in objs.values())


def test_the_daemon_shape(tmp_path):
    objs = objects(DEPLOYS["custom"], tmp_path)
    sts = objs[("StatefulSet", "pfsd")]["spec"]
    assert sts["replicas"] == 1
    assert sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pfsd = sts["template"]["spec"]["containers"][0]
    assert pfsd["readinessProbe"]["tcpSocket"]["port"] == 650
    assert pfsd["command"][:4] == ["pfs", "serve", "--listen", "0.0.0.0:650"]
    env = {e["name"]: e for e in pfsd["env"]}
    # The daemon listens on TCP only with the deployment's token, which workers present too.
    assert env["PFS_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "pfs-auth", "key": "token"}
    assert objs[("Secret", "pfs-auth")]["stringData"]["token"]
    store = json.loads(objs[("Secret", "pfs-storage")]["stringData"]["store.json"])
    assert store["storage"] == "s3://data" and isinstance(store["seed"], int)
    creds = objs[("Secret", "pfs-storage")]["stringData"]
    assert creds["AWS_ENDPOINT_URL"] == "http://minio.example:9000" and creds["AWS_SECRET_ACCESS_KEY"] == "s3cret"
    assert objs[("Service", "pfsd")]["spec"]["ports"][0]["port"] == 650
    assert objs[("Role", "pfsd")]["rules"][0]["resources"] == ["pods", "configmaps"]
    assert objs[("RoleBinding", "pfsd")]["subjects"][0]["name"] == "pfsd"
    policy = objs[("NetworkPolicy", "pfsd")]["spec"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 650}]
    assert objs[("NetworkPolicy", "pfs-workers")]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in objs[("NetworkPolicy", "pfs-workers")]["spec"]  # workers take no connection


def test_cluster_roles_and_fresh_secrets(tmp_path):
    objs = objects([*DEPLOYS["local"], "--cluster-roles", "--namespace", "ns1"], tmp_path)
    assert ("ClusterRole", "pfsd-ns1") in objs and ("Role", "pfsd") not in objs
    assert "namespace" not in objs[("ClusterRole", "pfsd-ns1")]["metadata"]
    assert objs[("ClusterRoleBinding", "pfsd-ns1")]["subjects"] == [
        {"kind": "ServiceAccount", "name": "pfsd", "namespace": "ns1"}
    ]
    again = objects(DEPLOYS["local"], tmp_path)
    seeds = [json.loads(o[("Secret", "pfs-storage")]["stringData"]["store.json"])["seed"] for o in (objs, again)]
    assert seeds[0] != seeds[1]
    assert objs[("Secret", "pfs-auth")]["stringData"]["token"] != again[("Secret", "pfs-auth")]["stringData"]["token"]


def test_iam_role_and_google_key(tmp_path):
    objs = objects(DEPLOYS["amazon-role"], tmp_path)
    for sa in ("pfsd", "pfs-worker"):
        assert objs[("ServiceAccount", sa)]["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/pfs"
        }
    assert "AWS_ACCESS_KEY_ID" not in objs[("Secret", "pfs-storage")]["stringData"]
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account"}')
    objs = objects([*DEPLOYS["google"], "--credentials", str(key)], tmp_path)
    data = objs[("Secret", "pfs-storage")]["stringData"]
    assert json.loads(data["google.json"]) == {"type": "service_account"}
    assert data["GOOGLE_APPLICATION_CREDENTIALS"] == "/etc/pfs/store/google.json"


def test_yaml_output_is_documents(tmp_path):
    out = run(["deploy", "local", "--dry-run"], tmp_path).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds[:2] == ["ServiceAccount", "ServiceAccount"] and "StatefulSet" in kinds


@pytest.mark.parametrize(
    "args, message",
    [
        (["amazon", "b", "r"], "give either --credentials"),
        (["amazon", "b", "r", "--credentials", "onlyid"], "--credentials must be"),
        (["local", "--fuse-mode", "magic"], "Invalid value for '--fuse-mode'"),
        (["local", "--namespace", "Bad_NS", "--dry-run"], "is not a DNS label"),
        (["custom", "--object-store", "s3", "a/b", "i", "s", "e", "--dry-run"], "is not a bucket name"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    r = run(["deploy", *args], tmp_path, check=False)
    assert (
        r.returncode == 2
        if "Invalid value" in message or "give" in message or "must be" in message
        else r.returncode == 1
    )
    assert message in r.stderr and "Traceback" not in r.stderr


def test_without_a_cluster_deploy_says_so(tmp_path):
    r = run(["deploy", "local"], tmp_path, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("Error: no Kubernetes cluster configured") and len(r.stderr.strip().splitlines()) == 1


def test_deploy_applies_keeps_secrets_and_undeploy_removes(tmp_path):
    from fakeapi import FakeApi

    with FakeApi() as api:
        env_args = {"KUBECONFIG": api.kubeconfig(tmp_path / "kubeconfig")}

        def pfs(*args, check=True):
            env = {"PATH": "/usr/bin:/bin", "PFS_HOME": str(tmp_path / "home"), **env_args}
            r = subprocess.run([PFS, *args], env=env, capture_output=True, text=True, timeout=120)
            assert not check or r.returncode == 0, r.stderr
            return r

        out = pfs("deploy", *DEPLOYS["custom"], "--fuse-mode", "device-plugin").stdout
        assert "StatefulSet pfsd created" in out and "DaemonSet fuse-device-plugin created" in out
        assert api.get("statefulsets", "default", "pfsd")["spec"]["replicas"] == 1  # validated strictly on the way in
        first = api.get("secrets", "default", "pfs-storage")["data"]["store.json"]
        token = api.get("secrets", "default", "pfs-auth")["data"]["token"]
        ip = api.get("services", "default", "pfsd")["spec"]["clusterIP"]
        out = pfs("deploy", *DEPLOYS["custom"], "--fuse-mode", "device-plugin").stdout
        assert "StatefulSet pfsd configured" in out
        assert api.get("secrets", "default", "pfs-storage")["data"]["store.json"] == first  # the store keeps its seed
        assert api.get("secrets", "default", "pfs-auth")["data"]["token"] == token
        assert api.get("services", "default", "pfsd")["spec"]["clusterIP"] == ip
        r = pfs("deploy", *DEPLOYS["microsoft"], check=False)  # another store over this one: refused
        assert r.returncode == 1 and "uses s3://data, not az://data: undeploy it first" in r.stderr
        api.create(
            "configmaps",
            "default",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "pfs-pipeline-x",
                    "labels": {"app.kubernetes.io/managed-by": "pfsd", "app.kubernetes.io/component": "pipeline"},
                },
            },
        )
        out = pfs("undeploy").stdout
        assert "ConfigMap pfs-pipeline-x deleted" in out and "StatefulSet pfsd deleted" in out
        assert not [k for k in api.objects if k[0] != "nodes"]
        api.forbid("create", "serviceaccounts")
        r = pfs("deploy", "local", check=False)
        assert r.returncode == 1 and r.stderr.startswith("Error: forbidden by RBAC: serviceaccounts is forbidden")
