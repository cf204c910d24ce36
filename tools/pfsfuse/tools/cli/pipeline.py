"""Pipeline verbs: pipelines, jobs, datums and logs, as pachctl 1.7 names them."""

from __future__ import annotations

import contextlib
import time

import click

from pfsfuse.metadata import refs
from pfsfuse.metadata.errors import InvalidArgument, NotFound, PfsError, Unavailable
from pfsfuse.metadata.records import CommitRef
from pfsfuse.tools.cli import views
from pfsfuse.tools.cli.app import App, json_option, pass_app
from pfsfuse.tools.cli.output import ago, duration, size
from pfsfuse.tools.cli.views import COMMIT_HEADERS, commit_row

LOCAL_IMAGE_NOTE = "runs on this host: transform.image is recorded, not pulled"


def _read_spec(source: str) -> tuple[bytes, str]:
    if source.startswith(("http://", "https://")):
        import urllib.request  # http, email, ssl: only for a spec given by URL

        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                return r.read(), source
        except OSError as e:
            raise Unavailable(f"cannot fetch {source}: {e}") from None
    try:
        with open(source, "rb") as f:
            return f.read(), source
    except FileNotFoundError:
        raise InvalidArgument(f"{source}: no such file") from None


def _commit_ref(text: str) -> CommitRef:
    """REPO@COMMIT (any ref, read by the SDK's parser), or REPO/COMMIT as 1.7 writes it (a repo
    name has no '/')."""
    repo, slash, rest = text.partition("/")
    found = refs.split(f"{repo}@{rest}" if slash and "@" not in repo else text)
    if found is None or found[2] is not None:
        raise InvalidArgument(f"invalid commit {text!r}: expected REPO@COMMIT or REPO/COMMIT")
    return CommitRef(found[0], found[1])


def _resolve(app: App, refs: tuple[str, ...]) -> list[CommitRef]:
    """REPO@REF arguments as commit ids (a branch means its head)."""
    out = []
    for text in refs:
        r = _commit_ref(text)
        out.append(CommitRef(r.repo, app.client.inspect_commit(r.repo, r.id).id))
    return out


def _create(app: App, file: str, update: bool, reprocess: bool, dry_run: str | None = None) -> None:
    """Create (or update) the pipelines of a spec file, in order. The specs are all checked first;
    if creating one fails, those this call created are deleted again. With `dry_run` ("json" or
    "yaml"), print the Kubernetes objects each would be and create nothing."""
    from pfsfuse.scheduler import spec as specs  # only these verbs parse specs

    text, source = _read_spec(file)
    all_specs = list(specs.parse_all(text, source))
    if dry_run:
        from pfsfuse.scheduler.kube import manifests, settings

        for spec in all_specs:
            app.out.line(manifests.dump(manifests.dry_run(spec, settings.Settings.from_env()), dry_run).rstrip("\n"))
        return
    made = []
    try:
        for spec in all_specs:
            app.pipelines.create_pipeline(spec, update, reprocess)
            made.append(spec.name)
    except PfsError:
        if not update:
            for name in reversed(made):
                with contextlib.suppress(PfsError):  # the first error is the one to report
                    app.pipelines.delete_pipeline(name, force=True)
        raise


@click.command("create-pipeline")
@click.option(
    "-f", "--file", required=True, help="The pipeline specs: a JSON or YAML file (one spec or several), or a URL."
)
@click.option("--dry-run", is_flag=True, help="Print the Kubernetes objects the pipeline would be; create nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["json", "yaml"]),
    default="yaml",
    show_default=True,
    help="The format of --dry-run's objects.",
)
@pass_app
def create_pipeline(app: App, file: str, dry_run: bool, output: str) -> None:
    """Create a pipeline: it processes its inputs' heads now and every new commit after.

    --dry-run prints the ConfigMap and the worker pod that the Kubernetes executor would create
    (settings from $PFS_KUBE_* as `pfs deploy` sets them for pfsd), for review or policy checks.
    """
    _create(app, file, update=False, reprocess=False, dry_run=output if dry_run else None)


@click.command("update-pipeline")
@click.option(
    "-f", "--file", required=True, help="The new pipeline specs: a JSON or YAML file (one spec or several), or a URL."
)
@click.option("--reprocess", is_flag=True, help="Process every datum again with the new code.")
@pass_app
def update_pipeline(app: App, file: str, reprocess: bool) -> None:
    """Update a pipeline. Datums already processed are reused unless --reprocess."""
    _create(app, file, update=True, reprocess=reprocess)


