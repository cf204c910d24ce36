"""Pipelines end to end: a real daemon runs its scheduler and worker processes; the documentation's
examples, incremental processing, cron, lazy pipes, copy elision, retries, updates and restarts."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess

import pytest

from helpers import PFS, read_line, wait_for
from pfsfuse.api.types import Put
from pfsfuse.metadata.errors import AlreadyExists, InvalidArgument, NotFound
from pfsfuse.metadata.records import CommitRef
from pfsfuse.scheduler import spec as specs
from pfsfuse.scheduler.api import RemotePipelines


@pytest.fixture
def api(daemon):
    client = daemon.client()
    pps = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    try:
        yield client, pps
    finally:
        pps.close()
        client.close()


def pipeline(name, input, cmd=("sh",), stdin=(), image="", user="", **extra):
    return specs.validate(
        specs.PipelineSpec(
            pipeline=specs.PipelineName(name),
            transform=specs.Transform(cmd=list(cmd), stdin=list(stdin), image=image, user=user),
            input=msgspec_input(input),
            **extra,
        )
    )


def msgspec_input(value) -> specs.Input:
    import msgspec

    return msgspec.convert(value, specs.Input)


def put(client, repo, files: dict[str, bytes], ref="master"):
    return client.write_files(repo, ref, [Put(p, stream=io.BytesIO(d)) for p, d in files.items()]).commit


def read(client, repo, ref, path) -> bytes:
    return b"".join(client.get_file(repo, ref, path))


def flush(pps, repo, commit):
    return pps.flush_job([CommitRef(repo, commit)])


def progress(job) -> str:
    return f"{job.processed} + {job.skipped} / {job.total}"


def png(color) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def test_beginner_tutorial(api):
    """images -> edges -> montage, with the documented incremental progress of edges' jobs."""
    client, pps = api
    client.create_repo("images")
    first = put(client, "images", {"liberty.png": png("red")})
    pps.create_pipeline(
        pipeline(
            "edges",
            {"atom": {"repo": "images", "glob": "/*"}},
            cmd=["python3", "-m", "pfsfuse.tools.examples.edges"],
            image="pachyderm/opencv",
        )
    )
    jobs = [flush(pps, "images", first)[-1]]
    second = put(client, "images", {"AT-AT.png": png("green")})
    jobs.append(flush(pps, "images", second)[0])
    third = put(client, "images", {"kitten.png": png("blue")})
    jobs.append(flush(pps, "images", third)[0])
    assert [progress(j) for j in jobs] == ["1 + 0 / 1", "1 + 1 / 2", "1 + 2 / 3"]
    assert all(j.state == "success" for j in jobs)
    assert {f.path for f in client.list_file("edges", "master")} == {"liberty.png", "AT-AT.png", "kitten.png"}
    head = client.inspect_commit("edges", "master")
    assert CommitRef("images", third) in head.provenance

    pps.create_pipeline(
        pipeline(
            "montage",
            {"cross": [{"atom": {"glob": "/", "repo": "images"}}, {"atom": {"glob": "/", "repo": "edges"}}]},
            cmd=["python3", "-m", "pfsfuse.tools.examples.montage"],
            image="v4tech/imagemagick",
        )
    )
    jobs = flush(pps, "images", third)
    montage = next(j for j in jobs if j.pipeline == "montage")
    assert montage.state == "success" and progress(montage) == "1 + 0 / 1"
    from PIL import Image

    with Image.open(io.BytesIO(read(client, "montage", "master", "montage.png"))) as img:
        assert img.size[0] >= 2 * 300
    assert [p.name for p in pps.list_pipeline()] == ["edges", "montage"]


def test_reduce_concatenates_outputs_in_datum_order(api):
    client, pps = api
    client.create_repo("data")
    c = put(client, "data", {f"doc{i}.txt": f"word{i} common\n".encode() for i in range(5)})
    pps.create_pipeline(
        pipeline(
            "count",
            {"atom": {"repo": "data", "glob": "/*"}},
            stdin=["for f in /pfs/data/*; do echo $(basename $f) $(wc -w < $f) >> /pfs/out/counts; done"],
        )
    )
    [job] = flush(pps, "data", c)
    assert job.state == "success" and job.total == 5
    lines = read(client, "count", "master", "counts").decode().splitlines()
    by_key = {d.key: d.inputs[0].path for d in pps.list_datum(job.id)}
    assert lines == [f"{by_key[k]} 2" for k in sorted(by_key)]


