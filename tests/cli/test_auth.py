"""Auth end to end: `pfs auth`, the ACL matrix (each role by each verb, through the HTTP API and
the CLI, over the unix socket and over TCP with TLS), pipelines' own tokens, the TCP listener's
refusal, and the permissions of PFS_HOME and the socket."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import stat
import subprocess

import msgspec
import pytest

from helpers import PFS, Daemon, self_signed
from pfsfuse.api.auth import RemoteAuth
from pfsfuse.api.remote import RemoteClient
from pfsfuse.api.types import Copy, Put
from pfsfuse.home import Home
from pfsfuse.metadata.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from pfsfuse.metadata.records import CommitRef
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines

ROLES = ["anonymous", "none", "reader", "writer", "owner", "admin"]
_RANK = {r: n for n, r in enumerate(ROLES)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A daemon with auth active, serving its unix socket and HTTPS; `data` holds a file, and each
    role has its scope on `data` and on a repo of its own to delete (`del-ROLE`)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.cert, self.key = self_signed(tmp)
        self.daemon = Daemon(tmp / "home").start()
        self.unix = f"unix:{self.daemon.home}/pfs.sock"
        out = self.daemon.pfs("auth", "activate", "--admins=admin,robot:ops").stdout.decode()
        assert out.startswith("Token: pfs_")
        self.tokens = {"admin": out.split()[1], "anonymous": None}
        self.daemon.stop()
        self.port = _free_port()
        self.https = f"https://127.0.0.1:{self.port}"
        self.daemon = Daemon(tmp / "home", ["--listen", f"127.0.0.1:{self.port}", "--tls", f"{self.cert},{self.key}"])
        self.daemon.env["PFS_CA"] = self.cert
        self.daemon.start()
        admin = self.auth(self.unix, "admin")
        for role in ("none", "reader", "writer", "owner"):
            self.tokens[role] = admin.get_auth_token(f"robot:{role}").token
        c = self.client(self.unix, "admin")
        for repo in ["data", *(f"del-{r}" for r in ROLES)]:
            c.create_repo(repo)
            for role in ("reader", "writer", "owner"):
                admin.set_scope(repo, f"robot:{role}", role)
        c.write_files("data", "master", [Put("a", stream=io.BytesIO(b"alpha"))])
        c.close()
        admin.close()

    def client(self, address: str, role: str) -> RemoteClient:
        home = Home(self.daemon.home) if address.startswith("unix:") else None
        return RemoteClient(address, home, self.tokens[role])

    def auth(self, address: str, role: str) -> RemoteAuth:
        return RemoteAuth(address, self.tokens[role])

    def close(self):
        self.daemon.stop()
        self.daemon.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="pfs-auth-", dir="/tmp"))
    c = Cluster(tmp)
    try:
        yield c
    finally:
        c.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# Each verb with the least role that may do it, and how to do it through the API.
def _verbs(c: RemoteClient, a: RemoteAuth, role: str):
    return [
        ("reader", "inspect-repo", lambda: c.inspect_repo("data")),
        ("reader", "list-file", lambda: c.list_file("data", "master")),
        ("reader", "get-file", lambda: b"".join(c.get_file("data", "master", "a"))),
        ("reader", "list-commit", lambda: c.list_commit("data")),
        ("reader", "auth get", lambda: a.get_acl("data")),
        ("reader", "inspect-commit", lambda: c.inspect_commit("data", "master")),
        ("reader", "list-branch", lambda: c.list_branch("data")),
        ("reader", "glob-file", lambda: c.glob_file("data", "master", "*")),
        ("reader", "diff-file", lambda: c.diff_file("data", "master")),
        ("reader", "subscribe-commit", lambda: next(iter(c.subscribe_commit("data", "master")))),
        ("writer", "start/finish-commit", lambda: c.finish_commit("data", c.start_commit("data", "master").id)),
        ("writer", "copy-file", lambda: c.write_files("data", "master", [Copy(f"copy-{role}", "data", "master", "a")])),
        ("writer", "put-file", lambda: c.write_files("data", "master", [Put(f"by-{role}", stream=io.BytesIO(b"x"))])),
        ("writer", "create-branch", lambda: c.create_branch("data", f"b-{role}", "master")),
        ("writer", "delete-branch", lambda: c.delete_branch("data", f"b-{role}")),
        ("owner", "auth set", lambda: a.set_scope("data", "robot:guest", "reader")),
        ("owner", "delete-repo", lambda: c.delete_repo(f"del-{role}")),
        ("admin", "fsck", lambda: c.fsck()),
        ("admin", "garbage-collect", lambda: c.garbage_collect(dry_run=True)),
        ("admin", "traffic", lambda: c.traffic()),
        ("admin", "list-admins+modify", lambda: a.modify_admins(add=["robot:extra"])),
        ("admin", "extract", lambda: b"".join(c.extract(objects=False))),
    ]


def _as_role(role: str, least: str, do) -> str:
    """Call `do` as `role`: it works from role `least` up, is refused below it, and asks an
    anonymous caller to log in. Which of these happened."""
    if role == "anonymous":
        with pytest.raises(Unauthenticated):
            do()
        return "unauthenticated"
    if _RANK[role] >= _RANK[least]:
        do()
        return "done"
    with pytest.raises(PermissionDenied):
        do()
    return "denied"


@pytest.mark.parametrize("transport", ["unix", "https"])
def test_acl_matrix_through_the_api(cluster, transport, monkeypatch):
    monkeypatch.setenv("PFS_CA", cluster.cert)
    address = cluster.unix if transport == "unix" else cluster.https
    for role in ROLES:
        c, a = cluster.client(address, role), cluster.auth(address, role)
        try:
            for least, _verb, do in _verbs(c, a, role):
                _as_role(role, least, do)
            # what every caller may do: the version; a signed-in one: who it is
            assert c.version()
        finally:
            c.close()
            a.close()
        for repo in [f"del-{role}"]:  # put back what this role deleted, for the other transport
            admin = cluster.client(cluster.unix, "admin")
            try:
                if repo not in {r.name for r in admin.list_repo()}:
                    admin.create_repo(repo)
                    au = cluster.auth(cluster.unix, "admin")
                    for r in ("reader", "writer", "owner"):
                        au.set_scope(repo, f"robot:{r}", r)
                    au.close()
            finally:
                admin.close()


@pytest.mark.parametrize("transport", ["unix", "https"])
def test_acl_matrix_through_the_cli(cluster, transport, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"cli")
    verbs = [
        ("reader", ["list-file", "data", "master"]),
        ("reader", ["get-file", "data", "master", "a"]),
        ("reader", ["inspect-repo", "data"]),
        ("reader", ["list-commit", "data"]),
        ("reader", ["list-branch", "data"]),
        ("reader", ["glob-file", "data", "master", "*"]),
        ("reader", ["diff-file", "data", "master"]),
        ("writer", ["put-file", "data", "master", "cli", "-f", str(src)]),
        ("writer", ["copy-file", "data", "master", "a", "data", "master", "cli-copy", "-o"]),
        ("owner", ["auth", "set", "robot:guest", "writer", "data"]),
        ("admin", ["fsck"]),
        ("admin", ["extract", "--no-objects", "-o", str(tmp_path / "dump")]),
    ]
    address = cluster.unix if transport == "unix" else cluster.https
    for role in ROLES:
        _cli_verbs_as(cluster, address, role, tmp_path / "client", verbs)


def _cli_verbs_as(cluster, address: str, role: str, home, verbs) -> None:
    """Run each (least role, pfs args) as `role`: allowed from that role up, else refused in one
    line saying why."""
    env = {**os.environ, "PFS_HOME": str(home), "PFS_ADDRESS": address, "PFS_CA": cluster.cert}
    env.pop("PFS_AUTH_TOKEN", None)
    if cluster.tokens[role]:
        env["PFS_AUTH_TOKEN"] = cluster.tokens[role]
    for least, args in verbs:
        r = subprocess.run([PFS, *args], env=env, capture_output=True, timeout=120)
        allowed = role != "anonymous" and _RANK[role] >= _RANK[least]
        assert (r.returncode == 0) == allowed, (role, args, r.stderr)
        if not allowed:
            err = r.stderr.decode()
            assert "Traceback" not in err and err.count("\n") == 1, err
            assert ("log in" if role == "anonymous" else "is not a") in err, err


def test_login_whoami_check_and_logout(cluster, tmp_path):
    d = cluster.daemon
    alice = {**d.env, "PFS_HOME": str(tmp_path / "alice")}

    def pfs(*args, env=alice, input=None, ok=True):
        r = subprocess.run([PFS, *args], env=env, input=input, capture_output=True, timeout=120)
        assert (r.returncode == 0) == ok, (args, r.stderr)
        return r.stdout.decode()

    otp = pfs("auth", "get-otp", "alice", env=d.env).split()[2]
    assert otp.startswith("otp_")
    assert "Logged in as alice" in pfs("auth", "login", "alice", input=otp.encode())
    pfs("auth", "login", input=otp.encode(), ok=False)  # a one-time password works once
    home = tmp_path / "alice"
    assert stat.S_IMODE((home / "client.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert 'You are "alice"' in pfs("auth", "whoami")
    assert pfs("auth", "check", "reader", "data", ok=False).strip() == "false"
    pfs("create-repo", "alices")  # the creator owns it
    assert pfs("auth", "check", "owner", "alices").strip() == "true"
    assert pfs("auth", "get", "alice", "alices").strip() == "OWNER"
    assert json.loads(pfs("auth", "get", "alices", "--json")) == [{"subject": "alice", "scope": "owner"}]
    pfs("auth", "set", "robot:reader", "reader", "alices")
    assert "robot:reader: READER" in pfs("auth", "get", "alices")
    pfs("auth", "modify-admins", "--add=alice", ok=False)  # not an admin
    assert pfs("auth", "list-admins", "--json") and "admin" in json.loads(pfs("auth", "list-admins", "--json"))
    out = pfs("auth", "get-auth-token", "alice").splitlines()
    assert out[1] == "Subject: alice" and out[2].startswith("Token: pfs_")
    pfs("auth", "get-auth-token", "bob", ok=False)  # only admins speak for others
    # use-auth-token keeps a token read from stdin; logout revokes it for good
    bob = {**d.env, "PFS_HOME": str(tmp_path / "bob")}
    token = pfs("auth", "get-auth-token", "bob", env=d.env).splitlines()[2].split()[1]
    pfs("auth", "use-auth-token", env=bob, input=token.encode())
    assert 'You are "bob"' in pfs("auth", "whoami", env=bob)
    pfs("auth", "logout", env=bob)
    assert not (tmp_path / "bob" / "client.json").exists()
    r = subprocess.run([PFS, "list-repo"], env={**bob, "PFS_AUTH_TOKEN": token}, capture_output=True)
    assert r.returncode != 0 and b"not valid" in r.stderr


def test_expired_tokens_are_refused(cluster):
    admin = cluster.auth(cluster.unix, "admin")
    t = admin.get_auth_token("robot:brief", ttl=1)
    admin.close()
    c = RemoteClient(cluster.unix, token=t.token)
    try:
        import time

        deadline = time.monotonic() + 10
        while True:  # valid until it expires, one second on
            try:
                c.list_repo()
            except Unauthenticated:
                break
            assert time.monotonic() < deadline
    finally:
        c.close()


def test_a_pipeline_runs_with_its_own_token_and_its_creator_owns_its_output(cluster):
    admin = cluster.auth(cluster.unix, "admin")
    carol = admin.get_auth_token("carol").token
    dave = admin.get_auth_token("dave").token
    admin.set_scope("data", "carol", "reader")
    admin.close()
    spec = specs.validate(
        specs.PipelineSpec(
            pipeline=specs.PipelineName("copy"),
            transform=specs.Transform(cmd=["sh"], stdin=["cp /pfs/data/a /pfs/out/a"]),
            input=specs.Input(atom=specs.AtomInput(repo="data", glob="/")),
        )
    )
    as_dave = RemotePipelines(cluster.unix, dave)
    with pytest.raises(PermissionDenied):
        as_dave.create_pipeline(spec)  # dave cannot read its input
    as_carol = RemotePipelines(cluster.unix, carol)
    carol_client = RemoteClient(cluster.unix, token=carol)
    dave_client = RemoteClient(cluster.unix, token=dave)
    try:
        as_carol.create_pipeline(spec)
        head = carol_client.inspect_branch("data", "master").head
        jobs = as_carol.flush_job([CommitRef("data", head)])
        assert [j.state for j in jobs] == ["success"], [x.message for x in as_carol.get_logs("copy")]
        assert b"".join(carol_client.get_file("copy", "master", "a")) == b"alpha"
        acl = {e.subject: e.scope for e in RemoteAuth(cluster.unix, carol).get_acl("copy")}
        assert acl == {"carol": "owner", "pipeline:copy": "writer"}
        with pytest.raises(PermissionDenied):
            dave_client.list_file("copy", "master")
        with pytest.raises(PermissionDenied):
            as_dave.get_logs("copy")
        with pytest.raises(PermissionDenied):  # the workers' calls are the pipeline's alone
            as_carol.next_datums("copy", "copy-1", timeout=0)
        as_carol.delete_pipeline("copy")
        data_acl = {e.subject for e in RemoteAuth(cluster.unix, carol).get_acl("data")}
        assert "pipeline:copy" not in data_acl
    finally:
        for x in (as_dave, as_carol, carol_client, dave_client):
            x.close()


def test_listen_refuses_without_auth_unless_insecure(tmp_home):
    port = _free_port()
    home = tmp_home / "home"
    env = {**os.environ, "PFS_HOME": str(home)}
    r = subprocess.run([PFS, "serve", "--listen", f"127.0.0.1:{port}"], env=env, capture_output=True, timeout=60)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "without auth" in err and "--insecure" in err and "Traceback" not in err
    with socket.socket() as s:  # nothing was left listening
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_home_and_socket_are_private_whatever_the_umask(tmp_home):
    home = tmp_home / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    old = os.umask(0)
    try:
        d = Daemon(home).start()
    finally:
        os.umask(old)
    try:
        d.pfs("create-repo", "r")
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "pfs.sock").stat().st_mode) & 0o077 == 0
        assert stat.S_IMODE((home / "store.json").stat().st_mode) == 0o600
        for p in home.rglob("*"):
            assert stat.S_IMODE(p.lstat().st_mode) & 0o077 == 0, p
    finally:
        d.stop()
        d.kill()


def _copy_spec(name: str) -> specs.PipelineSpec:
    return specs.validate(
        specs.PipelineSpec(
            pipeline=specs.PipelineName(name),
            transform=specs.Transform(cmd=["sh"], stdin=["cp /pfs/data/a /pfs/out/a"]),
            input=specs.Input(atom=specs.AtomInput(repo="data", glob="/")),
        )
    )


def _admin_pipeline(cluster, name: str) -> str:
    """Pipeline `name` made by the admin, each robot role given its scope on it; its job's id."""
    pps, admin = RemotePipelines(cluster.unix, cluster.tokens["admin"]), cluster.auth(cluster.unix, "admin")
    c = cluster.client(cluster.unix, "admin")
    try:
        if name not in {p.name for p in pps.list_pipeline()}:
            pps.create_pipeline(_copy_spec(name))
            for role in ("reader", "writer", "owner"):
                admin.set_scope(name, f"robot:{role}", role)
        jobs = pps.flush_job([CommitRef("data", c.inspect_branch("data", "master").head)], [name])
        assert jobs and {j.state for j in jobs} == {"success"}, [x.message for x in pps.get_logs(name)]
        return jobs[-1].id
    finally:
        pps.close()
        admin.close()
        c.close()


