"""Pipeline specs: the documentation's specs parse verbatim; bad specs fail naming the field."""

from __future__ import annotations

import json

import pytest

from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler import spec as specs

EDGES = """
{
    "pipeline": {
        "name": "edges"
},
    "transform": {
        "cmd": [ "python3", "/edges.py" ],
        "image": "pachyderm/opencv"
},
    "input": {
        "atom": {
            "repo": "images",
            "glob": "/*"
        }
}
}
"""

MONTAGE = {
    "pipeline": {"name": "montage"},
    "input": {"cross": [{"atom": {"glob": "/", "repo": "images"}}, {"atom": {"glob": "/", "repo": "edges"}}]},
    "transform": {
        "cmd": ["sh"],
        "image": "v4tech/imagemagick",
        "stdin": [
            "montage -shadow -background SkyBlue -geometry 300x300+2+2 $(find /pfs -type f | sort) /pfs/out/montage.png"
        ],
    },
}

FULL = {
    "pipeline": {"name": "full"},
    "description": "every field",
    "transform": {
        "image": "img:1",
        "cmd": ["sh"],
        "stdin": ["echo"],
        "env": {"A": "1"},
        "secrets": [{"name": "s", "mount_path": "/s"}, {"name": "t", "env_var": "T", "key": "k"}],
        "image_pull_secrets": ["reg"],
        "accept_return_code": [3],
        "debug": True,
        "user": "root",
        "working_dir": "/tmp",
    },
    "parallelism_spec": {"coefficient": 0.5},
    "resource_requests": {"memory": "1.2G", "cpu": 0.5, "disk": "1G"},
    "resource_limits": {"memory": "2G", "cpu": 1, "gpu": 1},
    "datum_timeout": "1m30s",
    "datum_tries": 2,
    "job_timeout": "1h",
    "input": {
        "union": [
            {"pfs": {"repo": "a", "glob": "/*", "lazy": True}},
            {"cron": {"name": "tick", "spec": "@every 10s", "start": "2026-01-01T00:00:00Z"}},
        ]
    },
    "output_branch": "out",
    "egress": {"URL": "s3://bucket/dir"},
    "standby": True,
    "incremental": True,
    "cache_size": "64M",
    "enable_stats": True,
    "service": {"internal_port": 8888, "external_port": 30888},
    "max_queue_size": 2,
    "chunk_spec": {"number": 10, "size_bytes": 1000},
    "scheduling_spec": {"node_selector": {"disk": "ssd"}, "priority_class_name": "high"},
    "pod_spec": "{}",
}


def test_documentation_specs_parse():
    edges = specs.parse(EDGES)
    assert edges.name == "edges" and specs.atom(edges.input).glob == "/*"
    assert specs.atom(edges.input).branch == "master" and edges.datum_tries == 3
    montage = specs.parse(json.dumps(MONTAGE))
    assert [specs.atom(i).repo for i in montage.input.cross] == ["images", "edges"]
    full = specs.parse(json.dumps(FULL))
    assert full.parallelism_spec.coefficient == 0.5 and specs.workers(full, 4) == 2
    assert specs.atoms(full.input, "full") == [("a", "master", "a"), ("full_tick", "master", "tick")]
    assert specs.duration(full.datum_timeout) == 90


def test_yaml_specs_parse():
    text = (
        "pipeline: {name: wc}\ntransform:\n  cmd: [sh]\n  stdin: [wc -l /pfs/data/*]\n"
        "input:\n  atom: {repo: data, glob: '/*'}\n"
    )
    assert specs.parse(text).transform.stdin == ["wc -l /pfs/data/*"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"transform": {"cmnd": ["x"]}}, "cmnd"),
        ({"transform": {"cmd": []}}, "transform.cmd"),
        ({"pipeline": {"name": "-bad"}}, "pipeline.name"),
        ({"input": {"atom": {"repo": "a", "glob": "/*"}, "cron": {"name": "t", "spec": "@daily"}}}, "exactly one"),
        (
            {"input": {"cross": [{"atom": {"repo": "a", "glob": "/*"}}, {"atom": {"repo": "a", "glob": "/"}}]}},
            "two inputs named",
        ),
        ({"input": {"cron": {"name": "t", "spec": "every day"}}}, "input.cron.spec"),
        ({"input": {"git": {"URL": "https://github.com/x/y.git"}}}, "git"),
        ({"datum_timeout": "soon"}, "datum_timeout"),
        ({"parallelism_spec": {"constant": 2, "coefficient": 1}}, "parallelism_spec"),
        ({"datum_tries": "three"}, "datum_tries"),
        ({"surprise": 1}, "surprise"),
        # every number is bounded where it is decoded
        ({"parallelism_spec": {"coefficient": 1e308}}, "parallelism_spec.coefficient"),
        ({"parallelism_spec": {"constant": -1}}, "parallelism_spec.constant"),
        ({"parallelism_spec": {"constant": 100_000}}, "parallelism_spec.constant"),
        ({"datum_tries": 0}, "datum_tries"),
        ({"datum_tries": 10**9}, "datum_tries"),
        ({"datum_timeout": "99999999h"}, "datum_timeout"),
        ({"datum_timeout": "1" + "0" * 400 + "s"}, "datum_timeout"),
        ({"resource_limits": {"cpu": -2}}, "resource_limits.cpu"),
        ({"resource_requests": {"gpu": 10**6}}, "resource_requests.gpu"),
        ({"service": {"internal_port": 70000}}, "service.internal_port"),
        ({"transform": {"cmd": ["true"], "accept_return_code": [256]}}, "accept_return_code"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"input": {"cron": {"name": "t", "spec": "@every 1ms"}}}, "at least 1s"),
    ],
)
def test_bad_specs_name_the_field(change, message):
    spec = {
        "pipeline": {"name": "p"},
        "transform": {"cmd": ["true"]},
        "input": {"atom": {"repo": "a", "glob": "/*"}},
        **change,
    }
    with pytest.raises(InvalidArgument) as e:
        specs.parse(json.dumps(spec), "p.json")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_schedules_and_durations():
    assert specs.schedule("@every 10s") == ("every", 10.0)
    assert specs.schedule("@daily")[0] == "cron"
    assert specs.schedule("*/10 * * * *")[0] == "cron"
    assert specs.duration("1h2m3s") == 3723
    with pytest.raises(InvalidArgument):
        specs.duration("10")