def test_cross_and_union_inputs(api):
    client, pps = api
    for repo in ("a", "b"):
        client.create_repo(repo)
    ca = put(client, "a", {"1": b"a1", "2": b"a2"})
    put(client, "b", {"x": b"bx", "y": b"by", "z": b"bz"})
    pps.create_pipeline(
        pipeline(
            "pairs",
            {"cross": [{"atom": {"repo": "a", "glob": "/*"}}, {"atom": {"repo": "b", "glob": "/*"}}]},
            stdin=['echo "$(cat $a) $(cat $b)" > /pfs/out/$(basename $a)-$(basename $b)'],
        )
    )
    pps.create_pipeline(
        pipeline(
            "both",
            {
                "union": [
                    {"atom": {"repo": "a", "glob": "/*", "name": "in"}},
                    {"atom": {"repo": "b", "glob": "/*", "name": "in"}},
                ]
            },
            stdin=["cp -r /pfs/in/* /pfs/out/"],
        )
    )
    jobs = {j.pipeline: j for j in flush(pps, "a", ca)}
    assert jobs["pairs"].total == 6 and jobs["both"].total == 5
    assert read(client, "pairs", "master", "2-y") == b"a2 by\n"
    assert sorted(f.path for f in client.list_file("both", "master")) == ["1", "2", "x", "y", "z"]


def test_deferred_processing_with_a_staging_branch(api):
    client, pps = api
    client.create_repo("data")
    client.create_branch("data", "master")
    pps.create_pipeline(
        pipeline("proc", {"atom": {"repo": "data", "glob": "/"}}, stdin=["ls /pfs/data > /pfs/out/seen"])
    )
    staged = [put(client, "data", {f"f{i}": b"x"}, ref="staging") for i in range(3)]
    assert pps.list_job("proc") == []  # nothing on master: nothing to process
    client.create_branch("data", "master", head="staging^1")
    [job] = flush(pps, "data", staged[1])
    assert read(client, "proc", "master", "seen") == b"f0\nf1\n"
    client.create_branch("data", "master", head="staging")
    flush(pps, "data", staged[2])
    assert read(client, "proc", "master", "seen") == b"f0\nf1\nf2\n"
    assert len(pps.list_job("proc")) == 2


def test_cron_input_ticks(api):
    client, pps = api
    pps.create_pipeline(
        pipeline("ticker", {"cron": {"name": "tick", "spec": "@every 2s"}}, stdin=["cp /pfs/tick/time /pfs/out/last"])
    )
    assert "ticker_tick" in {r.name for r in client.list_repo()}
    wait_for(lambda: sum(j.state == "success" for j in pps.list_job("ticker")) >= 2, timeout=30, what="two cron jobs")
    assert read(client, "ticker", "master", "last").decode().endswith("Z")


def test_lazy_pipes_with_20000_files_fetch_only_what_is_read(api, tmp_path, daemon):
    client, pps = api
    src = tmp_path / "many"
    src.mkdir()
    for i in range(20_000):
        (src / f"f{i:05d}").write_bytes(b"%d\n" % i)
    client.create_repo("many")
    daemon.pfs("put-file", "many", "master", "many", "-r", "-f", str(src))
    commit = client.inspect_commit("many", "master").id
    pps.create_pipeline(
        pipeline(
            "pick",
            {"atom": {"repo": "many", "glob": "/", "lazy": True}},
            stdin=[
                "test -p /pfs/many/many/f12345 && ls /pfs/many/many | wc -l > /pfs/out/count"
                " && cat /pfs/many/many/f12345 > /pfs/out/picked"
            ],
        )
    )
    [job] = flush(pps, "many", commit)
    assert job.state == "success", job.reason
    assert read(client, "pick", "master", "picked") == b"12345\n"
    assert job.downloaded == len(b"12345\n")  # the one file read, nothing else
    assert read(client, "pick", "master", "count").strip() == b"20000"