@click.command("extract-pipeline")
@click.argument("name")
@pass_app
def extract_pipeline(app: App, name: str) -> None:
    """Print a pipeline's spec (JSON, with its salt): what create-pipeline -f takes."""
    click.echo(_spec_json(app.pipelines.inspect_pipeline(name).spec))


@click.command("edit-pipeline")
@click.argument("name")
@click.option("--reprocess", is_flag=True, help="Process every datum again with the new code.")
@pass_app
def edit_pipeline(app: App, name: str, reprocess: bool) -> None:
    """Edit a pipeline's spec in $EDITOR, then update the pipeline with it."""
    from pfsfuse.scheduler import spec as specs

    before = _spec_json(app.pipelines.inspect_pipeline(name).spec)
    after = click.edit(before, extension=".json")
    if after is None or after.strip() == before.strip():
        app.out.line(f"pipeline {name} unchanged: the spec was not edited")
        return
    spec = specs.parse(after, "the edited spec")
    if spec.name != name:
        raise InvalidArgument(f"the edited spec names pipeline {spec.name}: edit-pipeline cannot rename {name}")
    app.pipelines.create_pipeline(spec, update=True, reprocess=reprocess)


def _spec_json(spec) -> str:
    import json

    import msgspec

    return json.dumps(msgspec.to_builtins(spec), indent=2)


@click.command("inspect-pipeline")
@click.argument("name")
@json_option
@pass_app
def inspect_pipeline(app: App, name: str, as_json: bool) -> None:
    """Show a pipeline's details."""
    p = app.pipelines.inspect_pipeline(name)
    if as_json:
        return app.out.json(p)
    t = p.spec.transform
    app.out.fields(
        [
            ("Name", p.name),
            ("Description", p.spec.description),
            ("Created", ago(p.created)),
            ("State", p.state + (f" ({p.reason})" if p.reason else "")),
            ("Version", str(p.version)),
            ("Input", views.input_text(p.spec.input)),
            ("Output Branch", p.spec.output_branch),
            ("Executor", p.executor or "-"),
            ("Image", f"{t.image or '-'}" + (f" ({LOCAL_IMAGE_NOTE})" if p.executor.startswith("local") else "")),
            ("Command", " ".join(t.cmd)),
            ("Stdin", " | ".join(t.stdin) or "-"),
            ("Datum Tries", str(p.spec.datum_tries)),
        ]
    )


@click.command("list-pipeline")
@click.option("--spec", "show_spec", is_flag=True, help="Print each pipeline's spec (JSON).")
@json_option
@pass_app
def list_pipeline(app: App, show_spec: bool, as_json: bool) -> None:
    """List pipelines: NAME INPUT OUTPUT CREATED STATE."""
    views.list_pipeline(app.pipelines, app.out, show_spec, as_json)


@click.command("delete-pipeline")
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Delete every pipeline.")
@click.option("-f", "--force", is_flag=True, help="Delete its output repo even if others depend on it.")
@pass_app
def delete_pipeline(app: App, name: str | None, all_: bool, force: bool) -> None:
    """Delete a pipeline, its jobs and its output repo."""
    if all_ == (name is not None):
        raise click.UsageError("give either a pipeline name or --all")
    names = [p.name for p in app.pipelines.list_pipeline()] if all_ else [name]
    for n in names:
        app.pipelines.delete_pipeline(n, force or all_)


@click.command("stop-pipeline")
@click.argument("name")
@pass_app
def stop_pipeline(app: App, name: str) -> None:
    """Stop a pipeline: its running job is killed and no new job starts."""
    app.pipelines.stop_pipeline(name)


@click.command("start-pipeline")
@click.argument("name")
@pass_app
def start_pipeline(app: App, name: str) -> None:
    """Start a stopped pipeline."""
    app.pipelines.start_pipeline(name)


@click.command("list-job")
@click.option("-p", "--pipeline", help="Only this pipeline's jobs.")
@click.option("-i", "--input", "input_commit", help="Only jobs with this input commit (REPO@COMMIT or REPO/COMMIT).")
@json_option
@pass_app
def list_job(app: App, pipeline: str | None, input_commit: str | None, as_json: bool) -> None:
    """List jobs, newest first: PROGRESS is processed + skipped / total datums."""
    ref = _resolve(app, (input_commit,))[0] if input_commit else None
    views.list_job(app.pipelines, app.out, pipeline, ref, as_json)