def _settled(do):
    """A call whose refusal for the job's state (already done) is not the one under test."""

    def call():
        try:
            do()
        except FailedPrecondition:
            pass

    return call


# Each pipeline verb with the least role on the pipeline (its output repo) that may do it; for
# create-pipeline, the least role on its input.
def _pipeline_verbs(p: RemotePipelines, role: str, transport: str, job: str):
    datum = lambda: p.list_datum(job)[0].key  # noqa: E731
    return [
        ("reader", "create-pipeline", lambda: p.create_pipeline(_copy_spec(f"new-{role}-{transport}"))),
        ("reader", "inspect-pipeline", lambda: p.inspect_pipeline("pl")),
        ("reader", "list-job", lambda: p.list_job("pl")),
        ("reader", "inspect-job", lambda: p.inspect_job(job)),
        ("reader", "list-datum", lambda: p.list_datum(job)),
        ("reader", "inspect-datum", lambda: p.inspect_datum(job, datum())),
        ("reader", "get-logs", lambda: p.get_logs("pl")),
        ("reader", "get-logs --job", lambda: p.get_logs(job=job)),
        ("writer", "stop-pipeline", lambda: p.stop_pipeline("pl")),
        ("writer", "start-pipeline", lambda: p.start_pipeline("pl")),
        ("writer", "stop-job", lambda: p.stop_job(job)),
        ("writer", "restart-datum", _settled(lambda: p.restart_datum(job, datum()))),
        ("owner", "update-pipeline", lambda: p.create_pipeline(_copy_spec("pl"), update=True)),
        ("owner", "delete-pipeline", lambda: p.delete_pipeline("gone")),
    ]