def test_lazy_pipes_of_one_datum_after_another(api):
    client, pps = api
    client.create_repo("few")
    c = put(client, "few", {f"f{i}": b"%d\n" % i for i in range(4)})
    pps.create_pipeline(
        pipeline(
            "each",
            {"atom": {"repo": "few", "glob": "/*", "lazy": True}},
            parallelism_spec=specs.ParallelismSpec(constant=1),
            stdin=["test -p $few && cat $few > /pfs/out/$(basename $few)"],
            datum_timeout="30s",
        )
    )
    [job] = flush(pps, "few", c)
    assert job.state == "success", job.reason
    assert [read(client, "each", "master", f"f{i}") for i in range(4)] == [b"%d\n" % i for i in range(4)]


def test_symlink_shuffle_uploads_nothing(api, daemon):
    client, pps = api
    client.create_repo("raw")
    c = put(client, "raw", {f"{k}-{i}.dat": os.urandom(50_000) for k in "ab" for i in range(20)})
    chunks_before = _stored(daemon)
    shuffle = [
        "set -e",
        "test ! -s $raw",  # an empty file,
        "cat $raw > /dev/null",  # which opens
        "f=$(basename $raw); mkdir -p /pfs/out/${f%%-*}; ln -s $raw /pfs/out/${f%%-*}/$f",
    ]
    atom = {"repo": "raw", "glob": "/*", "empty_files": True}
    pps.create_pipeline(pipeline("shuffle", {"atom": atom}, stdin=shuffle))
    [job] = flush(pps, "raw", c)
    assert job.state == "success" and job.uploaded == 0
    assert read(client, "shuffle", "master", "a/a-3.dat") == read(client, "raw", "master", "a-3.dat")
    assert len(client.list_file("shuffle", "master", "b")) == 20
    assert _stored(daemon) - chunks_before < 64 << 10  # tree pages of commits only


def _stored(daemon) -> int:
    out = subprocess.run(["du", "-sb", str(daemon.home / "chunks")], capture_output=True, text=True)
    return int(out.stdout.split()[0])


def test_failed_datums_are_retried_then_fail_the_job_naming_the_datum(api, tmp_path):
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"ok": b"1", "flaky": b"2", "bad": b"3"})
    marks = tmp_path / "tries"
    marks.mkdir()
    script = (
        f'n=$(basename $in); echo try >> {marks}/$n; echo "processing $n"; '
        f"if [ $n = bad ]; then exit 3; fi; "
        f"if [ $n = flaky ] && [ $(wc -l < {marks}/$n) -lt 2 ]; then exit 1; fi; cp $in /pfs/out/"
    )
    pps.create_pipeline(pipeline("retry", {"atom": {"repo": "in", "glob": "/*"}}, stdin=[script], datum_tries=2))
    [job] = flush(pps, "in", c)
    assert job.state == "failure"
    bad = next(d for d in pps.list_datum(job.id) if d.inputs[0].path == "bad")
    assert bad.key in job.reason and "exit status 3" in job.reason
    assert (marks / "bad").read_text().count("try") == 2
    # flaky's second try may be dropped: a failing job starts no more datums.
    flaky_tries = (marks / "flaky").read_text().count("try")
    assert flaky_tries in (1, 2)
    logs = [line.message for line in pps.get_logs("retry")]
    assert "processing bad" in logs
    with pytest.raises(NotFound):
        client.inspect_commit("retry", "master")  # no half-finished output ever became the head
    # Fixing the code (update without --reprocess) reuses the datums that succeeded.
    fixed = specs.parse(
        json.dumps(
            {
                "pipeline": {"name": "retry"},
                "input": {"atom": {"repo": "in", "glob": "/*"}},
                "transform": {"cmd": ["sh"], "stdin": ["cp $in /pfs/out/"]},
            }
        )
    )
    pps.create_pipeline(fixed, update=True)
    [job2] = [j for j in flush(pps, "in", c) if j.id != job.id]
    # Skipped: ok, and flaky if its second try ran (and so succeeded).
    assert job2.state == "success" and progress(job2) == ("1 + 2 / 3" if flaky_tries == 2 else "2 + 1 / 3")


