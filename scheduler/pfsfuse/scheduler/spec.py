"""Pipeline specs in Pachyderm 1.7's JSON (or YAML), validated with one clear error per problem.

Unknown fields are refused with the field's location (`$.transform.cmnd`), as are wrong types
and values that cannot work (an empty cmd, two input kinds in one input, a bad glob or schedule).
Fields that only matter on Kubernetes (secrets, resources, scheduling) are kept as given.
Every number has bounds (a `coefficient` of 1e308 or a negative port is refused where it is
decoded), and so do durations and cron periods.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from pfsfuse import urlpolicy
from pfsfuse.metadata import names
from pfsfuse.metadata.errors import InvalidArgument
from pfsfuse.scheduler import identity

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,48}[A-Za-z0-9])?")
_SALT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Limits: what one spec may ask of the machine or cluster that runs it.
MAX_WORKERS = 256  # parallelism_spec.constant, and what a coefficient may come to
MAX_COEFFICIENT = 64.0  # workers per CPU
MAX_TRIES = 100  # datum_tries
MAX_DURATION = 366 * 86400.0  # datum_timeout, job_timeout, scale_down_threshold, cron periods
MIN_CRON_PERIOD = 1.0  # seconds between two ticks of a cron input
_Workers = Annotated[int, Meta(ge=0, le=MAX_WORKERS)]
_Coefficient = Annotated[float, Meta(ge=0.0, le=MAX_COEFFICIENT)]
_Tries = Annotated[int, Meta(ge=1, le=MAX_TRIES)]
_Port = Annotated[int, Meta(ge=0, le=65535)]
_ReturnCode = Annotated[int, Meta(ge=0, le=255)]
_Cpus = Annotated[float, Meta(ge=0.0, le=4096.0)]
_Gpus = Annotated[int, Meta(ge=0, le=64)]
_QueueSize = Annotated[int, Meta(ge=1, le=10_000)]
_Count = Annotated[int, Meta(ge=0, le=1 << 50)]


class _Spec(Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class PipelineName(_Spec):
    name: str


class Secret(_Spec):
    name: str
    mount_path: str = ""
    env_var: str = ""
    key: str = ""


class Transform(_Spec):
    cmd: list[str]
    image: str = ""
    stdin: list[str] = []
    env: dict[str, str] = {}
    secrets: list[Secret] = []
    image_pull_secrets: list[str] = []
    accept_return_code: list[_ReturnCode] = []
    debug: bool = False
    user: str = ""
    working_dir: str = ""


class ParallelismSpec(_Spec):
    constant: _Workers = 0
    coefficient: _Coefficient = 0.0


class Resources(_Spec):
    memory: str = ""
    cpu: _Cpus = 0.0
    gpu: _Gpus = 0
    disk: str = ""


class AtomInput(_Spec):
    repo: str
    glob: str
    name: str = ""
    branch: str = "master"
    lazy: bool = False
    empty_files: bool = False


class CronInput(_Spec):
    name: str
    spec: str
    repo: str = ""
    start: str = ""


class GitInput(_Spec):
    URL: str
    name: str = ""
    branch: str = ""


class Input(_Spec):
    """Exactly one field is set."""

    atom: AtomInput | None = None
    pfs: AtomInput | None = None  # the later name of `atom`, accepted too
    cross: list[Input] | None = None
    union: list[Input] | None = None
    cron: CronInput | None = None
    git: GitInput | None = None


class Egress(_Spec):
    URL: str


class Service(_Spec):
    internal_port: _Port = 0
    external_port: _Port = 0


class ChunkSpec(_Spec):
    number: _Count = 0
    size_bytes: _Count = 0


class SchedulingSpec(_Spec):
    node_selector: dict[str, str] = {}
    priority_class_name: str = ""


class PipelineSpec(_Spec):
    pipeline: PipelineName
    transform: Transform
    input: Input
    description: str = ""
    parallelism_spec: ParallelismSpec | None = None
    resource_requests: Resources | None = None
    resource_limits: Resources | None = None
    datum_timeout: str = ""
    datum_tries: _Tries = 3
    job_timeout: str = ""
    output_branch: str = "master"
    egress: Egress | None = None
    standby: bool = False
    scale_down_threshold: str = ""  # before 1.7.1's standby: stop the workers after this long idle
    incremental: bool = False
    cache_size: str = ""
    enable_stats: bool = False
    service: Service | None = None
    max_queue_size: _QueueSize = 1
    chunk_spec: ChunkSpec | None = None
    scheduling_spec: SchedulingSpec | None = None
    pod_spec: str = ""  # a merge patch of the worker pod's spec (Kubernetes only)
    pod_patch: str = ""  # a JSON patch (RFC 6902) of the worker pod's spec (Kubernetes only)
    salt: str = ""  # the identity of the processing code: made by the daemon unless given, kept by updates

    @property
    def name(self) -> str:
        return self.pipeline.name


def parse(text: str | bytes, source: str = "pipeline spec") -> PipelineSpec:
    """A validated spec from JSON or YAML text."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        return validate(msgspec.json.decode(raw, type=PipelineSpec))
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"{source}: {e}") from None
    except msgspec.DecodeError:
        pass
    import yaml  # only YAML specs need it

    try:
        obj = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{source} is neither JSON nor YAML: {str(e).splitlines()[0]}") from None
    try:
        return validate(msgspec.convert(obj, PipelineSpec))
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"{source}: {e}") from None