@pytest.mark.parametrize("transport", ["unix", "https"])
def test_pipeline_acl_matrix_through_the_api(cluster, transport, monkeypatch):
    monkeypatch.setenv("PFS_CA", cluster.cert)
    address = cluster.unix if transport == "unix" else cluster.https
    job = _admin_pipeline(cluster, "pl")
    admin = RemotePipelines(cluster.unix, cluster.tokens["admin"])
    try:
        for role in ROLES:
            _admin_pipeline(cluster, "gone")  # again, for each role that may delete it
            p = RemotePipelines(address, cluster.tokens[role])
            try:
                # a reader of `data` may make a pipeline on it; the rest is the role on `pl`
                for least, verb, do in _pipeline_verbs(p, role, transport, job):
                    if _as_role(role, least, do) == "denied" and verb == "delete-pipeline":
                        assert "gone" in {x.name for x in admin.list_pipeline()}
                if role != "anonymous":  # a listing shows only the pipelines the caller may read
                    shown = {x.name for x in p.list_pipeline()}
                    assert ("pl" in shown) == (_RANK[role] >= _RANK["reader"]), (role, shown)
            finally:
                p.close()
            new = f"new-{role}-{transport}"
            if new in {x.name for x in admin.list_pipeline()}:
                owner = {e.subject: e.scope for e in cluster.auth(cluster.unix, "admin").get_acl(new)}
                assert owner.get(f"robot:{role}" if role != "admin" else "admin") == "owner", owner
                admin.delete_pipeline(new)
    finally:
        admin.close()