def test_update_pipeline_with_and_without_reprocess(api):
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"a": b"1", "b": b"2"})
    pps.create_pipeline(pipeline("p", {"atom": {"repo": "in", "glob": "/*"}}, stdin=["cp $in /pfs/out/"]))
    flush(pps, "in", c)
    pps.create_pipeline(
        pipeline("p", {"atom": {"repo": "in", "glob": "/*"}}, stdin=["cat $in $in > /pfs/out/$(basename $in)"]),
        update=True,
    )
    c2 = put(client, "in", {"c": b"3"})
    [job] = flush(pps, "in", c2)
    assert progress(job) == "1 + 2 / 3" and read(client, "p", "master", "a") == b"1"
    pps.create_pipeline(
        pipeline("p", {"atom": {"repo": "in", "glob": "/*"}}, stdin=["cat $in $in > /pfs/out/$(basename $in)"]),
        update=True,
        reprocess=True,
    )
    first, job = flush(pps, "in", c2)  # both jobs over c2, oldest first
    assert progress(first) == "1 + 2 / 3" and progress(job) == "3 + 0 / 3" and read(client, "p", "master", "a") == b"11"
    assert pps.inspect_pipeline("p").version == 3


def test_bad_pipelines_are_refused(api):
    client, pps = api
    client.create_repo("in")
    with pytest.raises(NotFound, match="input repo nope"):
        pps.create_pipeline(pipeline("p", {"atom": {"repo": "nope", "glob": "/*"}}, cmd=["true"]))
    pps.create_pipeline(pipeline("p", {"atom": {"repo": "in", "glob": "/*"}}, cmd=["true"]))
    with pytest.raises(AlreadyExists):
        pps.create_pipeline(pipeline("p", {"atom": {"repo": "in", "glob": "/*"}}, cmd=["true"]))
    pps.create_pipeline(pipeline("q", {"atom": {"repo": "p", "glob": "/*"}}, cmd=["true"]))
    with pytest.raises(InvalidArgument, match="cycle"):  # p would read q, which reads p
        pps.create_pipeline(pipeline("p", {"atom": {"repo": "q", "glob": "/*"}}, cmd=["true"]), update=True)


def test_glob_matching_nothing_and_timeouts(api):
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"a": b"1"})
    pps.create_pipeline(pipeline("none", {"atom": {"repo": "in", "glob": "/nothing*"}}, cmd=["true"]))
    pps.create_pipeline(
        pipeline("slow", {"atom": {"repo": "in", "glob": "/*"}}, stdin=["sleep 30"], datum_timeout="1s", datum_tries=1)
    )
    jobs = {j.pipeline: j for j in flush(pps, "in", c)}
    assert jobs["none"].state == "success" and jobs["none"].total == 0 and "matched nothing" in jobs["none"].reason
    assert jobs["slow"].state == "failure" and "datum_timeout" in jobs["slow"].reason


def test_a_killed_worker_is_replaced_and_its_datum_retried(api, daemon, tmp_path):
    client, pps = api
    client.create_repo("in")
    go, began = tmp_path / "go", tmp_path / "began"
    c = put(client, "in", {"a": b"1"})
    pps.create_pipeline(
        pipeline(
            "victim",
            {"atom": {"repo": "in", "glob": "/*"}},
            datum_tries=3,
            stdin=[f"touch {began}; while [ ! -e {go} ]; do sleep 0.05; done; cp $in /pfs/out/"],
        )
    )
    wait_for(began.exists, what="the datum's command to start")
    for pid in _worker_pids(daemon, "victim"):
        os.kill(pid, signal.SIGKILL)
    go.touch()
    [job] = flush(pps, "in", c)
    assert job.state == "success" and job.restarts >= 1
    assert read(client, "victim", "master", "a") == b"1"


def _worker_pids(daemon, pipeline) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"pfsfuse.scheduler.worker {pipeline} "], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_daemon_restart_during_a_job_resumes_it_once(api, daemon, tmp_path):
    client, pps = api
    client.create_repo("in")
    put(client, "in", {f"f{i}": b"%d" % i for i in range(6)})
    pps.create_pipeline(
        pipeline(
            "steady",
            {"atom": {"repo": "in", "glob": "/*"}},
            stdin=["sleep 0.3; cp $in /pfs/out/"],
            parallelism_spec=specs.ParallelismSpec(constant=1),
        )
    )
    wait_for(lambda: any(j.processed >= 2 for j in pps.list_job("steady")), what="two datums processed")
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.start()
    pps2 = RemotePipelines(f"unix:{daemon.home}/pfs.sock")
    client2 = daemon.client()
    try:
        [job] = pps2.list_job("steady")
        job = pps2.inspect_job(job.id, block=True)
        assert job.state == "success" and job.total == 6 and job.processed == 6
        assert len(client2.list_commit("steady")) == 1
        assert sorted(f.path for f in client2.list_file("steady", "master")) == [f"f{i}" for i in range(6)]
        assert client2.fsck() == []
    finally:
        pps2.close()
        client2.close()


