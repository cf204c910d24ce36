"""Pipeline pages: the lineage, the pipeline list, a pipeline and its jobs, a job and its datums,
and a job's log, followed live by console.js polling `log_lines`."""

from __future__ import annotations

from pfsfuse.console import lineage as dag
from pfsfuse.console.conn import Conn
from pfsfuse.console.markup import esc, form, size, state, table, url, when
from pfsfuse.scheduler.records import JobInfo

JOBS = 50  # jobs shown on a pipeline's page
DATUMS = 500  # datums shown on a job's page


def _progress(j: JobInfo) -> str:
    done = j.processed + j.skipped + j.failed
    pct = 100 * done // j.total if j.total else (100 if j.done else 0)
    return (
        f'<div class="progress" title="{done} of {j.total} datums"><div class="fill state-{esc(j.state)}" '
        f'style="width:{pct}%"></div></div><span class="muted">{done}/{j.total}'
        f"{f' · {j.failed} failed' if j.failed else ''}</span>"
    )


def _last_jobs(conn: Conn, names: list[str]) -> dict[str, JobInfo]:
    last: dict[str, JobInfo] = {}
    for j in conn.pps.list_job():
        if j.pipeline in names and (j.pipeline not in last or j.started > last[j.pipeline].started):
            last[j.pipeline] = j
    return last


def lineage(conn: Conn) -> str:
    repos = [r.name for r in conn.repos()]
    pipelines = conn.pipelines()
    last = _last_jobs(conn, [p.name for p in pipelines])
    if not repos:
        return '<h1>Lineage</h1><p class="muted">no repos you may read yet: <code>pfs create-repo NAME</code></p>'
    svg = dag.svg(repos, pipelines, {n: j.state for n, j in last.items()})
    return f'<h1>Lineage</h1><div class="dag-wrap">{svg}</div>'


def pipeline_list(conn: Conn) -> str:
    pipelines = conn.pipelines()
    last = _last_jobs(conn, [p.name for p in pipelines])
    rows = []
    for p in pipelines:
        j = last.get(p.name)
        rows.append(
            [
                f'<a href="{esc(url("pipelines", p.name))}">{esc(p.name)}</a>',
                state(p.state) + (f' <span class="reason">{esc(p.reason)}</span>' if p.reason else ""),
                esc(", ".join(dag.input_repos(p.spec.input))),
                (f'<a href="{esc(url("jobs", j.id))}">{state(j.state)}</a> {_progress(j)}' if j else "—"),
                esc(when(p.created)),
            ]
        )
    body = table(["pipeline", "state", "inputs", "last job", "created"], rows, "pipelines")
    return "<h1>Pipelines</h1>" + (body if rows else '<p class="muted">no pipelines you may read</p>')


def pipeline(conn: Conn, csrf: str, name: str) -> str:
    p = conn.pipeline(name)
    action = "/actions/pipeline"
    acts = (
        form(action, csrf, {"pipeline": name, "op": "stop"}, "Stop", danger=True)
        if p.state != "paused"
        else form(action, csrf, {"pipeline": name, "op": "start"}, "Start")
    ) + form(action, csrf, {"pipeline": name, "op": "restart"}, "Restart")
    jobs = sorted((j for j in conn.pps.list_job(name)), key=lambda j: j.started, reverse=True)[:JOBS]
    rows = [
        [
            f'<a href="{esc(url("jobs", j.id))}"><code>{esc(j.id[:12])}</code></a>',
            state(j.state) + (f' <span class="reason">{esc(j.reason)}</span>' if j.reason else ""),
            _progress(j),
            esc(when(j.started)),
            esc(when(j.finished)),
        ]
        for j in jobs
    ]
    spec = p.spec
    return (
        f"<h1>{esc(name)} {state(p.state)}</h1>"
        + (f'<p class="reason">{esc(p.reason)}</p>' if p.reason else "")
        + f'<div class="bar">{acts}<a class="btn" href="{esc(url("repos", name, spec.output_branch, ""))}">'
        "Output repo</a></div>"
        + f'<p class="muted">inputs: {esc(", ".join(dag.input_repos(spec.input)))} · version {p.version} · '
        f"command: <code>{esc(' '.join(spec.transform.cmd))}</code></p>"
        + "<h2>Jobs</h2>"
        + (
            table(["job", "state", "progress", "started", "finished"], rows, "jobs")
            if rows
            else '<p class="muted">no jobs yet</p>'
        )
    )


def job(conn: Conn, job_id: str) -> str:
    j = conn.job(job_id)
    every = conn.pps.list_datum(j.id)
    # failed datums first: they are what a reader of this page looks for
    datums = sorted(every, key=lambda d: d.state != "failed")[:DATUMS]
    shown = f'<p class="muted">{len(datums)} of {len(every)} datums, failed first</p>' if len(every) > DATUMS else ""
    rows = [
        [
            f"<code>{esc(d.key[:16])}</code>",
            state(d.state),
            esc(", ".join(f"{i.repo}:/{i.path}" for i in d.inputs)),
            esc(d.tries),
            esc(d.reason),
        ]
        for d in datums
    ]
    inputs = ", ".join(f"{c.repo}@{c.id[:12]}" for c in j.inputs)
    return (
        f"<h1>Job <code>{esc(j.id[:12])}</code> {state(j.state)}</h1>"
        f'<p><a href="{esc(url("pipelines", j.pipeline))}">{esc(j.pipeline)}</a> · inputs {esc(inputs)} · '
        f"started {esc(when(j.started))} · finished {esc(when(j.finished))} · "
        f"read {esc(size(j.downloaded))}, wrote {esc(size(j.uploaded))}</p>"
        + (f'<p class="reason">{esc(j.reason)}</p>' if j.reason else "")
        + f'<div class="bar">{_progress(j)} <a class="btn" href="{esc(url("jobs", j.id, "logs"))}">Logs</a>'
        + (
            f'<a class="btn" href="{esc(url("repos", j.pipeline, j.output_commit, ""))}">Output</a>'
            if j.output_commit
            else ""
        )
        + f"</div><h2>Datums</h2>{shown}"
        + (
            table(["datum", "state", "inputs", "tries", "reason"], rows, "datums")
            if rows
            else '<p class="muted">no datums yet</p>'
        )
    )


def logs_page(conn: Conn, job_id: str) -> str:
    j = conn.job(job_id)
    return (
        f'<h1>Logs of job <a href="{esc(url("jobs", j.id))}"><code>{esc(j.id[:12])}</code></a> '
        f'<span id="job-state">{state(j.state)}</span></h1>'
        f'<p class="muted">{esc(j.pipeline)} · <label><input type="checkbox" id="follow" checked> follow</label></p>'
        f'<pre id="log" class="log" data-src="{esc(url("jobs", j.id, "logs.json"))}"></pre>'
    )


def log_lines(conn: Conn, job_id: str, after: int) -> dict:
    """Log lines after the first `after`, and whether the job has finished (the viewer stops)."""
    j = conn.job(job_id)
    lines = conn.pps.get_logs(None, j.id, None)
    return {
        "state": j.state,
        "done": j.done,
        "next": len(lines),
        "lines": [f"{when(ln.ts)[11:19]} {ln.datum[:8]} {ln.message}" for ln in lines[after:]],
    }