@pytest.mark.parametrize("transport", ["unix", "https"])
def test_pipeline_acl_matrix_through_the_cli(cluster, transport, tmp_path):
    job = _admin_pipeline(cluster, "pl")
    spec = tmp_path / "spec.json"
    verbs = [
        ("reader", ["inspect-pipeline", "pl"]),
        ("reader", ["list-job", "-p", "pl"]),
        ("reader", ["inspect-job", job]),
        ("reader", ["list-datum", job]),
        ("reader", ["get-logs", "-p", "pl"]),
        ("reader", ["create-pipeline", "-f", str(spec)]),
        ("writer", ["stop-pipeline", "pl"]),
        ("writer", ["start-pipeline", "pl"]),
        ("owner", ["update-pipeline", "-f", str(tmp_path / "pl.json")]),
    ]
    (tmp_path / "pl.json").write_bytes(msgspec.json.encode(_copy_spec("pl")))
    address = cluster.unix if transport == "unix" else cluster.https
    admin = RemotePipelines(cluster.unix, cluster.tokens["admin"])
    try:
        for role in ROLES:
            new = f"cli-{role}-{transport}"
            spec.write_bytes(msgspec.json.encode(_copy_spec(new)))
            _cli_verbs_as(cluster, address, role, tmp_path / "client", verbs)
            if new in {x.name for x in admin.list_pipeline()}:
                admin.delete_pipeline(new)
    finally:
        admin.close()


def _as_nobody(attempt) -> list[str]:
    """Run `attempt()` (a list of outcomes) in a forked child that became `nobody`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, json.dumps(attempt()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_another_local_user_reaches_neither_the_socket_nor_the_home(tmp_home):
    home = tmp_home / "home"
    d = Daemon(home).start()
    try:
        d.pfs("create-repo", "r")

        def attempt() -> list[str]:
            outcomes = []
            for what in ("pfs.sock", "store.json"):
                try:
                    if what.endswith(".sock"):
                        with socket.socket(socket.AF_UNIX) as s:
                            s.connect(str(home / what))
                    else:
                        (home / what).read_bytes()
                    outcomes.append("reached")
                except OSError as e:
                    outcomes.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
            return outcomes

        os.chmod(tmp_home, 0o711)  # the tests' own temporary directory must not be what stops it
        assert _as_nobody(attempt) == ["EACCES", "EACCES"]
        os.chmod(home, 0o711)  # even once someone opens the home for traversal, its files stay shut
        assert _as_nobody(attempt) == ["EACCES", "EACCES"]
    finally:
        d.stop()