def test_pipeline_cli(daemon, tmp_path):
    daemon.pfs("create-repo", "images")
    daemon.pfs("put-file", "images", "master", "a.txt", input=b"hello")
    spec = tmp_path / "up.json"
    spec.write_text(
        json.dumps(
            {
                "pipeline": {"name": "up"},
                "transform": {
                    "cmd": ["sh"],
                    "stdin": ["tr a-z A-Z < $images > /pfs/out/$(basename $images)"],
                    "image": "alpine",
                },
                "input": {"atom": {"repo": "images", "glob": "/*"}},
            }
        )
    )
    daemon.pfs("create-pipeline", "-f", str(spec))
    out = daemon.pfs("flush-commit", "images@master").stdout.decode()
    assert out.startswith("REPO") and "up " in out
    jobs = daemon.pfs("list-job").stdout.decode().splitlines()
    assert jobs[0].split() == [
        "ID",
        "OUTPUT",
        "COMMIT",
        "STARTED",
        "DURATION",
        "RESTART",
        "PROGRESS",
        "DL",
        "UL",
        "STATE",
    ]
    assert "1 + 0 / 1" in jobs[1] and jobs[1].endswith("success")
    listed = daemon.pfs("list-repo").stdout.decode()
    assert "up " in listed and "__up" not in listed  # the datum repo is internal
    assert "__up" in daemon.pfs("list-repo", "--all").stdout.decode()
    assert daemon.pfs("get-file", "up", "master", "a.txt").stdout == b"HELLO"
    info = daemon.pfs("inspect-pipeline", "up").stdout.decode()
    assert "alpine (runs on this host: transform.image is recorded, not pulled)" in info
    assert "local (processes on the daemon's host)" in info
    assert (
        "cmnd"
        in daemon.pfs(
            "create-pipeline",
            "-f",
            str(_write(tmp_path, {"pipeline": {"name": "x"}, "transform": {"cmnd": []}})),
            check=False,
        ).stderr.decode()
    )
    daemon.pfs("stop-pipeline", "up")
    assert "paused" in daemon.pfs("list-pipeline").stdout.decode()
    daemon.pfs("delete-pipeline", "up")
    assert "up" not in {r["name"] for r in json.loads(daemon.pfs("list-repo", "--json").stdout)}


def _write(tmp_path, obj):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    return path


def test_egress_and_stats(api, tmp_path):
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"a": b"1", "b": b"22"})
    egress = tmp_path / "egress"
    egress.mkdir()
    pps.create_pipeline(
        pipeline(
            "p",
            {"atom": {"repo": "in", "glob": "/*"}},
            stdin=["echo working on $in; cp $in /pfs/out/"],
            egress=specs.Egress(f"file://{egress}"),
            enable_stats=True,
        )
    )
    [job] = flush(pps, "in", c)
    assert job.state == "success"
    assert (egress / "a").read_bytes() == b"1" and (egress / "b").read_bytes() == b"22"
    stats = {f.path for f in client.walk_file("p", "stats", "") if f.type == "file"}
    keys = {d.key for d in pps.list_datum(job.id)}
    assert stats == {f"{job.id}/job.json"} | {f"{job.id}/{k}/{n}" for k in keys for n in ("stats.json", "logs")}
    logs = b"".join(read(client, "p", "stats", f"{job.id}/{k}/logs") for k in keys)
    assert b"working on /pfs/in/a" in logs and b"working on /pfs/in/b" in logs
    assert read(client, "p", "master", "a") == b"1"  # the stats branch leaves the output alone