@click.command("inspect-job")
@click.argument("job_id")
@click.option("-b", "--block", is_flag=True, help="Wait for the job to finish.")
@json_option
@pass_app
def inspect_job(app: App, job_id: str, block: bool, as_json: bool) -> None:
    """Show a job's details."""
    j = app.pipelines.inspect_job(job_id, block)
    if as_json:
        return app.out.json(j)
    app.out.fields(
        [
            ("ID", j.id),
            ("Pipeline", j.pipeline),
            ("Started", ago(j.started)),
            ("Duration", duration((j.finished or time.time()) - j.started)),
            ("State", j.state),
            ("Reason", j.reason or "-"),
            ("Processed", str(j.processed)),
            ("Skipped", str(j.skipped)),
            ("Failed", str(j.failed)),
            ("Total", str(j.total)),
            ("Restarts", str(j.restarts)),
            ("Data Downloaded", size(j.downloaded)),
            ("Data Uploaded", size(j.uploaded)),
            ("Input", ", ".join(f"{c.repo}@{c.id}" for c in j.inputs)),
            ("Output Commit", f"{j.pipeline}@{j.output_commit}" if j.output_commit else "-"),
        ]
    )


@click.command("stop-job")
@click.argument("job_id")
@pass_app
def stop_job(app: App, job_id: str) -> None:
    """Kill a running job."""
    app.pipelines.stop_job(job_id)


@click.command("delete-job")
@click.argument("job_id")
@pass_app
def delete_job(app: App, job_id: str) -> None:
    """Delete a job (killing it if it runs)."""
    app.pipelines.delete_job(job_id)


@click.command("flush-job")
@click.argument("commits", nargs=-1, required=True)
@click.option("-p", "--pipeline", "pipelines", multiple=True, help="Only these pipelines' jobs.")
@json_option
@pass_app
def flush_job(app: App, commits: tuple[str, ...], pipelines: tuple[str, ...], as_json: bool) -> None:
    """Wait for the jobs that process REPO@COMMIT... (or REPO/COMMIT) and their downstream jobs."""
    jobs = app.pipelines.flush_job(_resolve(app, commits), list(pipelines) or None)
    if as_json:
        return app.out.json(jobs)
    app.out.table(views.JOB_HEADERS, (views.job_row(j) for j in jobs))


@click.command("flush-commit")
@click.argument("commits", nargs=-1, required=True)
@click.option("-r", "--repos", multiple=True, help="Only output commits of these repos.")
@json_option
@pass_app
def flush_commit(app: App, commits: tuple[str, ...], repos: tuple[str, ...], as_json: bool) -> None:
    """Wait for every commit derived from REPO@COMMIT... (or REPO/COMMIT) and print them."""
    out = app.pipelines.flush_commit(_resolve(app, commits), list(repos) or None)
    if as_json:
        return app.out.json(out)
    app.out.table(COMMIT_HEADERS, (commit_row(c) for c in out))


@click.command("list-datum")
@click.argument("job_id")
@json_option
@pass_app
def list_datum(app: App, job_id: str, as_json: bool) -> None:
    """List a job's datums: ID FILES STATUS TIME."""
    datums = app.pipelines.list_datum(job_id)
    if as_json:
        return app.out.json(datums)
    app.out.table(
        ["ID", "FILES", "STATUS", "TIME"],
        (
            [
                d.key,
                ", ".join(f"{i.repo}@{i.commit[:8]}:/{i.path}" for i in d.inputs),
                d.state,
                duration(d.finished - d.started) if d.finished else "-",
            ]
            for d in datums
        ),
    )


@click.command("inspect-datum")
@click.argument("job_id")
@click.argument("datum")
@json_option
@pass_app
def inspect_datum(app: App, job_id: str, datum: str, as_json: bool) -> None:
    """Show a datum's details and its log."""
    d = app.pipelines.inspect_datum(job_id, datum)
    if as_json:
        return app.out.json(d)
    app.out.fields(
        [
            ("ID", d.key),
            ("Job", d.job),
            ("State", d.state),
            ("Reason", d.reason or "-"),
            ("Tries", str(d.tries)),
            ("Time", duration(d.finished - d.started) if d.finished else "-"),
            ("Downloaded", size(d.downloaded)),
            ("Uploaded", size(d.uploaded)),
            ("Inputs", ", ".join(f"{i.name}={i.repo}@{i.commit}:/{i.path}" for i in d.inputs)),
        ]
    )
    if d.log:
        app.out.line("Log:")
        app.out.line(d.log.rstrip("\n"))


