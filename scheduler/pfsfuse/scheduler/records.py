"""What the scheduler keeps and the pipeline API hands out: pipelines, jobs, datums, worker tasks."""

from __future__ import annotations

from msgspec import Struct

from pfsfuse.metadata.records import CommitRef, Node
from pfsfuse.scheduler.spec import PipelineSpec


class PipelineInfo(Struct, omit_defaults=True):
    name: str
    spec: PipelineSpec
    created: float
    version: int = 1  # bumped by every update-pipeline
    state: str = "running"  # running, paused (stop-pipeline), standby, failure
    reason: str = ""
    last_inputs: list[CommitRef] = []  # the inputs of the last job started
    executor: str = ""  # where its workers run (the daemon's executor), as inspect-pipeline shows it

    @property
    def output_repo(self) -> str:
        return self.name

    @property
    def meta_repo(self) -> str:
        """Where the output of every datum of the latest job is kept, by datum key."""
        return meta_repo(self.name)


def meta_repo(pipeline: str) -> str:
    return f"__{pipeline}"


JOB_STATES = ("starting", "running", "merging", "egress", "success", "failure", "killed")


class JobInfo(Struct, omit_defaults=True):
    id: str
    pipeline: str
    started: float
    pipeline_version: int = 1
    inputs: list[CommitRef] = []
    output_commit: str = ""  # open while the job runs; on the output branch once it succeeds
    meta_commit: str = ""
    deltas: list[str] = []  # incremental: meta repo commits showing datums' changed inputs
    finished: float | None = None
    state: str = "starting"
    reason: str = ""
    restarts: int = 0
    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    downloaded: int = 0  # bytes of input data fetched for processed datums
    uploaded: int = 0  # bytes of output written by processed datums

    @property
    def done(self) -> bool:
        return self.state in ("success", "failure", "killed")


class DatumInput(Struct, array_like=True, frozen=True):
    name: str  # shown at /pfs/<name>
    repo: str
    commit: str
    path: str  # what the glob matched ("" is the whole commit)
    node: Node
    lazy: bool = False
    empty_files: bool = False
    framed: bool = True  # a file whose directory may have a header or footer (split files)
    # A directory's content identity (its entries' names and contents, not their stats); empty
    # for anything else, whose node says it.
    identity: bytes = b""


class DatumTask(Struct, omit_defaults=True):
    """One datum for a worker: where its inputs are and where its output goes."""

    job: str
    key: str  # the datum's identity (hex): its output is at <meta repo>/<key>/out
    inputs: list[DatumInput]
    meta_commit: str
    output_commit: str  # PACH_OUTPUT_COMMIT_ID
    try_: int = 1
    incremental: bool = False
    previous: str = ""  # meta commit with this datum's previous output (incremental: prefill /pfs/out)
    fingerprint: str = ""  # incremental: the inputs' content, recorded beside the output
    shown: list[DatumInput] = []  # incremental, run again: what /pfs shows (its changed inputs)

    @property
    def visible(self) -> list[DatumInput]:
        """The inputs /pfs shows: all of them, or (an incremental datum run again) what changed."""
        return self.shown if self.previous else self.inputs


class DatumResult(Struct, omit_defaults=True):
    job: str
    key: str
    ok: bool
    reason: str = ""
    started: float = 0.0
    finished: float = 0.0
    downloaded: int = 0
    uploaded: int = 0
    log: str = ""  # the command's output (the tail, when long, from a line's start)
    log_line: int = 0  # the number of the log's first line in the whole output
    final: bool = False  # no try left to give it, whatever datum_tries says (its workers cannot run)


class DatumInfo(Struct, omit_defaults=True):
    job: str
    key: str
    state: str  # pending, running, success, failed, skipped
    inputs: list[DatumInput] = []
    tries: int = 0
    started: float = 0.0
    finished: float = 0.0
    reason: str = ""
    downloaded: int = 0
    uploaded: int = 0
    log: str = ""
    log_line: int = 0


class LogLine(Struct, omit_defaults=True):
    pipeline: str
    job: str
    datum: str
    ts: float
    message: str
    try_: int = 0
    line: int = 0  # its number in the output of that try of the datum (-1: why the datum failed)