def parse_all(text: str | bytes, source: str = "pipeline spec") -> list[PipelineSpec]:
    """The specs of a file holding one or more: JSON objects one after another (as 1.7 reads
    them), or YAML documents."""
    raw = text.decode(errors="replace") if isinstance(text, bytes) else text
    pieces, pos, decoder = [], 0, json.JSONDecoder()
    try:
        while (pos := _skip_space(raw, pos)) < len(raw):
            _, end = decoder.raw_decode(raw, pos)
            pieces.append(raw[pos:end])
            pos = end
    except json.JSONDecodeError:
        return _yaml_all(raw, source)
    if not pieces:
        raise InvalidArgument(f"{source} holds no pipeline spec")
    if len(pieces) == 1:
        return [parse(pieces[0], source)]
    return [_named(parse, piece, f"{source} (spec {n})") for n, piece in enumerate(pieces, 1)]


def _named(parse_one, text, where: str) -> PipelineSpec:
    """parse_one(text, where), its errors naming which spec of the file is wrong."""
    try:
        return parse_one(text, where)
    except InvalidArgument as e:
        if str(e).startswith(where):
            raise
        raise InvalidArgument(f"{where}: {e}") from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _yaml_all(raw: str, source: str) -> list[PipelineSpec]:
    import yaml  # only YAML specs need it

    try:
        docs = [d for d in yaml.safe_load_all(raw) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{source} is neither JSON nor YAML: {str(e).splitlines()[0]}") from None
    if not docs:
        raise InvalidArgument(f"{source} holds no pipeline spec")
    return [
        _named(_convert, doc, source if len(docs) == 1 else f"{source} (spec {n})") for n, doc in enumerate(docs, 1)
    ]


def _convert(doc, where: str) -> PipelineSpec:
    try:
        return validate(msgspec.convert(doc, PipelineSpec))
    except msgspec.ValidationError as e:
        raise InvalidArgument(f"{where}: {e}") from None


def validate(spec: PipelineSpec) -> PipelineSpec:
    def bad(where: str, why: str):
        raise InvalidArgument(f"pipeline spec: `{where}` {why}")

    if not _NAME.fullmatch(spec.name):
        bad(
            "pipeline.name",
            f"{spec.name!r} must be 1-50 letters, digits, '_' or '-', starting and ending with a letter or digit",
        )
    if not spec.transform.cmd:
        bad("transform.cmd", "must name a command")
    if spec.transform.user:
        identity.check(spec.transform.user)
    p = spec.parallelism_spec
    if p is not None:
        if p.constant and p.coefficient:
            bad("parallelism_spec", "sets both constant and coefficient; set one")
    for field in ("datum_timeout", "job_timeout", "scale_down_threshold"):
        if getattr(spec, field):
            try:
                duration(getattr(spec, field))
            except InvalidArgument as e:
                bad(field, str(e))
    if spec.salt and not _SALT.fullmatch(spec.salt):
        bad("salt", "must be 1-64 letters, digits, '_' or '-'")
    names.branch_name(spec.output_branch)
    if spec.egress is not None:
        _egress(spec.egress.URL, bad)
    _input(spec.input, "input", spec.name, bad)
    crossed = _cross_names(spec.input)
    if crossed:
        bad("input.cross", f"has two inputs named {crossed!r}: name one of them with `name`")
    return spec


def _egress(url: str, bad) -> None:
    """A URL egress can write to, and one the daemon's URL policy allows (in a client, which
    serves no one else, any)."""
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in ("s3", "gs", "gcs", "as", "wasb", "az", "file"):
        bad("egress.URL", f"{url!r} is not an object-store URL (s3://, gs://, as://, wasb:// or file://)")
    urlpolicy.current().check_url(url, "egress")


def _input(i: Input, where: str, pipeline: str, bad) -> None:
    kinds = [k for k in ("atom", "pfs", "cross", "union", "cron", "git") if getattr(i, k) is not None]
    if len(kinds) != 1:
        bad(where, f"must set exactly one of atom, pfs, cross, union, cron (has {', '.join(kinds) or 'none'})")
    kind = kinds[0]
    here = f"{where}.{kind}"
    if kind in ("atom", "pfs"):
        a = getattr(i, kind)
        names.repo_name(a.repo)
        names.branch_name(a.branch)
        if not a.glob or "\0" in a.glob or ".." in a.glob.split("/"):
            bad(f"{here}.glob", f"{a.glob!r} is not a glob pattern")
        if a.name and not _NAME.fullmatch(a.name):
            bad(f"{here}.name", f"{a.name!r} is not a valid input name")
    elif kind in ("cross", "union"):
        inputs = getattr(i, kind)
        if not inputs:
            bad(here, "must list at least one input")
        for n, sub in enumerate(inputs):
            _input(sub, f"{here}[{n}]", pipeline, bad)
    elif kind == "cron":
        c = i.cron
        assert c is not None  # the kind says so
        if not _NAME.fullmatch(c.name):
            bad(f"{here}.name", f"{c.name!r} is not a valid input name")
        try:
            schedule(c.spec)
        except InvalidArgument as e:
            bad(f"{here}.spec", str(e))
        if c.start:
            try:
                datetime.fromisoformat(c.start.replace("Z", "+00:00"))
            except ValueError:
                bad(f"{here}.start", f"{c.start!r} is not an RFC 3339 time")
        names.repo_name(cron_repo(c, pipeline))
    else:
        bad(here, "is not supported: git inputs need a webhook this deployment does not have")


def _cross_names(i: Input) -> str | None:
    """A name used by two inputs of one cross product, if any."""
    if i.cross is not None:
        seen: set[str] = set()
        for sub in i.cross:
            found = _cross_names(sub)
            if found:
                return found
            for n in input_names(sub):
                if n in seen:
                    return n
                seen.add(n)
    for sub in i.union or ():
        found = _cross_names(sub)
        if found:
            return found
    return None


def atom(i: Input) -> AtomInput | None:
    return i.atom or i.pfs


def input_name(a: AtomInput) -> str:
    return a.name or a.repo


def input_names(i: Input) -> set[str]:
    """The /pfs/<name> directories an input can show."""
    if (a := atom(i)) is not None:
        return {input_name(a)}
    if i.cron is not None:
        return {i.cron.name}
    return set().union(*(input_names(s) for s in (i.cross or i.union or [])))


def cron_repo(c: CronInput, pipeline: str) -> str:
    return c.repo or f"{pipeline}_{c.name}"


def atoms(i: Input, pipeline: str) -> list[tuple[str, str, str]]:
    """Every (repo, branch, name) the input reads, crons included."""
    if (a := atom(i)) is not None:
        return [(a.repo, a.branch, input_name(a))]
    if i.cron is not None:
        return [(cron_repo(i.cron, pipeline), "master", i.cron.name)]
    return [x for s in (i.cross or i.union or []) for x in atoms(s, pipeline)]


def duration(text: str) -> float:
    """Seconds in a Go-style duration such as '90s', '1m30s', '15h'."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise InvalidArgument(f"{text!r} is not a duration such as 30s, 5m or 2h")
    if not math.isfinite(total) or total > MAX_DURATION:
        raise InvalidArgument(f"{text!r} is longer than the limit of {MAX_DURATION / 86400:.0f} days")
    return total


def schedule(spec: str) -> tuple[str, Any]:
    """("every", seconds) for '@every 10s', else ("cron", expression) checked by croniter."""
    if spec.startswith("@every "):
        seconds = duration(spec[len("@every ") :].strip())
        if seconds < MIN_CRON_PERIOD:
            raise InvalidArgument(f"{spec!r}: the period must be at least {MIN_CRON_PERIOD:g}s")
        return "every", seconds
    from croniter import croniter  # only cron inputs need it

    if not croniter.is_valid(spec):
        raise InvalidArgument(f"{spec!r} is not a cron schedule such as '*/10 * * * *' or '@daily'")
    ticks = croniter(spec, 0.0)
    first = ticks.get_next(float)
    if ticks.get_next(float) - first < MIN_CRON_PERIOD:  # a seconds field may tick faster
        raise InvalidArgument(f"{spec!r}: the period must be at least {MIN_CRON_PERIOD:g}s")
    return "cron", spec


def workers(spec: PipelineSpec, cpus: int) -> int:
    """How many workers: a constant, or a multiple of the CPUs here (the local 'cluster')."""
    p = spec.parallelism_spec
    if p is None or (not p.constant and not p.coefficient):
        return max(1, cpus)
    if p.constant:
        return p.constant
    return max(1, min(MAX_WORKERS, round(p.coefficient * cpus)))
