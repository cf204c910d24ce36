"""The lineage DAG, laid out on the server as SVG: repos fed by pipelines, left to right, each
node a column by its depth (the longest path from a source repo)."""

from __future__ import annotations

from pfsfuse.console.markup import esc, url
from pfsfuse.scheduler.records import PipelineInfo
from pfsfuse.scheduler.spec import Input

W, H, GAP_X, GAP_Y, PAD = 220, 48, 70, 24, 16


def input_repos(inp: Input | None) -> list[str]:
    """The repos a pipeline's input reads (a cron input's own repo included)."""
    if inp is None:
        return []
    found: list[str] = []
    for atom in (inp.atom, inp.pfs):
        if atom is not None:
            found.append(atom.repo)
    if inp.cron is not None:
        found.append(inp.cron.repo or inp.cron.name)
    for sub in (inp.cross or []) + (inp.union or []):
        found.extend(input_repos(sub))
    return list(dict.fromkeys(found))


def svg(repos: list[str], pipelines: list[PipelineInfo], last_jobs: dict[str, str]) -> str:
    """Nodes: every repo; a pipeline's output repo shows the pipeline's state and last job."""
    by_name = {p.name: p for p in pipelines}
    nodes = list(dict.fromkeys([*repos, *by_name]))
    edges = [(src, p.name) for p in pipelines for src in input_repos(p.spec.input) if src in nodes]
    depth: dict[str, int] = {}

    def level(n: str, seen: frozenset[str] = frozenset()) -> int:
        if n not in depth:
            ups = [s for s, d in edges if d == n and s not in seen]
            depth[n] = 1 + max((level(s, seen | {n}) for s in ups), default=-1)
        return depth[n]

    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(level(n), []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    for col, names in sorted(columns.items()):
        for row, n in enumerate(sorted(names)):
            pos[n] = (PAD + col * (W + GAP_X), PAD + row * (H + GAP_Y))
    width = PAD * 2 + (max(columns, default=0) + 1) * (W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(v) for v in columns.values()), default=1) * (H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0L10,5L0,10z" class="arrowhead"/></marker></defs>'
    ]
    for src, dst in edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        sx, sy, ex, ey = x1 + W, y1 + H // 2, x2, y2 + H // 2
        mid = (sx + ex) // 2
        parts.append(f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n]
        p = by_name.get(n)
        if p is None:
            href, cls, sub = url("repos", n, "master", ""), "node repo", "repo"
        else:
            job = f" job-{esc(last_jobs[n])}" if n in last_jobs else ""
            href, cls = url("pipelines", n), f"node pipeline state-{esc(p.state)}{job}"
            sub = f"pipeline · {p.state}" + (f" · job {last_jobs[n]}" if n in last_jobs else "")
        parts.append(
            f'<a href="{esc(href)}" class="{cls}" data-node="{esc(n)}"><rect x="{x}" y="{y}" width="{W}" height="{H}" '
            f'rx="8"/><text x="{x + 12}" y="{y + 20}" class="name">{esc(n)}</text>'
            f'<text x="{x + 12}" y="{y + 38}" class="sub">{esc(sub)}</text></a>'
        )
    parts.append("</svg>")
    return "".join(parts)