@pytest.mark.skipif(os.geteuid() != 0, reason="workers read inputs through FUSE only as root")
def test_inputs_are_fetched_as_they_are_read(api):
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"big.bin": random.Random(3).randbytes(8 << 20), "small.txt": b"just this\n"})
    pps.create_pipeline(
        pipeline(
            "one",
            {"atom": {"repo": "in", "glob": "/"}},
            stdin=["ls -l /pfs/in > /pfs/out/listing; cp /pfs/in/small.txt /pfs/out/"],
        )
    )
    [job] = flush(pps, "in", c)
    assert job.state == "success", job.reason
    assert read(client, "one", "master", "small.txt") == b"just this\n"
    assert str(8 << 20) in read(client, "one", "master", "listing").decode()  # listed, not fetched
    assert job.downloaded == len(b"just this\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="without root /pfs cannot be made read-only")
def test_only_pfs_out_is_writable(api):
    """Small inputs (fetched up front), big ones (read as they are read), /pfs itself: every
    write but to /pfs/out fails with EROFS, and a command failing so is told why."""
    client, pps = api
    client.create_repo("in")
    c = put(client, "in", {"small.txt": b"small\n", "big.bin": b"b" * (200 << 10)})
    pps.create_pipeline(
        pipeline(
            "probe",
            {"atom": {"repo": "in", "glob": "/*"}},
            stdin=[
                "f=/pfs/out/$(basename $in)",
                'for p in "$in" /pfs/in/new /pfs/new; do echo x 2>>$f >>"$p"; done',
                "mkdir /pfs/in/d /pfs/d 2>>$f; ln -s x /pfs/link 2>>$f; true",
            ],
        )
    )
    [job] = flush(pps, "in", c)
    assert job.state == "success", job.reason
    for name in ("small.txt", "big.bin"):
        errors = read(client, "probe", "master", name).decode().splitlines()
        assert len(errors) == 6 and all("Read-only file system" in e for e in errors), errors
    assert read(client, "in", c, "small.txt") == b"small\n"
    assert [f.path for f in client.list_file("in", c, "")] == ["big.bin", "small.txt"]

    pps.create_pipeline(
        pipeline(
            "oops", {"atom": {"repo": "in", "glob": "/small.txt"}}, datum_tries=1, stdin=["echo x > /pfs/in/small.txt"]
        )
    )
    [job] = pps.flush_job([CommitRef("in", c)], ["oops"])
    assert job.state == "failure" and "only /pfs/out is writable under /pfs" in job.reason
    logs = [line.message for line in pps.get_logs("oops")]
    assert any("Read-only file system" in m for m in logs) and any("only /pfs/out is writable" in m for m in logs)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a command as another user")
def test_a_command_run_as_another_user_writes_its_output(api):
    """transform.user: /pfs/out and what an incremental datum finds there (its previous output)
    belong to that user; an unknown user is refused at create-pipeline, saying so."""
    client, pps = api
    client.create_repo("in")
    first = put(client, "in", {"a.txt": b"a\n"})
    pps.create_pipeline(
        pipeline(
            "tally",
            {"atom": {"repo": "in", "glob": "/"}},
            incremental=True,
            stdin=[
                "id -un > /pfs/out/who",
                "mkdir -p /pfs/out/d",
                "echo run >> /pfs/out/d/runs",
                "ln -sf d/runs /pfs/out/link",
            ],
            user="nobody",
        )
    )
    [job] = flush(pps, "in", first)
    assert job.state == "success", job.reason
    second = put(client, "in", {"b.txt": b"b\n"})
    [job] = flush(pps, "in", second)
    assert job.state == "success", job.reason
    assert read(client, "tally", "master", "who") == b"nobody\n"
    assert read(client, "tally", "master", "d/runs") == b"run\nrun\n"  # appended to the previous output

    with pytest.raises(InvalidArgument, match="no user 'no-such-user' on this machine"):  # refused up front
        pps.create_pipeline(
            pipeline("ghost", {"atom": {"repo": "in", "glob": "/*"}}, stdin=["true"], user="no-such-user")
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="without root /pfs is a scratch directory, not our file system")
def test_hard_links_to_inputs_are_references(api, daemon):
    """/pfs is one file system: `ln` from /pfs/out to an input stores a reference (nothing is
    uploaded) and reads as the input; the rest of /pfs/out behaves as a disk does."""
    client, pps = api
    client.create_repo("raw")
    c = put(client, "raw", {"big.bin": random.Random(5).randbytes(3 << 20), "d/small.txt": b"small\n"})
    before = _stored(daemon)
    pps.create_pipeline(
        pipeline(
            "links",
            {"atom": {"repo": "raw", "glob": "/"}},
            stdin=[
                "set -e",
                "ln /pfs/raw/big.bin /pfs/out/big.bin && cmp /pfs/raw/big.bin /pfs/out/big.bin",
                "mkdir /pfs/out/sub && ln /pfs/raw/d/small.txt /pfs/out/sub/tmp"
                " && mv /pfs/out/sub/tmp /pfs/out/sub/small.txt",
                "if echo x >> /pfs/out/big.bin; then exit 9; fi",  # a link to an input is read-only
                "echo draft > /pfs/out/note.tmp && chmod +x /pfs/out/note.tmp && mv /pfs/out/note.tmp /pfs/out/note",
                "ln /pfs/out/note /pfs/out/note2 && printf abcdef > /pfs/out/t && truncate -s 3 /pfs/out/t",
            ],
        )
    )
    [job] = flush(pps, "raw", c)
    assert job.state == "success", job.reason
    assert job.uploaded == 2 * len(b"draft\n") + 3
    assert job.downloaded == 3 << 20  # cmp read both names: the link reads the same chunks
    assert client.inspect_file("links", "master", "big.bin").hash == client.inspect_file("raw", c, "big.bin").hash
    assert read(client, "links", "master", "sub/small.txt") == b"small\n"
    assert read(client, "links", "master", "note") == read(client, "links", "master", "note2") == b"draft\n"
    assert client.inspect_file("links", "master", "note").executable
    assert read(client, "links", "master", "t") == b"abc"
    assert _stored(daemon) - before < 64 << 10  # tree pages and the small files only


def test_logs_of_a_running_datum_show_as_they_come(api, daemon, tmp_path):
    """get-logs shows what a running command printed; -f prints it, then the rest, each line
    once, and ends with the job."""
    client, pps = api
    go = tmp_path / "go"
    client.create_repo("in")
    c = put(client, "in", {"a": b"1"})
    pps.create_pipeline(
        pipeline(
            "talk",
            {"atom": {"repo": "in", "glob": "/*"}},
            stdin=["echo started; echo second", f"while [ ! -e {go} ]; do sleep 0.02; done", "echo finished"],
        )
    )
    follow = subprocess.Popen([PFS, "get-logs", "-p", "talk", "-f", "--raw"], env=daemon.env, stdout=subprocess.PIPE)
    try:

        def live():
            return [line.message for line in pps.get_logs("talk")]

        wait_for(lambda: "second" in live(), what="the running datum's lines")
        assert live() == ["started", "second"]  # the datum is still running
        [job] = pps.list_job("talk")
        assert not job.done
        [datum] = pps.list_datum(job.id)
        assert [line.message for line in pps.get_logs(job=job.id, datum=datum.key)] == ["started", "second"]
        assert read_line(follow.stdout) == b"started\n"  # -f shows it while the command runs
        go.touch()
        [job] = flush(pps, "in", c)
        assert job.state == "success", job.reason
        assert live() == ["started", "second", "finished"]
        rest, _ = follow.communicate(timeout=30)  # -f ends with the job
        assert rest == b"second\nfinished\n" and follow.returncode == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_records_of_split_files_show_with_their_header_and_footer(api, daemon):
    """Small files are fetched up front, but not a split file's records: those read framed."""
    client, pps = api
    daemon.pfs("create-repo", "bar")
    daemon.pfs("put-file", "bar", "master", "users", "--split", "line", input=b"4,alice\n7,bob\n")
    daemon.pfs("put-header", "bar", "master", "users", input=b"id,name\n")
    daemon.pfs("put-footer", "bar", "master", "users", input=b"# end\n")
    c = client.inspect_commit("bar", "master").id
    pps.create_pipeline(
        pipeline("framed", {"atom": {"repo": "bar", "glob": "/users/*"}}, stdin=["cp $bar /pfs/out/$(basename $bar)"])
    )
    [job] = flush(pps, "bar", c)
    assert job.state == "success", job.reason
    assert read(client, "framed", "master", "0000000000000001") == b"id,name\n7,bob\n# end\n"