@click.command("restart-datum")
@click.argument("job_or_pipeline", metavar="PIPELINE|JOB_ID")
@click.argument("datum", metavar="INPUT_PATH,...|DATUM")
@pass_app
def restart_datum(app: App, job_or_pipeline: str, datum: str) -> None:
    """Give a running job's datum another try: PIPELINE INPUT_PATH,... (1.7's form: the datum of
    the pipeline's running job whose inputs are those paths or file hashes), or JOB_ID DATUM."""
    if job_or_pipeline not in {p.name for p in app.pipelines.list_pipeline()}:
        app.pipelines.restart_datum(job_or_pipeline, datum)
        return
    running = [j for j in app.pipelines.list_job(job_or_pipeline) if not j.done]
    if not running:
        raise NotFound(f"pipeline {job_or_pipeline} has no running job")
    filters = _input_filters(datum)
    found = [d for d in app.pipelines.list_datum(running[0].id) if d.state != "success" and _matches(d, filters)]
    if not found:
        raise NotFound(f"no datum of job {running[0].id} left to process has the inputs {datum}")
    for d in found:
        app.pipelines.restart_datum(d.job, d.key)


def _input_filters(text: str) -> list[str]:
    return [f.strip().lstrip("/") for f in text.split(",") if f.strip()]


def _matches(d, filters: list[str]) -> bool:
    """1.7's datum filter: every filter names one of the datum's inputs, by path or file hash."""
    names = {i.path for i in d.inputs} | {_hash(i.node) for i in d.inputs}
    return all(f in names for f in filters)


def _hash(node) -> str:
    from pfsfuse.scheduler.datums import content

    return content(node).hex()


@click.command("get-logs")
@click.option("-p", "--pipeline", help="Only this pipeline's logs.")
@click.option("--job", help="Only this job's logs.")
@click.option("--datum", help="Only this datum's logs.")
@click.option("--inputs", help="Only datums with these inputs (comma-separated paths or file hashes).")
@click.option("--master", is_flag=True, help="The pipeline's own log (its jobs starting and ending) instead; needs -p.")
@click.option("-f", "--follow", is_flag=True, help="Print lines as they come, until the jobs end.")
@click.option("--raw", is_flag=True, help="Print the log lines only.")
@pass_app
def get_logs(
    app: App,
    pipeline: str | None,
    job: str | None,
    datum: str | None,
    inputs: str | None,
    master: bool,
    follow: bool,
    raw: bool,
) -> None:
    """Print the logs of the commands pipelines ran (and are running)."""
    if master:
        if not pipeline:
            raise click.UsageError("--master needs a pipeline (-p)")
        return _master_log(app, pipeline, raw)
    keys = None
    if inputs:
        filters = _input_filters(inputs)
        jobs = [job] if job else [j.id for j in app.pipelines.list_job(pipeline)]
        keys = {d.key for j in jobs for d in app.pipelines.list_datum(j) if _matches(d, filters)}
    seen = set()
    while True:
        ended = follow and _jobs_ended(app, pipeline, job)  # before the logs: their last lines show
        for line in app.pipelines.get_logs(pipeline, job, datum):
            key = (line.job, line.datum, line.try_, line.line, line.message)
            if key in seen or (keys is not None and line.datum not in keys):
                continue
            seen.add(key)
            app.out.line(
                line.message if raw else f"{line.pipeline} {line.job[:8]} {line.datum[:8]} {line.message}", flush=follow
            )
        if not follow or ended:
            return
        time.sleep(0.25)  # a poll interval for a person watching logs


def _master_log(app: App, pipeline: str, raw: bool) -> None:
    """What 1.7's pipeline master logs, from the pipeline's jobs: each one's start and end."""
    from datetime import datetime

    app.pipelines.inspect_pipeline(pipeline)
    events = []
    for j in app.pipelines.list_job(pipeline):
        inputs = ", ".join(f"{c.repo}/{c.id}" for c in j.inputs)
        events.append((j.started, f"job {j.id} started on {inputs}"))
        if j.finished:
            progress = f"{j.processed} + {j.skipped} / {j.total} datums"
            events.append(
                (j.finished, f"job {j.id} ended: {j.state}, {progress}" + (f" ({j.reason})" if j.reason else ""))
            )
    for ts, message in sorted(events):
        app.out.line(
            message if raw else f"{datetime.fromtimestamp(ts).isoformat(timespec='seconds')} {pipeline} {message}"
        )


def _jobs_ended(app: App, pipeline: str | None, job: str | None) -> bool:
    """Whether the jobs whose logs are followed have all ended (some must have started)."""
    jobs = [app.pipelines.inspect_job(job)] if job else app.pipelines.list_job(pipeline)
    return bool(jobs) and all(j.done for j in jobs)
